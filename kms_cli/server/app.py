"""The ASGI application: routing, tokens, rate limits, body limits, Vault's JSON errors, metrics.

Why a bare ASGI callable on uvicorn (httptools parser, uvloop loop) rather than Starlette or FastAPI:
measured on this 2-core machine with wrk (TLS, keep-alive, 16 connections, a POST of a decrypt-sized
JSON body answered by an echo handler, server and load generator sharing the cores), uvicorn with a
bare callable answered ~13,200 requests/s (p99 5.8 ms) and the same on Starlette ~8,600/s (p99
10.6 ms): Starlette's Request/Response objects and router cost ~40 us a request, for nothing this
API needs: it has ~25 routes over regexes that the handlers export, JSON in and out, and no
middleware, templates or websockets. So the whole HTTP layer is this file (~75 us a request with
uvicorn and TLS), leaving the budget to the vault (authenticate, the operation, its audit entry, a
share of the group commit's fsync). uvicorn is maintained, speaks HTTP/1.1 keep-alive and TLS through
the stdlib `ssl` module (so TLS 1.3 only, and the SIGHUP reload, are plain SSLContext calls).

Per request, in the event loop: route (method and path; PUT is POST, LIST or GET ?list=true is
LIST), read the body under a size limit and a time limit (413, 408), parse JSON (400), take a token
from the client's rate bucket (429 with Retry-After), then hand the job to the vault worker
(worker.py), which authenticates the token, runs the handler and commits its audit entry; the
answer is sent when the worker resolves the job. Every answer is JSON with `Cache-Control: no-store`.
Nothing here touches the vault.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from bisect import bisect_left
from urllib.parse import parse_qsl

from kms_cli.server.api import Request
from kms_cli.server.worker import Job, Raw, _label, say

MAX_BODY = 1 << 20          # bytes (--max-body)
BODY_TIMEOUT = 10.0         # seconds a client has to send its whole body (408 after)
DEFAULT_RATE = 100.0        # requests per second per token (--rate-limit)
MAX_BUCKETS = 50_000        # rate buckets kept (least recently used dropped first)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_CLOSE = (b"connection", b"close")
_GROUP = re.compile(r"\(\?P<\w+>(?:[^()]|\([^()]*\))*\)")


class Settings:
    """What `serve` was told: limits and rates (plain values; parsed by the cli layer)."""

    __slots__ = ("max_body", "rate", "token_rates", "body_timeout")

    def __init__(self, max_body: int = MAX_BODY, rate: float = DEFAULT_RATE, token_rates: dict | None = None,
                 body_timeout: float = BODY_TIMEOUT):
        self.max_body, self.rate, self.token_rates, self.body_timeout = max_body, rate, token_rates or {}, body_timeout


class Limiter:
    """Token buckets: `rate` requests a second, bursts of up to one second's worth (at least 1)."""

    __slots__ = ("buckets",)

    def __init__(self):
        self.buckets: dict = {}  # key -> [tokens, last refill (monotonic)]

    def take(self, key, rate: float, now: float) -> float:
        """0.0 when a request may go now, else the seconds until it may."""
        if rate <= 0:
            return 0.0
        burst = max(1.0, rate)
        b = self.buckets.pop(key, None)  # re-inserted at the end: the dict's order is least recently used first
        if b is None:
            if len(self.buckets) >= MAX_BUCKETS:
                for old in list(self.buckets)[: MAX_BUCKETS // 10]:
                    del self.buckets[old]
            b = [burst, now]
        else:
            b[0] = min(burst, b[0] + (now - b[1]) * rate)
            b[1] = now
        self.buckets[key] = b
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        return (1.0 - b[0]) / rate

    def empty(self, key, rate: float, now: float) -> bool:
        """Whether `key`'s bucket has no whole token now (without taking one)."""
        b = self.buckets.get(key)
        return b is not None and rate > 0 and min(max(1.0, rate), b[0] + (now - b[1]) * rate) < 1.0


class Metrics:
    """Request counters by endpoint and status, latency histograms by endpoint (for sys/metrics)."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list] = {}  # endpoint -> [bucket counts..., sum, count]
        self.started = time.time()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get(endpoint)
        if h is None:
            h = self.latency[endpoint] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0, 0]
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-2] += seconds
        h[-1] += 1


class _Compiled:
    __slots__ = ("route", "prefix", "match", "methods", "label")

    def __init__(self, route):
        self.route = route
        pattern = route.pattern.pattern
        # the literal text before the first special character: a cheap test before the regex
        m = re.match(r"[\w/.-]*", pattern.lstrip("^"))
        self.prefix = m.group(0) if m else ""
        self.match = route.pattern.fullmatch
        methods = set(route.methods)
        if "POST" in methods or "PUT" in methods:  # writes: the bao CLI sends PUT, hvac POST
            methods |= {"POST", "PUT"}
        self.methods = frozenset(methods)
        self.label = _label(route)


def _specificity(route) -> int:
    """More literal text first: `keys/(?P<name>.+)/rotate` before `keys/(?P<name>.+)`."""
    return len(_GROUP.sub("", route.pattern.pattern))


class App:
    """The ASGI callable (uvicorn runs it with lifespan off)."""

    def __init__(self, routes, worker, settings: Settings | None = None, metrics: Metrics | None = None,
                 log=None):
        self.routes = [_Compiled(r) for r in sorted(routes, key=_specificity, reverse=True)]
        self.worker = worker
        self.settings = settings or Settings()
        self.metrics = metrics or Metrics()
        self.limiter = Limiter()
        self.denials = Limiter()        # per client address: denied requests (no flood of the audit log)
        self.known: dict[int, str] = {}  # hash(presented token) -> its name, learnt from the worker
        self.log = log or sys.stderr

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        label, status = "unknown", 500
        try:
            label, status, payload, headers = await self._handle(scope, receive)
            if status == 0:  # the client went away before its request was complete: nothing to answer
                return
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client or on stderr
            self._say(f"internal error in {label}: {type(exc).__name__}")
            status, payload, headers = 500, {"errors": ["internal error"]}, (_CLOSE,)
        if payload is None:  # 204: no body, so no Content-Length or Content-Type either
            body, hdrs = b"", [_NO_STORE, *headers]
        else:
            if type(payload) is Raw:
                body, kind = payload.body, (b"content-type", payload.content_type.encode())
            else:
                body, kind = json.dumps(payload, separators=(",", ":")).encode(), _JSON
            hdrs = [kind, (b"content-length", str(len(body)).encode()), _NO_STORE, *headers]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(label, status, time.perf_counter() - t0)

    async def _handle(self, scope, receive):
        method = scope["method"]
        path = scope["path"]
        qs = scope["query_string"]
        query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {}
        if method == "GET" and query.get("list") == "true":
            method = "LIST"
        elif method == "HEAD":
            method = "GET"  # sys/health answers HEAD as GET (no body is sent: uvicorn drops it)

        found, match, allowed = None, None, False
        for c in self.routes:
            if path.startswith(c.prefix):
                m = c.match(path)
                if m is not None:
                    if method in c.methods:
                        found, match = c, m
                        break
                    allowed = True
        if found is None:
            if allowed:
                return "unsupported", 405, {"errors": ["unsupported operation"]}, ()
            shown = path[4:] if path.startswith("/v1/") else path
            return "unknown", 404, {"errors": [f'no handler for route "{shown[:200]}". route entry not found.']}, ()
        label = found.label

        presented = None
        length = None
        for k, v in scope["headers"]:
            if k == b"x-vault-token":
                presented = v.decode("latin-1").strip() or None
            elif k == b"authorization" and presented is None:
                scheme, _, rest = v.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer":
                    presented = rest.strip() or None
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return label, 400, {"errors": ["invalid Content-Length"]}, (_CLOSE,)

        settings = self.settings
        if length is not None and length > settings.max_body:
            return label, 413, {"errors": [f"request body larger than {settings.max_body} bytes"]}, (_CLOSE,)

        # rate limits, before the body is read: per token (its name's rate once known), or per client
        client = scope.get("client")
        host = client[0] if client else "-"
        now = time.monotonic()
        if presented is not None:
            key = hash(presented)
            name = self.known.get(key)
            rate = settings.token_rates.get(name, settings.rate) if name is not None else settings.rate
            suspect = name is None  # not (yet) seen to authenticate
        else:
            key, rate = ("client", host), settings.rate
            suspect = found.route.needs_token  # will be refused
        # a client whose requests keep being refused (each one audited) waits before more are tried
        if suspect and self.denials.empty(host, settings.rate, now):
            return label, 429, {"errors": ["rate limit exceeded"]}, _retry_after(1.0 / max(settings.rate, 1.0))
        wait = self.limiter.take(key, rate, now)
        if wait:
            return label, 429, {"errors": ["rate limit exceeded"]}, _retry_after(wait)

        body = None
        if length or _chunked(scope):
            raw = await self._read_body(receive, settings)
            if isinstance(raw, tuple):
                return (label, *raw)
            if raw:
                try:
                    body = json.loads(raw)
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                    why = (exc.msg if isinstance(exc, json.JSONDecodeError) else
                           "nested too deeply" if isinstance(exc, RecursionError) else "invalid UTF-8")
                    return label, 400, {"errors": [f"failed to parse JSON input: {why}"]}, ()
                if body is None:  # `null`: what `bao write -f PATH` sends (no data), as Vault reads it
                    body = None
                elif not isinstance(body, dict):
                    return label, 400, {"errors": ["failed to parse JSON input: expected a JSON object"]}, ()

        req = Request(method, path, match.groupdict(), query, body,
                      f"{host}:{client[1]}" if client else "-")
        loop = asyncio.get_running_loop()
        job = Job(found.route, req, presented, loop.create_future())
        self.worker.submit(job)
        await job.future
        status, payload, headers = job.result
        if presented is not None:
            if job.token_name is not None:
                self.known[key] = job.token_name
                if len(self.known) > MAX_BUCKETS:
                    self.known.clear()
            elif job.auth_denied:
                self.known.pop(key, None)
        if status == 403:
            self.denials.take(host, settings.rate, now)
        return label, status, payload, headers

    async def _read_body(self, receive, settings: Settings):
        """The body (bytes), or (status, payload, headers) to answer instead: 413 past the limit,
        408 when it takes longer than the body timeout; (0, None, ()) when the client left."""
        chunks, size = [], 0
        try:
            async with _deadline(settings.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 0, None, ()
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > settings.max_body:
                            return 413, {"errors": [f"request body larger than {settings.max_body} bytes"]}, (_CLOSE,)
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except (asyncio.TimeoutError, TimeoutError):
            return 408, {"errors": ["timed out reading the request body"]}, (_CLOSE,)
        return b"".join(chunks)

    def _say(self, message: str) -> None:
        say(self.log, message)


def _chunked(scope) -> bool:
    for k, v in scope["headers"]:
        if k == b"transfer-encoding":
            return True
    return False


def _retry_after(wait: float) -> tuple:
    return ((b"retry-after", str(max(1, math.ceil(wait))).encode()),)


if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10: one task-cancelling timer
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def _deadline(seconds: float):
        task = asyncio.current_task()
        fired = []
        handle = asyncio.get_running_loop().call_later(seconds, lambda: (fired.append(1), task.cancel()))
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise asyncio.TimeoutError() from None
            raise
        finally:
            handle.cancel()
