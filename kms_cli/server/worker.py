"""The vault worker: one thread owns the unlocked vault and runs every request's handler (group commit).

The event loop never touches the vault. It hands each request to this thread as a `Job` (the
route, the parsed `Request`, the presented token) through a queue and awaits the job's future.
The thread takes every job waiting (up to MAX_BATCH), opens ONE write transaction, and runs each
job in a savepoint of its own (`store.savepoint()`): authenticate the token against the vault
(every request, in the batch's transaction: a revocation committed before it takes effect; a
token's row is read once per batch, since nothing changes it inside that transaction, and its
expiry checked for each request), set the audit actor to the token's
name and the client address, run the handler (which calls the vault layer; its `operation`s join
the batch's transaction and append their audit entries to it). Then it commits once (one fsync
for the whole batch) and only then resolves the jobs' futures, in one hop to the loop: each
response leaves only after its audit entry is durable. A commit that fails fails every job of the
batch with 503 (fail-closed: no answer whose entry is not on disk).

A job that fails is undone alone: its savepoint is rolled back (the rows it wrote and the entries
appended with them), then the entries a command would still have committed after such a failure
(the vault layer's denied/error entries: `vault.operation` records a refusal after rolling back)
are appended again, and a refusal by the HTTP layer itself (no or bad token, an operation or a
name the token does not allow) gets its own `http.denied` entry. The token is never in an entry.

Batching needs no timer: while a batch commits (an fsync, ~1-5 ms), the requests that arrive
queue up and form the next batch, so the batch grows with the load and a lone request waits for
nobody.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time

from kms_cli import durations
from kms_cli.errors import (AlreadyExistsError, IntegrityError, KmsError, NotFoundError, StateError,
                            UnavailableError, UsageError)
from kms_cli.server.api import ApiError, Forbidden

MAX_BATCH = 64          # jobs in one transaction at most
TOUCH_EVERY = 60.0      # seconds between two updates of a token's `last_used`
DENIED = {"errors": ["permission denied"]}
UNAVAILABLE = {"errors": ["the vault is unavailable; the request was not performed"]}
_STOP = object()


class Job:
    """One request on its way through the worker: `result` is (status, payload, headers)."""

    __slots__ = ("route", "req", "presented", "future", "result", "token_name", "auth_denied")

    def __init__(self, route, req, presented: str | None, future):
        self.route, self.req, self.presented, self.future = route, req, presented, future
        self.result = None
        self.token_name: str | None = None  # the authenticated token's name (rate limits per name)
        self.auth_denied = False             # refused before the handler (no, unknown, revoked, expired token)


class Raw:
    """What a handler returns for a body that is not JSON (Prometheus' text format): sent as is."""

    __slots__ = ("body", "content_type")

    def __init__(self, body: bytes, content_type: str):
        self.body, self.content_type = body, content_type


def _outcome(req, payload) -> tuple:
    """A handler's return value as (status, payload, headers): a dict or a Raw is 200 (or the status
    the handler set in `req.extra["status"]`: a batch with failed items, a deleted KV version), None
    204, and (status, dict-or-Raw) that status (sys/health: 503 with its body when the vault is failing)."""
    if payload is None:
        return 204, None, ()
    if type(payload) is tuple:
        return payload[0], payload[1], ()
    status = req.extra.get("status") if req.extra else None
    return (status if isinstance(status, int) and 200 <= status < 600 else 200), payload, ()


class _AuthDenied(Exception):
    def __init__(self, why: str, name: str | None):
        super().__init__(why)
        self.why, self.name = why, name


def error_response(exc: BaseException) -> tuple[int, dict]:
    """A handler's exception as Vault's status and `{"errors": [...]}` (one line, never a secret)."""
    if isinstance(exc, Forbidden):
        return 403, DENIED
    if isinstance(exc, ApiError):
        return exc.status, {"errors": [exc.message]}
    if isinstance(exc, KmsError):
        if isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, (UsageError, IntegrityError, StateError, AlreadyExistsError)):
            status = 400
        elif isinstance(exc, UnavailableError):
            return 503, UNAVAILABLE
        else:
            return 500, {"errors": ["internal error"]}  # the message may name server-side things
        return status, {"errors": [exc.message.splitlines()[0] if exc.message else "error"]}
    return 500, {"errors": ["internal error"]}


class Worker:
    def __init__(self, vault, loop, log=None):
        self.vault = vault
        self.loop = loop
        self.log = log or sys.stderr
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="kms-cli-vault-worker", daemon=True)
        self._key: bytes | None = None
        self._touched: dict[str, float] = {}
        self._entries: list | None = None  # the entries the current job appended (see _record_appends)
        self._appended = 0  # entries appended in the current batch
        self._batch_tokens: dict = {}  # presented token -> its row, authenticated in the current batch
        self.pid = os.getpid()
        # counters for /v1/sys/metrics (read by the metrics handler in this same thread)
        self.stats = {"batches": 0, "jobs": 0, "commit_failures": 0, "max_batch": 0}
        self.last_commit_error: tuple[float, str] | None = None  # when and why the last commit failed
        self.last_commit_ok = 0.0  # when the last batch committed (time.time())
        self._record_appends()

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the jobs queued so far, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join(timeout)

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        stopping = False
        while not stopping:
            job = get()
            if job is _STOP:
                break
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    job = get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - never let the thread die with jobs waiting
                self._fail_all(batch, exc)
            self.loop.call_soon_threadsafe(_resolve, batch)

    def _run_batch(self, batch: list[Job]) -> None:
        store = self.vault.store
        self._appended = 0
        try:
            with store.write():
                for job in batch:
                    self._run_job(job)
                self._touch_tokens(batch)
        except BaseException as exc:  # noqa: BLE001 - BEGIN or COMMIT failed: nothing of the batch is durable
            self._fail_all(batch, exc)
            return
        finally:
            self._batch_tokens.clear()
        if self._appended:  # a batch that wrote nothing proves nothing about the disk
            self.last_commit_ok = time.time()
        self.stats["batches"] += 1
        self.stats["jobs"] += len(batch)
        if len(batch) > self.stats["max_batch"]:
            self.stats["max_batch"] = len(batch)

    def _fail_all(self, batch: list[Job], exc: BaseException) -> None:
        self.stats["commit_failures"] += 1
        why = exc.message if isinstance(exc, KmsError) else type(exc).__name__
        self.last_commit_error = (time.time(), why)
        self._say(f"a batch of {len(batch)} request(s) failed to commit its audit entries: {why}")
        for job in batch:
            job.result = (503, UNAVAILABLE, ())

    def _run_job(self, job: Job) -> None:
        vault, req, route = self.vault, job.req, job.route
        req.vault = vault
        self._entries = entries = []
        host = req.client.rsplit(":", 1)[0] if req.client else None
        vault.audit.actor = {"user": "anonymous", "host": host, "pid": self.pid, "ci": None}
        try:
            with vault.store.savepoint():
                token = None
                if route.needs_token or job.presented:
                    token = self._authenticate(job)
                req.token = token
                if token is not None:
                    job.token_name = token.name
                    vault.audit.actor = {"user": "token:" + token.name, "host": host, "pid": self.pid, "ci": None}
                payload = route.handler(req)
            job.result = _outcome(req, payload)
        except _AuthDenied as exc:
            job.auth_denied = True
            if exc.name:
                vault.audit.actor = {"user": "token:" + exc.name, "host": host, "pid": self.pid, "ci": None}
            self._denied(req, None, exc.why)
            job.result = (403, DENIED, ())
        except Forbidden as exc:
            op, _, name = exc.why.partition(" on ")
            self._replay(entries)
            self._denied(req, None if name in ("", "-") else name, exc.why, op)
            job.result = (403, DENIED, ())
        except UnavailableError:
            raise  # the store failed (a full disk, a lost server): the whole batch fails, 503 for each
        except (ApiError, KmsError) as exc:
            self._replay(entries)
            job.result = (*error_response(exc), ())
        except Exception as exc:  # noqa: BLE001 - a bug in a handler: a 500, one line on stderr, no traceback
            self._say(f"internal error in {_label(route)}: {type(exc).__name__}")
            self._replay(entries)
            job.result = (500, {"errors": ["internal error"]}, ())
        finally:
            self._entries = None
            req.vault = None

    def _authenticate(self, job: Job):
        from kms_cli.vault import tokens

        vault = self.vault
        presented = job.presented
        known = self._batch_tokens.get(presented) if presented else None
        if known is not None and tokens.state_of(known, durations.now()) == "active":
            return known  # read in this same transaction by an earlier job of the batch: nothing changed it
        if self._key is None:
            self._key = tokens.token_key(vault)  # None until a token was ever created
        try:
            t = tokens.authenticate(vault, presented, self._key)
            self._batch_tokens[presented] = t
            return t
        except tokens.Denied as exc:
            if not job.route.needs_token:
                return None  # sys/health: a bad token is no token
            raise _AuthDenied(exc.why, exc.token_name) from None

    def _denied(self, req, target: str | None, why: str, op: str | None = None) -> None:
        """The `http.denied` entry of a request refused before or by its handler's policy check."""
        detail = {"method": req.method, "path": req.path[:256], "why": why}
        if op:
            detail["op"] = op
        self.vault.audit.append("http.denied", target, None, "denied", "forbidden", extra=detail)

    def _replay(self, entries: list) -> None:
        """After a failed job's savepoint was rolled back: append again the denied/error entries the
        vault layer recorded for it (what a command commits after such a failure)."""
        self._entries = None  # what is appended now is not the job's to replay
        for args in entries:
            if args[3] != "ok":
                self.vault.audit.append(*args)

    def _record_appends(self) -> None:
        """Note each entry appended while a job runs (op, target, version, result, error, extra)."""
        audit = self.vault.audit
        append = audit.append
        worker = self

        def recording_append(op, target=None, version=None, result="ok", error=None, extra=None):
            entry = append(op, target, version, result, error, extra)
            worker._appended += 1
            if worker._entries is not None:
                worker._entries.append((op, target, version, result, error, extra))
            return entry

        audit.append = recording_append

    def _touch_tokens(self, batch: list[Job]) -> None:
        """`last_used` of the tokens this batch used (at most once a minute each: informational)."""
        now = time.time()
        for job in batch:
            name = job.token_name
            if name is not None and now - self._touched.get(name, 0.0) >= TOUCH_EVERY:
                self._touched[name] = now
                try:
                    with self.vault.store.savepoint():
                        self.vault.store.touch_token(name, now)
                except KmsError:
                    pass

    def _say(self, message: str) -> None:
        say(self.log, message)


def say(log, message: str) -> None:
    """One line on the server's log (stderr): never fails the request that says it."""
    try:
        log.write(f"kms-cli: serve: {message}\n")
        log.flush()
    except (OSError, ValueError):
        pass


def _label(route) -> str:
    h = route.handler
    return f"{getattr(h, '__module__', '?').rsplit('.', 1)[-1]}.{getattr(h, '__name__', '?')}"


def _resolve(batch: list[Job]) -> None:
    """In the event loop: hand each job's result to its waiting request."""
    for job in batch:
        fut = job.future
        if not fut.done():
            fut.set_result(job)
