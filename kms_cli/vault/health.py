"""Vault health: the checks behind `kms-cli health`, their overall status and exit code, and metrics.

Each check is ok, warn or fail. Overall: healthy (exit 0), degraded (warnings
only, exit 10) or unhealthy: 5 an integrity failure (file, schema, SQLite
integrity_check, a slot that unseals another key, the audit chain), 4 no slot
unlocks (or a slot's source refuses to unseal it), 7 a source is unreachable.
When several fail, the most serious code wins, in that order. Key material is
never printed: a slot's unsealed key is only compared, in constant time.

Slots whose source is not configured in this environment (a recovery passphrase
on a cron host, say) cannot be checked here; they are reported as ok with
"not checked" in the detail rather than keeping every such vault degraded.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from kms_cli import durations
from kms_cli.wording import plural
from kms_cli.crypto.primitives import equal
from kms_cli.errors import (DegradedError, IntegrityError, KmsError, NotFoundError, UnavailableError,
                            UnlockError)

OK, WARN, FAIL = "ok", "warn", "fail"
HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_SEVERITY = (5, 4, 7, 3, 1)  # which exit code wins when several checks fail
_ERRORS = {5: IntegrityError, 4: UnlockError, 7: UnavailableError, 3: NotFoundError}
KEY_STATES = ("active", "disabled", "destroy-scheduled", "destroyed", "revoked")
SOON = 7 * 86400  # by default, secrets whose TTL ends within a week are warned about (exit 10)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    code: int = 0  # the exit code a failure maps to

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    when: float = 0.0

    def add(self, name: str, status: str, detail: str, code: int = 0) -> Check:
        check = Check(name, status, detail, code if status == FAIL else 0)
        self.checks.append(check)
        return check

    @property
    def status(self) -> str:
        if any(c.status == FAIL for c in self.checks):
            return UNHEALTHY
        if any(c.status == WARN for c in self.checks):
            return DEGRADED
        return HEALTHY

    @property
    def exit_code(self) -> int:
        codes = {c.code or 5 for c in self.checks if c.status == FAIL}
        for code in _SEVERITY:
            if code in codes:
                return code
        if codes:
            return min(codes)
        return 10 if self.status == DEGRADED else 0

    def error(self) -> KmsError | None:
        """The error the CLI reports after printing the report (None when healthy)."""
        code = self.exit_code
        if code == 0:
            return None
        if code == 10:
            warns = [c.name for c in self.checks if c.status == WARN]
            return DegradedError(f"the vault is degraded: {plural(len(warns), 'warning')}: {', '.join(warns)}")
        first = next(c for c in self.checks if c.status == FAIL and (c.code or 5) == code)
        err = _ERRORS.get(code, KmsError)(f"the vault is unhealthy: {first.name}: {first.detail}")
        err.exit_code = code
        return err

    def to_dict(self) -> dict:
        return {"status": self.status, "checks": [c.to_dict() for c in self.checks]}


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- the checks ------------------------------------------------------------------------------

def _check_file(report: Report, path: str):
    """The file, its mode, and what the store finds in it without unlocking it (None: stop here)."""
    from kms_cli.store import probe

    if not os.path.exists(path):
        report.add("vault.file", FAIL, f"no vault at {path}", 3)
        return None
    try:
        found = probe(path)
    except OSError as exc:
        report.add("vault.file", FAIL, f"{path} is not readable: {exc.strerror}", 7)
        return None
    if not found.is_database:
        report.add("vault.file", FAIL, f"{path} is not a SQLite database", 5)
        return None
    report.metrics["vault_size_bytes"] = found.size
    mode = found.mode
    if mode & 0o077:
        report.add("vault.file", WARN, f"{path} is readable or writable by others (mode {mode:04o}); chmod 600 it")
    else:
        report.add("vault.file", OK, f"{path} ({found.size} bytes, mode {mode:04o})")
    return found


LAG_WARN_S = 60.0  # a standby further behind its primary than this is reported (degraded)


class _ServerProbe:
    """What `_check_database` needs to know of a PostgreSQL vault (found without unlocking it)."""

    def __init__(self, version: int, problems: list[str], error: KmsError | None = None):
        self.version, self.problems, self.error = version, problems, error
        self.engine = "PostgreSQL"


def _check_server(report: Report, location: str, timeout: float):
    """A PostgreSQL vault: the server answers, which version, standby or primary and the replication
    lag, the schema and its tables (None: stop here)."""
    from kms_cli.locations import canonical
    from kms_cli.store.postgres import PostgresStore

    shown = canonical(location)
    try:
        store = PostgresStore.connect(location, timeout)
    except KmsError as exc:
        report.add("vault.server", FAIL, str(exc), exc.exit_code)
        return None
    try:
        status = store.server_status()
        version = store.schema_version()
        problems = store.integrity_problems() if version else []
    except KmsError as exc:
        report.add("vault.server", FAIL, str(exc), exc.exit_code)
        return None
    finally:
        store.close()
    role = "standby (read-only)" if status["standby"] else "primary"
    report.add("vault.server", OK, f"{shown}: PostgreSQL {status['server_version']}, {role}")
    if status["standby"]:
        lag = status["replication_lag_s"]
        report.metrics["replication_lag_seconds"] = lag if lag is not None else -1
        if lag is None:
            report.add("vault.replication", WARN, "standby has replayed nothing from its primary yet")
        elif lag > LAG_WARN_S:
            report.add("vault.replication", WARN, f"standby is {lag:.0f} s behind its primary (over {LAG_WARN_S:.0f} s)")
        else:
            report.add("vault.replication", OK, f"standby {lag:.1f} s behind its primary")
    if version == 0:
        report.add("vault.schema", FAIL, f"no vault at {shown}", 3)
        return None
    return _ServerProbe(version, problems)


def _check_database(report: Report, found) -> bool:
    """Schema version and the store's own integrity check (no unlock needed)."""
    from kms_cli.store import SCHEMA_VERSION

    if found.error is not None:
        report.add("vault.schema", FAIL, found.error.message, found.error.exit_code)
        return False
    version = found.version
    if version == 0:
        report.add("vault.schema", FAIL, "not a kms-cli vault (no schema)", 5)
        return False
    if version > SCHEMA_VERSION:
        report.add("vault.schema", FAIL, f"schema {version} was written by a newer kms-cli "
                                         f"(this one knows {SCHEMA_VERSION}); upgrade kms-cli", 1)
        return False
    if version < SCHEMA_VERSION:
        report.add("vault.schema", OK, f"schema {version}, upgraded to {SCHEMA_VERSION} when opened")
    else:
        report.add("vault.schema", OK, f"schema {version} (current)")
    engine = getattr(found, "engine", "SQLite")
    check = "integrity_check" if engine == "SQLite" else "schema check"
    if found.problems:
        report.add("vault.integrity", FAIL, f"{engine} {check}: " + "; ".join(found.problems[:3]), 5)
        return False
    report.add("vault.integrity", OK, f"{engine} {check} ok")
    return True


def _check_slots(report: Report, vault) -> None:
    from kms_cli.providers import from_uri
    from kms_cli.vault.hierarchy import Subkeys, slot_tag

    # never prompt for a second passphrase just to check a slot
    options = copy.copy(vault.options.source)
    options.prompt = None
    for row in vault.store.slots():
        name = f"slot.{row['id']}"
        try:
            source = from_uri(row["uri"], options)
            shown = source.uri
        except KmsError as exc:
            report.add(name, FAIL, f"{row['uri']}: {exc}", exc.exit_code)
            continue
        if not equal(slot_tag(vault.subkeys.slot, vault.vault_id, row["id"], row["uri"], row["blob"]),
                     bytes(row["tag"]) if isinstance(row["tag"], bytes) else b""):
            report.add(name, FAIL, f"{shown}: the slot row failed authentication (edited outside kms-cli)", 5)
            continue
        if row["id"] == vault.slot_id:
            report.add(name, OK, f"{shown}: unsealed the vault")
            continue
        if not source.is_configured():
            report.add(name, OK, f"{shown}: not checked, the source is not configured in this environment")
            continue
        try:
            key = source.unwrap(row["blob"], vault.context)
        except UnavailableError as exc:
            report.add(name, FAIL, f"{shown}: unreachable: {exc}", 7)
            continue
        except (UnlockError, NotFoundError) as exc:
            report.add(name, FAIL, f"{shown}: does not unseal the vault: {exc}", 4)
            continue
        except KmsError as exc:
            report.add(name, FAIL, f"{shown}: {exc}", exc.exit_code)
            continue
        tag = slot_tag(Subkeys.derive(key, vault.vault_id).slot, vault.vault_id, row["id"], row["uri"], row["blob"])
        if equal(key, vault._root) and equal(tag, row["tag"]):
            report.add(name, OK, f"{shown}: reachable, unseals the root key")
        else:
            report.add(name, FAIL, f"{shown}: unseals a key that is not this vault's root key", 5)


def _check_audit(report: Report, vault) -> None:
    try:
        result = vault.audit.verify()
    except IntegrityError as exc:
        report.add("audit.chain", FAIL, str(exc), 5)
    else:
        since = f" from the checkpoint at seq {result.first_seq}" if result.first_seq > 1 else ""
        report.add("audit.chain", OK, f"{plural(result.entries, 'entry', 'entries')}{since}, "
                                      f"chain and head intact")
    stats = vault.audit.stats()
    report.metrics["audit_entries"] = stats["entries"]
    report.metrics["audit_last_seq"] = stats["last_seq"]


def _check_rows(report: Report, vault) -> None:
    """Every state row authenticated and every sealed value opened (rows.verify_all)."""
    from kms_cli.vault import rows

    try:
        counts = rows.verify_all(vault)
    except IntegrityError as exc:
        report.add("vault.rows", FAIL, str(exc), 5)
        return
    report.add("vault.rows", OK, f"{plural(counts['keys'], 'key')}, {plural(counts['key_versions'], 'key version')}, "
                                 f"{plural(counts['secrets'], 'secret')}, "
                                 f"{plural(counts['secret_versions'], 'secret version')}, "
                                 + (f"{plural(counts['policies'], 'policy', 'policies')}, " if counts["policies"] else "")
                                 + "and the slot set authenticated")


def _check_keys(report: Report, vault, now: float) -> None:
    from kms_cli.vault import keys, rows

    from kms_cli.vault.policy import Policies

    ns = vault.ns
    policies = Policies(vault)
    states = dict.fromkeys(KEY_STATES, 0)
    overdue, past_grace, destroy_due, destroy_soon = [], [], [], []
    for k in rows.load_keys(vault, ns.prefix):
        row, versions = k.row, k.ordered()
        name = ns.relative(row["name"])
        state = keys.key_state(row, versions, now)
        states[state] = states.get(state, 0) + 1
        sched = keys.schedule(k, policies)  # the key's own schedule, or its namespace's policy
        if row["state"] == keys.ACTIVE and sched is not None and sched[1] <= now:
            overdue.append(name if sched[2] is None else f"{name} (policy {sched[2] or '/'})")
        if row["state"] == keys.DESTROY_SCHEDULED and row["destroy_at"] is not None:
            (destroy_due if row["destroy_at"] <= now else destroy_soon).append(name)
        if row["state"] not in (keys.DESTROYED, keys.DESTROY_SCHEDULED):
            past_grace += [f"{name} v{v['version']}" for v in versions
                           if keys.version_state(v, now) == keys.V_EXPIRED]
    report.metrics.update(keys_by_state=states, rotations_overdue=len(overdue),
                          key_versions_past_grace=len(past_grace), destroys_due=len(destroy_due))
    if overdue:
        report.add("keys.rotation", WARN, f"{plural(len(overdue), 'key')} past the rotation date: "
                                          f"{_names(overdue)}; run `kms-cli key rotate --due`")
    else:
        report.add("keys.rotation", OK, "no key is past its rotation date")
    if past_grace:
        report.add("keys.grace", WARN, f"{plural(len(past_grace), 'key version')} past the grace period: "
                                       f"{_names(past_grace)}; data still under them no longer decrypts")
    else:
        report.add("keys.grace", OK, "no key version is past its grace period")
    if destroy_due:
        report.add("keys.destroy", WARN, f"{plural(len(destroy_due), 'key')} past the destroy window: "
                                         f"{_names(destroy_due)}; the material is purged now")
    elif destroy_soon:
        report.add("keys.destroy", OK, f"scheduled for destruction: {_names(destroy_soon)}")
    else:
        report.add("keys.destroy", OK, "no destruction is due")


def _span(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return plural(seconds // size, unit)
    return plural(seconds, "second")


def _check_secrets(report: Report, vault, now: float, window: int) -> None:
    from kms_cli.vault import rows

    ns = vault.ns
    current = []
    for srec in rows.load_secrets(vault, ns.prefix):
        v = srec.version(vault, srec.last_version)
        if v is not None:
            current.append((ns.relative(srec.name), v["expires"]))
    expired = [n for n, e in current if e is not None and e <= now]
    soon = [n for n, e in current if e is not None and now < e <= now + window]
    report.metrics.update(secrets=len(current), secrets_expired=len(expired), secrets_expiring=len(soon))
    span = _span(window)
    if expired:
        report.add("secrets.ttl", WARN, f"{plural(len(expired), 'secret')} past the TTL: {_names(expired)}; "
                                        "put new values with `kms-cli secret put`")
    elif soon:
        report.add("secrets.ttl", WARN, f"{plural(len(soon), 'secret')} expiring within {span}: {_names(soon)}; "
                                        "put new values with `kms-cli secret put`")
    else:
        report.add("secrets.ttl", OK, "no secret is past its TTL" + (f" or expiring within {span}" if window else ""))


def run(options, expiring_within: int = SOON) -> Report:
    """Run every check against the vault `options` names; records one `health` entry when it unlocks."""
    from kms_cli.vault.core import Vault

    from kms_cli.locations import is_uri
    from kms_cli.vault.core import _timeout

    report = Report(when=durations.now())
    if is_uri(options.path):
        found = _check_server(report, options.path, _timeout(options))
    else:
        found = _check_file(report, options.path)
    if found is None or not _check_database(report, found):
        return report
    try:
        vault = Vault.open(options)
    except KmsError as exc:
        report.add("unlock", FAIL, str(exc), exc.exit_code)
        return report
    try:
        now = durations.now()
        # Every check reads before this run writes anything (its own entry, housekeeping).
        try:
            _check_slots(report, vault)
            _check_audit(report, vault)
            _check_rows(report, vault)
            if report.status != UNHEALTHY:  # the summaries below read only authenticated rows
                _check_keys(report, vault, now)
                _check_secrets(report, vault, now, expiring_within)
        except IntegrityError as exc:  # the store found the database damaged (a table or column edited away)
            report.add("vault.read", FAIL, f"the vault could not be read: {exc}", 5)
            return report
        if vault.store.read_only:
            pass  # a standby cannot write the health entry; vault.server says it is one
        else:
            try:
                with vault.operation("health") as rec:
                    rec.extra = {"status": report.status}
            except KmsError as exc:
                report.add("audit.entry", FAIL, str(exc), exc.exit_code)
    finally:
        vault.close()
    return report


# -- numeric values of statuses (gauges: kms_cli.cli.prometheus) ----------------------------

CHECK_VALUE = {OK: 0, WARN: 1, FAIL: 2}
STATUS_VALUE = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
