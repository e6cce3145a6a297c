"""The agent: one process per user that holds unlocked vaults' root keys and runs commands on them.

Single-threaded: a selector loop accepts connections, reads each request without blocking (a
slow or silent client holds only its own connection, closed after `REQUEST_TIMEOUT`), and forks
one process per command (`child.py`), which runs it with the client's descriptors as the CLI
would; so any number of commands run at once and none waits for another. Forking from a
single-threaded process is what lets that command fork the streaming engine's workers in turn.

Only the agent's own user is served: SO_PEERCRED is checked on every connection whatever the
socket's file modes. The socket's directory is 0700, the socket 0600. The process cannot be
dumped or ptraced by other users (PR_SET_DUMPABLE 0, no core files), each root key sits in a
locked page where mlock is allowed (else one warning), and is overwritten when forgotten.

A vault is forgotten when it has not been used for its idle time, when its hard limit has
passed (wall-clock time: a suspended machine does not stretch either), on `lock`, on `agent
stop`, and when a command finds that its slots changed or that the file at its path now holds
another vault. Each forgetting writes an `agent.lock` entry into that vault's audit log.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import sys
import time

from kms_cli.agent import protocol

REQUEST_TIMEOUT = 5.0  # seconds a client has to send its whole request
DEFAULT_IDLE = 300
DEFAULT_MAX = 3600


class Held:
    """One unlocked vault: where it is, its root key (a locked, zeroable buffer) and its timers."""

    __slots__ = ("vault_id", "path", "root", "slot_id", "fingerprint", "unlocked", "idle", "max_", "last_use",
                 "locked_memory")

    def __init__(self, vault_id: str, path: str, root: bytes, slot_id: int, fingerprint: bytes, idle: int,
                 max_: int, now: float):
        self.vault_id, self.path, self.slot_id, self.fingerprint = vault_id, path, slot_id, fingerprint
        self.root = bytearray(root)
        self.locked_memory = _mlock(self.root)
        self.unlocked = self.last_use = now
        self.idle, self.max_ = idle, max_

    def idle_expires(self) -> float:
        return min(self.last_use + self.idle, self.expires())

    def expires(self) -> float:
        return self.unlocked + self.max_

    def wipe(self) -> None:
        for i in range(len(self.root)):
            self.root[i] = 0
        if self.locked_memory:
            _munlock(self.root)

    def __repr__(self) -> str:
        return f"Held({self.path!r}, id={self.vault_id})"


def _buffer_address(buf: bytearray):
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buf)), len(buf)


def _mlock(buf: bytearray) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        addr, size = _buffer_address(buf)
        return libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(size)) == 0
    except (OSError, AttributeError, ValueError):
        return False


def _munlock(buf: bytearray) -> None:
    try:
        import ctypes

        addr, size = _buffer_address(buf)
        ctypes.CDLL(None).munlock(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    except (OSError, AttributeError, ValueError):
        pass


class _Conn:
    __slots__ = ("sock", "buf", "fds", "deadline", "uid", "pid")

    def __init__(self, sock, deadline: float, uid: int, pid: int):
        self.sock, self.buf, self.fds, self.deadline, self.uid, self.pid = sock, b"", [], deadline, uid, pid


class Agent:
    def __init__(self, path: str, idle: int = DEFAULT_IDLE, max_: int = DEFAULT_MAX, log=None):
        self.path = path
        self.idle, self.max_ = idle, max_
        self.log = log or sys.stderr
        self.held: dict[str, Held] = {}
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.children: dict[int, object] = {}  # pid -> events pipe (read end)
        self.counters = {"requests": 0, "hits": 0, "misses": 0, "refused": 0, "errors": 0}
        self.started = time.time()
        self.stopping = False
        self.listener = None
        self.bound = None  # (st_dev, st_ino) of the socket file this agent bound

    # -- life ------------------------------------------------------------------------------
    def listen(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if st.st_uid != os.getuid() or not os.path.isdir(directory) or os.path.islink(directory):
            raise OSError(f"{directory} is not a directory of this user")
        os.chmod(directory, 0o700)
        try:
            os.unlink(self.path)  # a stale socket: the caller checked that no agent answers
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self.bound = (st.st_dev, st.st_ino)
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, "accept")

    def preload(self) -> None:
        """Import what commands use, once: each command's process is forked from this one and
        would otherwise import the vault, the crypto layer and SQLite again for every request."""
        import importlib

        for name in ("sqlite3", "kms_cli.store.sqlite", "kms_cli.vault.core", "kms_cli.vault.rows",
                     "kms_cli.vault.secrets", "kms_cli.vault.keys", "kms_cli.vault.data", "kms_cli.vault.signing",
                     "kms_cli.vault.audit", "kms_cli.vault.slots", "kms_cli.vault.health", "kms_cli.cli.entry",
                     "kms_cli.cli.parse", "kms_cli.cli.context", "kms_cli.cli.secret", "kms_cli.cli.key",
                     "kms_cli.cli.data", "kms_cli.cli.process", "kms_cli.cli.sign", "kms_cli.cli.audit_cmds",
                     "kms_cli.cli.output", "kms_cli.config", "kms_cli.runner", "kms_cli.template",
                     "kms_cli.envformat", "kms_cli.dotenv", "kms_cli.fileio", "kms_cli.agent.child",
                     "kms_cli.crypto.chunked", "kms_cli.crypto.wrap", "kms_cli.providers.env", "json",
                     "kms_cli.vault.session", "kms_cli.hardening", "kms_cli.pending", "kms_cli.agent.client",
                     "cryptography.hazmat.primitives.hmac", "pwd", "resource", "kms_cli.vault.backup",
                     "kms_cli.cli.health_cmds", "kms_cli.cli.master", "kms_cli.cli.backup_cmds",
                     "kms_cli.cli.policy", "kms_cli.vault.policy", "kms_cli.cli.secret_rotate",
                     "kms_cli.cli.secret_edit", "kms_cli.editing", "kms_cli.cli.bulk_rewrap", "kms_cli.vault.bulk"):
            try:
                importlib.import_module(name)
            except ImportError as exc:  # an optional extra: its commands import it themselves
                self._log(f"could not preload {name}: {exc}")

    def serve_forever(self) -> None:
        import signal

        def stop(signo, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            while not self.stopping:
                self._tick()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for vault_id in list(self.held):
            self.forget(vault_id, "stop")
        if self.listener is not None:
            try:
                # fstat of a socket descriptor names its sockfs inode, never the bound file's:
                # compare with the file's identity recorded at bind time
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self.bound:
                    os.unlink(self.path)
            except OSError:
                pass
            self.listener.close()
            self.listener = None

    def _tick(self) -> None:
        now = time.time()
        wake = [now + 1.0]
        wake += [h.idle_expires() for h in self.held.values()]
        wake += [c.deadline for c in self.conns.values()]
        try:
            events = self.sel.select(max(0.0, min(wake) - now))
        except InterruptedError:
            events = []
        for key, _ in events:
            if key.data == "accept":
                self._accept()
            elif key.data == "child":
                self._child_event(key.fileobj)
            else:
                self._readable(key.fileobj)
        self._reap()
        now = time.time()
        for vault_id, h in list(self.held.items()):
            if now >= h.expires():
                self.forget(vault_id, "max")
            elif now >= h.idle_expires():
                self.forget(vault_id, "idle")
        for fd, c in list(self.conns.items()):
            if now >= c.deadline:
                self._drop(c)

    # -- connections ---------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
        except OSError:
            sock.close()
            return
        if uid != os.getuid():  # whatever the socket's modes: only this user is served
            self.counters["refused"] += 1
            self._answer(sock, protocol.encode(b"error", 4, f"the agent serves uid {os.getuid()} only"))
            sock.close()
            return
        sock.setblocking(False)
        c = _Conn(sock, time.time() + REQUEST_TIMEOUT, uid, pid)
        self.conns[sock.fileno()] = c
        self.sel.register(sock, selectors.EVENT_READ, "conn")

    def _readable(self, sock) -> None:
        c = self.conns.get(sock.fileno())
        if c is None:
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        c.fds += fds
        if not data:
            self._drop(c)
            return
        c.buf += data
        try:
            if len(c.buf) < 4:
                return
            size = protocol.frame_length(c.buf[:4])
            if len(c.buf) < 4 + size:
                return
            fields = protocol.decode(c.buf[4:4 + size])
            if len(fields) < 2 or fields[1] != protocol.VERSION:
                raise protocol.ProtocolError("this agent speaks another protocol version (restart it)")
        except protocol.ProtocolError as exc:
            self.counters["errors"] += 1
            self._finish(c, protocol.encode(b"error", 2, str(exc)))
            return
        self._request(c, fields[0], fields[2:])

    def _drop(self, c: _Conn) -> None:
        self.conns.pop(c.sock.fileno(), None)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        for fd in c.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        c.sock.close()

    def _answer(self, sock, frame: bytes) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)  # a client that does not read its answer is dropped, not waited for
            sock.sendall(frame)
        except OSError:
            pass

    def _finish(self, c: _Conn, frame: bytes) -> None:
        self._answer(c.sock, frame)
        self._drop(c)

    # -- requests ---------------------------------------------------------------------------------
    def _request(self, c: _Conn, kind: bytes, fields: list[bytes]) -> None:
        try:
            if kind == b"run":
                self._run(c, fields)
                return
            if kind == b"status":
                answer = self.status()
            elif kind == b"hold":
                answer = self._hold(fields)
            elif kind == b"lock":
                path = fields[0].decode("utf-8", "surrogateescape") if fields and fields[0] else None
                answer = {"forgotten": self.lock(path, c.pid)}
            elif kind == b"stop":
                answer = {"forgotten": self.lock(None, c.pid)}
                self.stopping = True
            else:
                raise protocol.ProtocolError(f"unknown request {kind[:32]!r}")
        except (protocol.ProtocolError, ValueError, IndexError) as exc:
            self.counters["errors"] += 1
            self._finish(c, protocol.encode(b"error", 2, f"bad request: {exc}"))
            return
        self._finish(c, protocol.encode(b"ok", json.dumps(answer)))

    def status(self) -> dict:
        from kms_cli import durations

        return {
            "socket": self.path, "pid": os.getpid(), "started": durations.rfc3339(self.started),
            "vaults": [{"vault": h.path, "id": h.vault_id, "unlocked": durations.rfc3339(h.unlocked),
                        "idle_expires": durations.rfc3339(h.idle_expires()), "expires": durations.rfc3339(h.expires())}
                       for h in self.held.values()],
            "counters": dict(self.counters),
        }

    def _hold(self, f: list[bytes]) -> dict:
        if len(f) != 7:
            raise protocol.ProtocolError("hold takes 7 fields")
        path, vault_id = f[0].decode("utf-8", "surrogateescape"), f[1].decode("ascii")
        root, slot_id = bytes(f[2]), int(f[3])
        idle = int(f[4]) if f[4] else self.idle
        max_ = int(f[5]) if f[5] else self.max_
        if len(root) != 32 or len(vault_id) != 32 or idle <= 0 or max_ <= 0:
            raise protocol.ProtocolError("hold: bad key, id or time")
        old = self.held.pop(vault_id, None)
        if old is not None:
            old.wipe()
        from kms_cli.locations import is_uri, same_vault

        for other_id, h in list(self.held.items()):  # one vault per path
            if same_vault(h.path, path):
                self.held.pop(other_id).wipe()
        if is_uri(path):
            self._preload_postgres()
        h = Held(vault_id, path, root, slot_id, bytes(f[6]), idle, max_, time.time())
        if not h.locked_memory:
            self._log("warning: could not lock the root key's memory page against swap (mlock); "
                      "raise RLIMIT_MEMLOCK to have it locked")
        self.held[vault_id] = h
        return {"vault": path, "id": vault_id, **self.status_of(h), "memory_locked": h.locked_memory}

    def status_of(self, h: Held) -> dict:
        from kms_cli import durations

        return {"idle_expires": durations.rfc3339(h.idle_expires()), "expires": durations.rfc3339(h.expires())}

    def _preload_postgres(self) -> None:
        """The first PostgreSQL vault held: import its driver once here, not in every command."""
        try:
            import kms_cli.store.postgres  # noqa: F401
        except ImportError as exc:
            self._log(f"could not preload the PostgreSQL engine: {exc}")

    def lock(self, path: str | None, pid: int | None) -> int:
        from kms_cli.locations import same_vault

        n = 0
        for vault_id, h in list(self.held.items()):
            if path is None or same_vault(h.path, path):
                self.forget(vault_id, "lock", pid)
                n += 1
        return n

    def forget(self, vault_id: str, reason: str, pid: int | None = None) -> None:
        """Forget a vault: an `agent.lock` entry in its log (from a forked process holding the key
        one last time), then the key overwritten."""
        h = self.held.pop(vault_id, None)
        if h is None:
            return
        if reason not in ("changed",):
            self._record_lock(h, reason, pid)
        h.wipe()

    def _record_lock(self, h: Held, reason: str, pid: int | None) -> None:
        child = os.fork()
        if child == 0:
            code = 1
            try:
                from kms_cli.agent import child as runner_child

                runner_child.record_lock(h, reason, pid)
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported in the agent's log, never raised here
                try:
                    self._log(f"could not write agent.lock for {h.path}: {exc}")
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        self.children[child] = None  # reaped by the loop: writing the entry never holds up other clients

    # -- running a command ----------------------------------------------------------------------
    def _run(self, c: _Conn, fields: list[bytes]) -> None:
        self.counters["requests"] += 1
        if c.fds:  # the descriptors come after `pid` (a hung agent then never holds the caller's pipes)
            self._finish(c, protocol.encode(b"error", 2, "a run request carries no descriptors"))
            return
        self.conns.pop(c.sock.fileno(), None)
        self.sel.unregister(c.sock)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the command's process
            os.close(r)
            code = 70
            try:
                self.sel.close()
                self.listener.close()
                for other in self.conns.values():
                    other.sock.close()
                from kms_cli.agent import child as runner_child

                code = runner_child.serve(c.sock, fields, c.pid, self.held, w)
            except BaseException:  # noqa: BLE001 - the child never returns into the agent's loop
                code = 70
            finally:
                os._exit(code)
        os.close(w)
        c.sock.close()
        events = os.fdopen(r, "rb", buffering=0)
        self.children[pid] = events
        self.sel.register(events, selectors.EVENT_READ, "child")

    def _child_event(self, events) -> None:
        data = events.read(4096)
        if not data:
            self.sel.unregister(events)
            events.close()
            return
        for line in data.decode("ascii", "replace").splitlines():
            what, _, vault_id = line.partition(" ")
            if what == "hit":
                self.counters["hits"] += 1
                h = self.held.get(vault_id)
                if h is not None:
                    h.last_use = time.time()
            elif what == "miss":
                self.counters["misses"] += 1
            elif what == "forget":
                self.forget(vault_id, "changed")
            elif what == "used":
                h = self.held.get(vault_id)
                if h is not None:
                    h.last_use = time.time()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            events = self.children.pop(pid, None)
            if events is not None and not events.closed:  # None: an agent.lock writer
                try:
                    self._child_event(events)  # what it wrote last
                    self.sel.unregister(events)
                except (KeyError, ValueError, OSError):
                    pass
                events.close()

    def _log(self, message: str) -> None:
        try:
            from kms_cli import durations

            self.log.write(f"{durations.rfc3339(time.time())} kms-cli agent: {message}\n")
            self.log.flush()
        except (OSError, ValueError):
            pass


def answering(path: str) -> bool:
    """Whether an agent answers at `path` (a status round trip)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        s.sendall(protocol.encode(b"status", protocol.VERSION))
        return protocol.recv_frame(s)[0] == b"ok"
    except (OSError, protocol.ProtocolError):
        return False
    finally:
        s.close()
