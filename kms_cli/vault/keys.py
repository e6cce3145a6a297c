"""Key lifecycle policy (NIST SP 800-57 states): create, rotate, revoke, disable, destroy."""

from __future__ import annotations

import json

from kms_cli import algorithms, durations, names
from kms_cli.wording import article
from kms_cli.errors import AlreadyExistsError, NotFoundError, StateError, UsageError
from kms_cli.vault import rows
from kms_cli.vault.rows import KeyRecord

# Key states
ACTIVE, DISABLED, DESTROY_SCHEDULED, DESTROYED, REVOKED = (
    "active", "disabled", "destroy-scheduled", "destroyed", "revoked")
# Version states
V_ACTIVE, V_DECRYPT_ONLY, V_REVOKED, V_DESTROYED, V_EXPIRED = (
    "active", "decrypt-only", "revoked", "destroyed", "expired")

DEFAULT_DESTROY_AFTER = 7 * 86400


def version_state(row, now: float) -> str:
    state = row["state"]
    if state == V_DECRYPT_ONLY and row["grace_until"] is not None and row["grace_until"] <= now:
        return V_EXPIRED
    return state


def key_state(key, versions, now: float) -> str:
    if key["state"] != ACTIVE:
        return key["state"]
    if versions and all(v["state"] in (V_REVOKED, V_DESTROYED) for v in versions):
        return REVOKED
    return ACTIVE


def _find(vault, name: str) -> KeyRecord:
    """The key `name` with all its versions, authenticated (rows.load_key), or not found."""
    full = vault.ns.full(name)
    k = rows.load_key(vault, full)
    if k is None:
        raise NotFoundError(f"no key named {name!r}")
    return k


def schedule(k: KeyRecord, policies) -> tuple[int, float, str | None] | None:
    """(period, next rotation, policy namespace or None for the key's own) in effect for `k`."""
    row = k.row
    if row["rotate_every"]:
        return row["rotate_every"], row["next_rotation"], None
    alg = algorithms.ALGORITHMS.get(row["algorithm"])
    governing = policies.governing(k.name, alg.purpose if alg else None) if policies is not None else None
    if governing is None:
        return None
    ns, period, _grace = governing
    primary = k.version(row["primary_version"])
    return period, (primary["created"] if primary else row["created"]) + period, ns


def _policies(vault):
    from kms_cli.vault.policy import Policies

    return Policies(vault)


def describe(vault, k: KeyRecord, with_versions: bool = True, policies=None) -> dict:
    now = durations.now()
    row, versions = k.row, k.ordered()
    alg = algorithms.ALGORITHMS.get(row["algorithm"])
    sched = schedule(k, policies if policies is not None else _policies(vault))
    out = {
        "name": vault.ns.relative(row["name"]),
        "algorithm": row["algorithm"],
        "purpose": alg.purpose if alg else None,
        "state": key_state(row, versions, now),
        "primary_version": row["primary_version"],
        "description": row["description"],
        "labels": json.loads(row["labels"]),
        "rotate_every": durations.format_duration(sched[0]) if sched else None,
        "next_rotation": durations.rfc3339(sched[1]) if sched else None,
        "rotation_policy": None if sched is None or sched[2] is None else (sched[2] or "/"),
        "created": durations.rfc3339(row["created"]),
        "updated": durations.rfc3339(row["updated"]),
        "destroy_at": durations.rfc3339(row["destroy_at"]),
    }
    if with_versions:
        out["versions"] = [
            {
                "version": v["version"],
                "state": version_state(v, now),
                "created": durations.rfc3339(v["created"]),
                "superseded": durations.rfc3339(v["superseded"]),
                "grace_until": durations.rfc3339(v["grace_until"]),
                "revoked": durations.rfc3339(v["revoked"]),
                "revoke_reason": v["revoke_reason"],
                "destroyed": durations.rfc3339(v["destroyed"]),
            }
            for v in versions
        ]
    return out


def _new_version(vault, k: KeyRecord, alg, version: int, now: float) -> None:
    private, public = algorithms.generate(alg)
    k.add_version({
        "name": k.name,
        "version": version,
        "state": V_ACTIVE,
        "material": vault.seal_material(k.name, version, alg.name, private),
        "public": vault.seal_material(k.name, version, alg.name, public, kind="public") if public else None,
        "fingerprint": algorithms.fingerprint(alg, public) if public else None,
        "created": now,
    })


def create(vault, name: str, algorithm: str, rotate_every: int | None, description: str | None,
           labels: dict[str, str]) -> dict:
    names.utf8_text(description, "description")
    alg = algorithms.get(algorithm)
    full = vault.ns.full(name)
    with vault.operation("key.create", full, 1) as rec:
        if vault.store.key(full) is not None:
            raise AlreadyExistsError(f"a key named {name!r} already exists")
        now = durations.now()
        k = rows.new_key(dict(
            name=full, algorithm=alg.name, state=ACTIVE, description=description,
            labels=json.dumps(labels, sort_keys=True), rotate_every=rotate_every,
            next_rotation=now + rotate_every if rotate_every else None,
            primary_version=1, created=now, updated=now,
        ))
        _new_version(vault, k, alg, 1, now)
        k.save(vault)
        rec.extra = {"algorithm": alg.name}
        return describe(vault, k)


def list_keys(vault) -> list[dict]:
    with vault.operation("key.list", vault.ns.prefix or None, write=False):
        policies = _policies(vault)
        return [describe(vault, k, with_versions=False, policies=policies)
                for k in rows.load_keys(vault, vault.ns.prefix)]


def show(vault, name: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.show", full, write=False):
        return describe(vault, _find(vault, name))


def _require_usable_key(row, name: str) -> None:
    state = row["state"]
    if state == DISABLED:
        raise StateError(f"key {name!r} is disabled", hint=f"enable it with `kms-cli key enable {name}`")
    if state == DESTROY_SCHEDULED:
        raise StateError(f"key {name!r} is scheduled for destruction",
                         hint=f"cancel with `kms-cli key cancel-destroy {name}`")
    if state == DESTROYED:
        raise StateError(f"key {name!r} is destroyed")


def _rotate_row(vault, k: KeyRecord, reason: str, grace: int | None, now: float) -> int:
    alg = algorithms.get(k.row["algorithm"])
    new = max(k.versions) + 1
    for v in k.ordered():
        n = v["version"]
        if v["state"] == V_ACTIVE:
            k.set_version(n, state=V_DECRYPT_ONLY, superseded=now)
        if v["state"] in (V_ACTIVE, V_DECRYPT_ONLY):
            if reason == "compromise":
                k.set_version(n, state=V_REVOKED, revoked=now, revoke_reason="compromise")
            elif grace is not None:
                until = now + grace
                if v["grace_until"] is None or v["grace_until"] > until:
                    k.set_version(n, grace_until=until)
    _new_version(vault, k, alg, new, now)
    every = k.row["rotate_every"]
    k.set(primary_version=new, updated=now, next_rotation=now + every if every else None)
    k.save(vault)
    return new


def rotate(vault, name: str, reason: str = "manual", grace: int | None = None) -> dict:
    if reason not in ("scheduled", "manual", "compromise"):
        raise UsageError(f"invalid reason {reason!r}", hint="use scheduled, manual or compromise")
    full = vault.ns.full(name)
    with vault.operation("key.rotate", full) as rec:
        k = _find(vault, name)
        _require_usable_key(k.row, name)
        rec.version = _rotate_row(vault, k, reason, grace, durations.now())
        rec.extra = {"reason": reason}
        return describe(vault, k)


def due_actions(vault, now: float, policies=None) -> list[dict]:
    """What `key rotate --due` would do now: rotations by the key's schedule or its policy (with
    the policy's grace), and destructions whose window has passed; nothing is changed."""
    policies = policies if policies is not None else _policies(vault)
    actions = []
    for k in rows.load_keys(vault, vault.ns.prefix):
        row = k.row
        if row["state"] == DESTROY_SCHEDULED and row["destroy_at"] is not None and row["destroy_at"] <= now:
            actions.append({"action": "destroy", "name": vault.ns.relative(k.name), "_full": k.name})
            continue
        sched = schedule(k, policies)
        if row["state"] != ACTIVE or sched is None or sched[1] > now:
            continue
        grace = policies.grace_for(k.name)
        actions.append({"action": "rotate", "name": vault.ns.relative(k.name), "_full": k.name,
                        "version": max(k.versions) + 1, "policy": None if sched[2] is None else (sched[2] or "/"),
                        "grace": durations.format_duration(grace) if grace else None, "_grace": grace})
    return actions


def rotate_due(vault, dry_run: bool = False) -> list[dict]:
    """Rotate every key in the namespace whose schedule (its own or its policy's) has elapsed, and
    carry out destructions that are due (for cron). Returns one action per key (`--dry-run`: what
    would be done, nothing changed)."""
    if dry_run:
        with vault.operation("key.rotate-due", vault.ns.prefix or None, write=False, housekeeping=False) as rec:
            actions = due_actions(vault, durations.now())
            for a in actions:
                a.pop("_full"), a.pop("_grace", None)
            rec.extra = {"dry_run": True, "actions": len(actions)}
        return actions
    with vault.store.read():  # destructions due: the write below carries them out first (housekeeping)
        destroying = [n for n in vault.store.keys_due_for_destruction(durations.now())
                      if not vault.ns.prefix or vault.ns.contains(n)]
    with vault.operation("key.rotate-due", vault.ns.prefix or None) as rec:
        now = durations.now()
        actions = [{"action": "destroy", "name": vault.ns.relative(n)} for n in destroying]
        for a in due_actions(vault, now):
            full = a.pop("_full")
            grace = a.pop("_grace", None)
            if a["action"] == "destroy":  # (housekeeping has normally done it already)
                k = rows.load_key(vault, full)
                _purge(k, now)
                k.save(vault)
                vault.audit.append("key.destroyed", full, None)
                actions.append(a)
                continue
            k = rows.load_key(vault, full)
            new = _rotate_row(vault, k, "scheduled", grace, now)
            vault.audit.append("key.rotate", full, new, extra={"reason": "scheduled", **(
                {"policy": a["policy"]} if a["policy"] else {}), **({"grace": grace} if grace else {})})
            a["version"] = new
            actions.append(a)
        rec.extra = {"rotated": sum(a["action"] == "rotate" for a in actions),
                     "destroyed": sum(a["action"] == "destroy" for a in actions)}
    return actions


def revoke(vault, name: str, version: int | None, reason: str) -> dict:
    names.utf8_text(reason, "reason")
    full = vault.ns.full(name)
    with vault.operation("key.revoke", full, version) as rec:
        k = _find(vault, name)
        if k.row["state"] == DESTROYED:
            raise StateError(f"key {name!r} is destroyed")
        now = durations.now()
        versions = k.ordered()
        if version is not None:
            versions = [v for v in versions if v["version"] == version]
            if not versions:
                raise NotFoundError(f"key {name!r} has no version {version}")
        for v in versions:
            if v["state"] in (V_ACTIVE, V_DECRYPT_ONLY):
                k.set_version(v["version"], state=V_REVOKED, revoked=now, revoke_reason=reason)
        k.set(updated=now)
        k.save(vault)
        rec.extra = {"reason": reason}
        return describe(vault, k)


def set_enabled(vault, name: str, enabled: bool) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.enable" if enabled else "key.disable", full):
        k = _find(vault, name)
        if k.row["state"] in (DESTROYED, DESTROY_SCHEDULED):
            raise StateError(f"key {name!r} is {k.row['state']}")
        k.set(state=ACTIVE if enabled else DISABLED, updated=durations.now())
        k.save(vault)
        return describe(vault, k)


def destroy(vault, name: str, after: int | None) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.destroy", full) as rec:
        k = _find(vault, name)
        if k.row["state"] in (DESTROYED, DESTROY_SCHEDULED):
            raise StateError(f"key {name!r} is already {k.row['state']}")
        now = durations.now()
        when = now + (DEFAULT_DESTROY_AFTER if after is None else after)
        rec.extra = {"destroy_at": durations.rfc3339(when)}
        if when <= now:  # at once: this operation's own entry records it (rows before entries)
            _purge(k, now)
            rec.extra["destroyed"] = True
        else:
            k.set(state=DESTROY_SCHEDULED, state_before=k.row["state"], destroy_at=when, updated=now)
        k.save(vault)
        return describe(vault, k)


def cancel_destroy(vault, name: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.cancel-destroy", full):
        k = _find(vault, name)
        if k.row["state"] != DESTROY_SCHEDULED:
            raise StateError(f"key {name!r} is not scheduled for destruction")
        k.set(state=k.row["state_before"] or ACTIVE, state_before=None, destroy_at=None, updated=durations.now())
        k.save(vault)
        return describe(vault, k)


def purge_due(vault) -> None:
    """Destroy the material of keys whose destroy window has passed (inside a write transaction)."""
    now = durations.now()
    for full in vault.store.keys_due_for_destruction(now):
        k = rows.load_key(vault, full)
        _purge(k, now)
        k.save(vault)
        vault.audit.append("key.destroyed", full, None)


def _purge(k: KeyRecord, now: float) -> None:
    for v in k.ordered():
        k.set_version(v["version"], material=None, state=V_DESTROYED, destroyed=now)
    k.set(state=DESTROYED, updated=now)


def usable_version(vault, full: str, version: int | None, use: str):
    """The key record and version row for `use` (encrypt/decrypt/sign/verify), or the error that forbids it.

    Unknown keys and versions raise NotFoundError; the caller maps that to exit 5
    where the name came from a ciphertext (spec: a key this vault does not have).
    """
    k = rows.load_key(vault, full)
    if k is None:
        raise NotFoundError(f"no key named {vault.ns.relative(full)!r}")
    row = k.row
    name = vault.ns.relative(full)
    alg = algorithms.get(row["algorithm"])
    wants = "encrypt" if use in ("encrypt", "decrypt", "rewrap", "datakey") else "sign"
    if alg.purpose != wants:
        raise StateError(f"key {name!r} is {article(alg.purpose + 'ing key')} ({alg.name}); "
                         f"it cannot {use}")
    _require_usable_key(row, name)
    if version is None:
        version = row["primary_version"]
    v = k.version(version)
    if v is None:
        raise NotFoundError(f"key {name!r} has no version {version}")
    state = version_state(v, durations.now())
    if use in ("encrypt", "sign", "datakey") and state != V_ACTIVE:
        raise StateError(f"key {name!r} has no active version (version {version} is {state})",
                         hint=f"rotate it with `kms-cli key rotate {name}`")
    if state in (V_REVOKED, V_DESTROYED, V_EXPIRED):
        what = {"expired": "past its grace period"}.get(state, state)
        raise StateError(f"version {version} of key {name!r} is {what}")
    return k, v, alg

