"""`kms-cli serve`: listen, hold the unlocked vault, serve until SIGTERM/SIGINT.

The order of start-up: check the address (plain HTTP only on loopback) and load the TLS pair
(before the vault is unlocked: a mistake costs no unlock), bind the socket (an address in use is
exit 7 now, not after the unlock), then the caller unlocks the vault and `serve` holds it for the
server's life. The held keys' pages are locked against swap where RLIMIT_MEMLOCK allows (the
process is already non-dumpable: `hardening.no_core_dumps`, run before any vault is opened).

TLS: one `ssl.SSLContext`, TLS 1.3 only (`minimum_version`): an older client's handshake fails.
SIGHUP loads the certificate and key files again into that same context after checking the pair
in a scratch one (a bad pair keeps the old one, said on stderr); new handshakes use the new pair,
open connections keep theirs.

uvicorn runs the app with its httptools protocol, subclassed to bound what uvicorn leaves open: a
connection must send a request's whole head within HEADER_TIMEOUT (from its first byte, or from
the connection for the first request) and at most MAX_HEAD bytes of it; idle keep-alive
connections close after KEEP_ALIVE seconds; at most MAX_CONNECTIONS connections or requests at
once (then 503); the body is bounded in the app (--max-body, 408 after BODY_TIMEOUT).

SIGTERM or SIGINT: stop accepting, let the requests in flight finish (their audit entries
committed) for up to GRACE seconds, stop the worker, exit 0. uvicorn's own handlers would re-raise
the signal after the shutdown (death by signal, not exit 0): ours replace them.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading

from kms_cli.errors import KmsError, UnavailableError, UsageError

HEADER_TIMEOUT = 10.0    # seconds for a request's line and headers
MAX_HEAD = 64 * 1024     # bytes of a request's line and headers
KEEP_ALIVE = 5           # seconds an idle keep-alive connection stays open
MAX_CONNECTIONS = 1000   # connections or requests in progress at once (uvicorn's limit_concurrency)
BACKLOG = 2048
GRACE = 30               # seconds in-flight requests get after SIGTERM
_INSTALL_HINT = "install the serve extra: pip install 'kms-cli[serve]'"
OPENSSL_HINT = ("make a self-signed pair for a test: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                "-nodes -keyout key.pem -out cert.pem -days 365 -subj /CN=localhost "
                "-addext subjectAltName=DNS:localhost,IP:127.0.0.1")


class Listener:
    """A bound, listening socket and how it is served (TLS context or plain)."""

    def __init__(self, sock: socket.socket, host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                 cert: str | None, key: str | None):
        self.sock, self.host, self.port, self.ssl_ctx, self.cert, self.key = sock, host, port, ssl_ctx, cert, key

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_ctx else 'http'}://{host}:{self.port}"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- before the unlock ---------------------------------------------------------------------------

def _resolve(host: str) -> list[str]:
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve the address {host!r} to listen on ({exc.strerror or exc})") from None
    return list(dict.fromkeys(i[4][0] for i in infos))


def listener(host: str, port: int, tls_cert: str | None, tls_key: str | None, no_tls: bool) -> Listener:
    """Check the address and the TLS options, load the pair, bind: a Listener (exit 2 or 7 otherwise)."""
    addresses = _resolve(host)
    if no_tls:
        if tls_cert or tls_key:
            raise UsageError("--no-tls excludes --tls-cert and --tls-key")
        if not all(ipaddress.ip_address(a).is_loopback for a in addresses):
            raise UsageError(f"--no-tls serves plain HTTP, only on a loopback address (not {host})",
                             hint="listen on 127.0.0.1 or ::1, or give --tls-cert and --tls-key")
        ctx = None
    else:
        if not tls_cert or not tls_key:
            raise UsageError("serve needs --tls-cert FILE and --tls-key FILE (or --no-tls on a loopback address)",
                             hint=OPENSSL_HINT)
        ctx = tls_context(tls_cert, tls_key)
    sock = bind(addresses[0], port)
    return Listener(sock, addresses[0], sock.getsockname()[1], ctx, tls_cert, tls_key)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context, TLS 1.3 only, with the pair loaded (UsageError naming what is wrong)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    load_pair(ctx, cert, key)
    return ctx


def load_pair(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    for what, path in (("certificate", cert), ("key", key)):
        if not os.path.isfile(path):
            raise UsageError(f"no TLS {what} file at {path}", hint=OPENSSL_HINT)
        if not os.access(path, os.R_OK):
            raise UsageError(f"the TLS {what} file {path} is not readable")
    asked = []

    def no_password():
        asked.append(True)
        return b""

    try:
        ctx.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        if asked:
            raise UsageError(f"the TLS key {key} is encrypted",
                             hint="give an unencrypted key readable only by this user "
                                  "(openssl pkey -in KEY -out plain.pem)") from None
        reason = exc.reason or exc.strerror or "not a PEM certificate and its key"
        raise UsageError(f"cannot use the TLS certificate {cert} with the key {key}: {reason}") from None
    except OSError as exc:
        raise UsageError(f"cannot read the TLS certificate {cert} or key {key}: {exc.strerror or exc}") from None


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"{address}:{port}" if family == socket.AF_INET else f"[{address}]:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise UnavailableError(f"cannot listen on {where}: the address is in use",
                                   hint="stop what listens there or choose another port with --listen") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"cannot listen on {where}: permission denied",
                             hint="ports under 1024 need privileges: use a higher one (Vault's is 8200)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"cannot listen on {where}: not an address of this machine") from None
        raise UnavailableError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


# -- serving -------------------------------------------------------------------------------------

def routes() -> list:
    """Every module's ROUTES: transit, kv, sys."""
    import importlib

    out = []
    for name in ("transit", "kv", "sys"):
        full = f"kms_cli.server.{name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:  # not written yet
                continue
            raise
        found = getattr(mod, "ROUTES", None)
        if found is None and callable(getattr(mod, "routes", None)):
            found = mod.routes()
        out.extend(found or ())
    return out


def serve(vault, lst: Listener, settings, *, render_health=None, say=None, warn=None) -> int:
    """Serve `vault` (unlocked, held until the end) on `lst` until SIGTERM/SIGINT; 0 when stopped so."""
    try:
        import httptools  # noqa: F401
        import uvicorn
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        raise KmsError("serve needs uvicorn and httptools", hint=_INSTALL_HINT) from None
    from kms_cli.server import sys as sys_routes
    from kms_cli.server.app import App, Metrics
    from kms_cli.server.worker import Worker

    say = say or (lambda m: print(f"kms-cli: {m}", file=sys.stderr))
    warn = warn or (lambda m: print(f"kms-cli: warning: {m}", file=sys.stderr))
    _quiet_logs()
    vault.options.source.prompt = None  # never a prompt mid-service (a re-unlock after `master rotate`)
    if not lock_keys(vault):
        warn("could not lock the held keys' memory against swap (mlock); raise RLIMIT_MEMLOCK to have it locked")

    metrics = Metrics()
    worker = Worker(vault, None)
    state = sys_routes.State(vault, worker, metrics, render_health)
    state.first_report()
    sys_routes.STATE = state
    app = App(routes(), worker, settings, metrics)

    class Protocol(HttpToolsProtocol):
        """httptools' protocol with a deadline and a size limit on every request's head."""

        def connection_made(self, transport) -> None:
            self._head_timer = None
            self._head_bytes = 0
            self._list = False
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_late)

        def shutdown(self) -> None:
            """SIGTERM: an idle keep-alive connection is dropped at once (abort). Closing it over TLS
            sends close_notify and waits up to 30 s for the client's, which a pooled client (hvac,
            requests, any Vault SDK) never sends while idle: the server would exit only after that."""
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()
            else:
                self.cycle.keep_alive = False

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:  # a new request's head begins here
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_late)
                if data[:5] == b"LIST ":
                    # Vault's LIST method (hvac sends it): llhttp knows no such method and would refuse
                    # the request, so it is read as GET with ?list=true, which the app takes for LIST
                    # (as Vault does). A LIST split across reads, or pipelined, is still refused.
                    data = b"GET " + data[5:]
                    self._list = True
            super().data_received(data)

        def on_message_begin(self) -> None:
            self._head_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            if self._head_bytes > MAX_HEAD:
                raise ValueError("request head too large")  # httptools: a parser error, 400 and close
            super().on_url(url)

        def on_headers_complete(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._list:
                self._list = False
                self.url += b"&list=true" if b"?" in self.url else b"?list=true"
            super().on_headers_complete()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            if self._head_bytes > MAX_HEAD:
                raise ValueError("request head too large")
            super().on_header(name, value)

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(app, http=Protocol, loop=loop, lifespan="off", log_config=None, access_log=False,
                            server_header=False, proxy_headers=False, timeout_keep_alive=KEEP_ALIVE,
                            limit_concurrency=_connection_limit(), backlog=BACKLOG, timeout_graceful_shutdown=GRACE)
    config.load()
    config.ssl = lst.ssl_ctx

    class Server(uvicorn.Server):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.loop = None

        @contextlib.contextmanager
        def capture_signals(self):
            # ours, not uvicorn's: theirs re-raise SIGTERM after the shutdown (not exit 0), and SIGHUP reloads
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            previous = {s: signal.signal(s, self._signal) for s in handled}
            try:
                yield
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)

        def _signal(self, signo, frame) -> None:
            if signo == signal.SIGHUP:
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._reload)
                return
            if self.should_exit and signo == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

        def _reload(self) -> None:
            if lst.ssl_ctx is None:
                say("SIGHUP: plain HTTP, no certificate to reload")
                return
            try:
                tls_context(lst.cert, lst.key)  # the new pair must load whole before the live context takes it
                load_pair(lst.ssl_ctx, lst.cert, lst.key)
            except KmsError as exc:
                warn(f"SIGHUP: kept the previous TLS certificate: {exc.message}")
                return
            say(f"reloaded the TLS certificate {lst.cert} and key {lst.key}: new connections use them")

        async def startup(self, sockets=None) -> None:
            import asyncio

            self.loop = asyncio.get_running_loop()
            self.loop.set_exception_handler(_loop_exception)
            worker.loop = self.loop
            worker.start()
            await super().startup(sockets=sockets)
            if self.started:
                tls = "TLS 1.3 only" if lst.ssl_ctx else "plain HTTP, loopback only"
                say(f"serving {lst.url} ({tls}; pid {os.getpid()}): SIGHUP reloads the certificate, "
                    "SIGTERM stops")

        async def shutdown(self, sockets=None) -> None:
            await super().shutdown(sockets=sockets)
            worker.stop()

    server = Server(config)
    try:
        server.run(sockets=[lst.sock])
    finally:
        if worker.thread.is_alive():
            worker.stop()
        state.close()
        sys_routes.STATE = None
        lst.close()
    if not server.started:
        raise UnavailableError(f"could not serve on {lst.url}")
    say("stopped: every request in flight was answered")
    return 0


def _connection_limit() -> int:
    """MAX_CONNECTIONS, within the descriptors this process may open (the soft limit raised to the
    hard one where it is lower): past it a new request is 503, not an accept() failing for everyone."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = MAX_CONNECTIONS + 64
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft - 64))
    except (ImportError, ValueError, OSError):
        return MAX_CONNECTIONS


# -- memory, logs ------------------------------------------------------------------------------

def lock_keys(vault) -> bool:
    """mlock the pages holding the root key and its subkeys (as the agent locks its held keys)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return False
    ok = True
    sub = vault.subkeys
    for b in (vault._root, sub.material, sub.secret, sub.audit, sub.slot, sub.row):
        try:
            if libc.mlock(ctypes.c_void_p(id(b)), ctypes.c_size_t(sys.getsizeof(b))) != 0:
                ok = False
        except (OSError, AttributeError, ValueError):
            ok = False
    return ok


class _OneLine(logging.Formatter):
    """A log record as one line on stderr: never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            message = str(record.msg)
        return "kms-cli: serve: " + message.splitlines()[0] if message else "kms-cli: serve: (no message)"


def _quiet_logs() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    for name, level in (("uvicorn", logging.WARNING), ("uvicorn.error", logging.WARNING),
                        ("uvicorn.access", logging.CRITICAL + 1), ("asyncio", logging.CRITICAL)):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


def _loop_exception(loop, context) -> None:
    """The event loop's unhandled errors (a connection reset mid-handshake...): one line, or nothing."""
    exc = context.get("exception")
    if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
        return
    message = context.get("message") or "error"
    try:
        sys.stderr.write(f"kms-cli: serve: {message.splitlines()[0]}"
                         + (f" ({type(exc).__name__})" if exc is not None else "") + "\n")
    except (OSError, ValueError):
        pass
