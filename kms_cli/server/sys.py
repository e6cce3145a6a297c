"""/v1/sys/health and /v1/sys/metrics (spec section 10).

`GET /v1/sys/health` needs no token: 200 when the vault is healthy or degraded, 503 when failing,
with Vault's usual fields (initialized, sealed, standby, server_time_utc, version) beside
`status`, so Vault clients' health calls work. With a token allowing `health` the checks are in
the answer too, and the request is audited (`health`); without one it is not (load balancers poll
it every few seconds, and an unauthenticated caller must not be able to grow the log).

The checks are those of `kms-cli health` that need no second unlock, run on the held root key:
the file or server and its schema and integrity, the audit chain, every state row, rotations,
grace periods and TTLs (the other slots' sources are not asked to unseal: that would be a second
unlock, on every poll). They read the whole vault, so they run at most every HEALTH_TTL seconds,
in a thread of their own over a second connection (never in the vault worker: requests go on
meanwhile), and answers in between use the last report. The server adds a live check of its own:
`serve.audit` fails (503) while batches fail to commit their audit entries.

`GET /v1/sys/metrics?format=prometheus` (a `health` token): requests by endpoint and status, a
latency histogram by endpoint, the group commit's counters, and the health gauges, rendered by the
same code as `kms-cli health --format prometheus` (handed in by the cli layer: this layer does not
import it).
"""

from __future__ import annotations

import re
import threading
import time

from kms_cli import __version__, durations
from kms_cli.errors import IntegrityError, KmsError
from kms_cli.server.api import ApiError, Route
from kms_cli.server.worker import Raw

HEALTH_TTL = 30.0  # seconds a health report is reused
_FAILING = 10.0 * 60  # a failed commit keeps serve.audit failing for this long unless a batch commits since


class State:
    """What the sys handlers read: set by run.py before the server starts."""

    def __init__(self, vault, worker, metrics, render_health=None):
        self.vault, self.worker, self.metrics = vault, worker, metrics
        self.render_health = render_health  # Report -> Prometheus text (kms_cli.cli.prometheus.health)
        self.report = None
        self.report_at = 0.0  # monotonic
        self._refreshing = False
        self._lock = threading.Lock()
        self._shadow = None

    # -- the report ------------------------------------------------------------------------
    def first_report(self) -> None:
        """At start, before the worker runs: the first report, on the worker's own vault."""
        self.report = build_report(self.vault)
        self.report_at = time.monotonic()

    def current(self):
        """The last report plus the server's live check; a stale report is refreshed in the background."""
        if time.monotonic() - self.report_at > HEALTH_TTL:
            self._refresh_later()
        from kms_cli.vault.health import FAIL, OK, Report

        base = self.report
        report = Report(checks=list(base.checks), metrics=dict(base.metrics), when=base.when)
        w = self.worker
        err = w.last_commit_error if w is not None else None
        if err is not None and time.time() - err[0] < _FAILING and w.last_commit_ok < err[0]:
            report.add("serve.audit", FAIL, f"requests fail: their audit entries could not be committed ({err[1]})", 7)
        elif w is not None:
            s = w.stats
            from kms_cli.wording import plural

            report.add("serve.audit", OK, f"{plural(s['jobs'], 'request')} audited in "
                                          f"{plural(s['batches'], 'batch', 'batches')} (one commit each)")
        return report

    def _refresh_later(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="kms-cli-health", daemon=True).start()

    def _refresh(self) -> None:
        try:
            if self._shadow is None:
                self._shadow = shadow_vault(self.vault)
            self.report = build_report(self._shadow)
        except Exception as exc:  # noqa: BLE001 - a report that cannot be made is a failing one
            from kms_cli.vault.health import FAIL, Report

            report = Report(when=durations.now())
            report.add("vault.read", FAIL, exc.message if isinstance(exc, KmsError) else type(exc).__name__,
                       getattr(exc, "exit_code", 5))
            self.report = report
            if self._shadow is not None:
                try:
                    self._shadow.close()
                except Exception:  # noqa: BLE001
                    pass
                self._shadow = None
        finally:
            self.report_at = time.monotonic()
            self._refreshing = False

    def close(self) -> None:
        if self._shadow is not None:
            try:
                self._shadow.close()
            except Exception:  # noqa: BLE001
                pass


def shadow_vault(vault):
    """The same unlocked vault over a second connection (no unlock: the held root key), for reads
    outside the worker thread."""
    from kms_cli.store import open_store
    from kms_cli.vault.core import Vault, _timeout

    store = open_store(vault.options.path, _timeout(vault.options))
    return Vault(store, vault.vault_id, vault._root, vault.options, vault.slot_id, vault._slot_blob)


class _Found:
    """What `health._check_database` reads of a vault, found through the held vault's own store."""

    def __init__(self, version: int, problems: list[str], engine: str = "SQLite"):
        self.version, self.problems, self.engine, self.error = version, problems, engine, None


def _check_file(report, vault):
    """The vault file's mode and size (os.stat only: see build_report), then the schema and SQLite's
    integrity_check through the vault's store."""
    import os

    from kms_cli.vault import health as h

    path = vault.options.path
    try:
        st = os.stat(path)
    except OSError as exc:
        report.add("vault.file", h.FAIL, f"{path}: {exc.strerror or exc}", 7)
        return None
    report.metrics["vault_size_bytes"] = st.st_size
    mode = st.st_mode & 0o777
    if mode & 0o077:
        report.add("vault.file", h.WARN, f"{path} is readable or writable by others (mode {mode:04o}); chmod 600 it")
    else:
        report.add("vault.file", h.OK, f"{path} ({st.st_size} bytes, mode {mode:04o})")
    with vault.store.read():
        return _Found(vault.store.schema_version(), vault.store.integrity_problems())


def build_report(vault):
    """`kms-cli health`'s checks that need no second unlock, on an unlocked vault (no audit entry).

    Not `health._check_file` for a file: its probe open()s and close()s the vault file, and closing
    any descriptor of a file drops every POSIX lock this process holds on it, SQLite's included;
    the next command to close its connection then takes the server for gone and deletes the WAL the
    worker still writes to (its commits would be lost). os.stat and SQLite's own connections only."""
    from kms_cli.locations import is_uri
    from kms_cli.vault import health as h
    from kms_cli.vault.core import _timeout

    report = h.Report(when=durations.now())
    path = vault.options.path
    try:
        found = h._check_server(report, path, _timeout(vault.options)) if is_uri(path) else _check_file(report, vault)
        if found is None or not h._check_database(report, found):
            return report
        h._check_audit(report, vault)
        h._check_rows(report, vault)
        if report.status != h.UNHEALTHY:
            now = durations.now()
            h._check_keys(report, vault, now)
            h._check_secrets(report, vault, now, h.SOON)
    except IntegrityError as exc:
        report.add("vault.read", h.FAIL, f"the vault could not be read: {exc}", 5)
    except KmsError as exc:
        report.add("vault.read", h.FAIL, f"the vault could not be read: {exc}", exc.exit_code)
    return report


STATE: State | None = None


def _status(report) -> str:
    from kms_cli.vault.health import DEGRADED, HEALTHY

    return report.status if report.status in (HEALTHY, DEGRADED) else "failing"


def health(req):
    from kms_cli.vault import tokens

    state = STATE
    report = state.current()
    status = _status(report)
    vault = req.vault
    body = {"status": status, "initialized": True, "sealed": False, "standby": bool(vault.store.read_only),
            "performance_standby": False, "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled", "server_time_utc": int(time.time()), "version": __version__,
            "cluster_name": "kms-cli"}
    if req.token is not None and tokens.allows(req.token, "health", None):
        body["checks"] = [c.to_dict() for c in report.checks]
        body["report_time"] = durations.rfc3339(report.when)
        if not vault.store.read_only:
            with vault.operation("health") as rec:
                rec.extra = {"status": report.status}
    return (503 if status == "failing" else 200), body


def metrics(req):
    req.authorize("health", None)
    fmt = req.query.get("format", "prometheus")
    if fmt != "prometheus":
        raise ApiError(400, f"unsupported metrics format {fmt[:40]!r}: use format=prometheus")
    state = STATE
    report = state.current()
    vault = req.vault
    if not vault.store.read_only:
        with vault.operation("metrics", write=False):
            pass
    text = prometheus_text(state.metrics, state.worker)
    if state.render_health is not None:
        text += state.render_health(report)
    return Raw(text.encode(), "text/plain; version=0.0.4; charset=utf-8")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def prometheus_text(m, worker) -> str:
    """The server's own counters in the text exposition format."""
    from kms_cli.server.app import LATENCY_BUCKETS

    out = ["# HELP kms_cli_http_requests_total HTTP requests answered, by endpoint and status.",
           "# TYPE kms_cli_http_requests_total counter"]
    for (endpoint, status), n in sorted(dict(m.requests).items()):
        out.append(f'kms_cli_http_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
    out += ["# HELP kms_cli_http_request_duration_seconds Time from the request's arrival to its answer "
            "(its audit entry committed), by endpoint.",
            "# TYPE kms_cli_http_request_duration_seconds histogram"]
    for endpoint, h in sorted(dict(m.latency).items()):
        h = list(h)
        cum = 0
        for le, n in zip(LATENCY_BUCKETS, h):
            cum += n
            out.append(f'kms_cli_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {cum}')
        out.append(f'kms_cli_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="+Inf"}} {h[-1]}')
        out.append(f'kms_cli_http_request_duration_seconds_sum{{endpoint="{endpoint}"}} {round(h[-2], 6)}')
        out.append(f'kms_cli_http_request_duration_seconds_count{{endpoint="{endpoint}"}} {h[-1]}')
    if worker is not None:
        s = dict(worker.stats)
        for name, help_, value in (
                ("serve_commits_total", "Transactions committed by the vault worker (one fsync each: group commit).",
                 s["batches"]),
                ("serve_committed_requests_total", "Requests whose audit entries those commits made durable.",
                 s["jobs"]),
                ("serve_commit_failures_total", "Batches whose commit failed (each of their requests got 503).",
                 s["commit_failures"])):
            out += [f"# HELP kms_cli_{name} {help_}", f"# TYPE kms_cli_{name} counter", f"kms_cli_{name} {value}"]
        out += ["# HELP kms_cli_serve_batch_size_max The most requests committed together so far.",
                "# TYPE kms_cli_serve_batch_size_max gauge", f"kms_cli_serve_batch_size_max {s['max_batch']}"]
    out += ["# HELP kms_cli_serve_start_time_seconds When the server started, in seconds since the epoch.",
            "# TYPE kms_cli_serve_start_time_seconds gauge",
            f"kms_cli_serve_start_time_seconds {_num(round(m.started, 3))}"]
    return "\n".join(out) + "\n"


def _envelope(data: dict) -> dict:
    return {"request_id": "", "lease_id": "", "renewable": False, "lease_duration": 0, "data": data,
            "wrap_info": None, "warnings": None, "auth": None}


def lookup_self(req):
    """GET auth/token/lookup-self: what Vault clients ask to learn whether their token works (hvac's
    is_authenticated(), `bao token lookup`). Any valid token may; the token itself is never echoed."""
    from kms_cli.vault import tokens

    if req.token is None:
        raise ApiError(403, "permission denied")
    with req.vault.operation("token.lookup", tokens.target(req.token.name), write=False):
        info = tokens.describe(req.token)
    r = req.token.row
    ttl = max(0, int(r["expires"] - time.time())) if r["expires"] is not None else 0
    return _envelope({"display_name": f"token-{info['name']}", "expire_time": info["expires"], "ttl": ttl,
                      "creation_time": int(r["created"]), "policies": info["allow"], "renewable": False,
                      "meta": {"namespace": info["namespace"]}, "type": "service", "num_uses": 0,
                      "path": "auth/token/create", "orphan": True})


def seal_status(req):
    """GET sys/seal-status (no token, as Vault): a serving vault is unlocked, i.e. unsealed."""
    engine = "postgresql" if req.vault.store.location.startswith("postgresql://") else "sqlite"
    return {"type": "kms-cli", "initialized": True, "sealed": False, "t": 1, "n": 1, "progress": 0, "nonce": "",
            "version": __version__, "migration": False, "recovery_seal": False, "storage_type": engine}


def init_status(req):
    """GET sys/init (no token, as Vault)."""
    return {"initialized": True}


ROUTES = [
    Route(("GET",), re.compile(r"/v1/sys/health"), health, needs_token=False, writes=False),
    Route(("GET",), re.compile(r"/v1/sys/metrics"), metrics, writes=False),
    Route(("GET",), re.compile(r"/v1/sys/seal-status"), seal_status, needs_token=False, writes=False),
    Route(("GET",), re.compile(r"/v1/sys/init"), init_status, needs_token=False, writes=False),
    Route(("GET",), re.compile(r"/v1/auth/token/lookup-self"), lookup_self, writes=False),
]
