"""Key lifecycle policy (NIST SP 800-57 states): create, rotate, revoke, disable, destroy."""

from __future__ import annotations

import json

from kms_cli import algorithms, durations
from kms_cli.errors import AlreadyExistsError, NotFoundError, StateError, UsageError

# Key states
ACTIVE, DISABLED, DESTROY_SCHEDULED, DESTROYED, REVOKED = (
    "active", "disabled", "destroy-scheduled", "destroyed", "revoked")
# Version states
V_ACTIVE, V_DECRYPT_ONLY, V_REVOKED, V_DESTROYED, V_EXPIRED = (
    "active", "decrypt-only", "revoked", "destroyed", "expired")

DEFAULT_DESTROY_AFTER = 7 * 86400


# -- row MACs: key and version states (revoked, disabled, grace, ...) cannot be edited in the file --
def _num(x) -> str:
    return "" if x is None else repr(float(x))


def _key_mac(vault, k, keys=None) -> bytes:
    from kms_cli.crypto.primitives import hmac_sha256
    from kms_cli.vault.core import bind

    return hmac_sha256((keys or vault.subkeys).row, bind(
        "key-row", vault.vault_id, k["name"], k["algorithm"], k["state"], k["state_before"] or "",
        k["primary_version"], _num(k["destroy_at"])))


def _version_mac(vault, v, keys=None) -> bytes:
    from kms_cli.crypto.primitives import hmac_sha256
    from kms_cli.vault.core import bind

    return hmac_sha256((keys or vault.subkeys).row, bind(
        "key-version-row", vault.vault_id, v["name"], v["version"], v["state"], _num(v["grace_until"]),
        _num(v["revoked"]), _num(v["destroyed"]), "material" if v["material"] is not None else "none"))


def reseal_rows(vault, full: str, keys=None) -> None:
    """Recompute the MACs of a key's row and its versions' rows after a change (inside the transaction)."""
    vault.store.update_key(full, mac=_key_mac(vault, vault.store.key(full), keys))
    for v in vault.store.key_versions(full):
        vault.store.update_key_version(full, v["version"], mac=_version_mac(vault, v, keys))


def _check_rows(vault, key_row, version_rows) -> None:
    from kms_cli.crypto.primitives import equal
    from kms_cli.errors import IntegrityError

    if key_row["mac"] is None or not equal(_key_mac(vault, key_row), key_row["mac"]):
        raise IntegrityError(f"the state of key {vault.ns.relative(key_row['name'])!r} failed authentication",
                             hint="the vault file was edited outside kms-cli; restore a backup")
    for v in version_rows:
        if v["mac"] is None or not equal(_version_mac(vault, v), v["mac"]):
            raise IntegrityError(f"the state of key {vault.ns.relative(v['name'])!r} version {v['version']} "
                                 "failed authentication",
                                 hint="the vault file was edited outside kms-cli; restore a backup")


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


def _find(vault, name: str):
    full = vault.ns.full(name)
    row = vault.store.key(full)
    if row is None:
        raise NotFoundError(f"no key named {name!r}")
    return full, row


def describe(vault, row, with_versions: bool = True) -> dict:
    now = durations.now()
    versions = vault.store.key_versions(row["name"])
    alg = algorithms.ALGORITHMS.get(row["algorithm"])
    out = {
        "name": vault.ns.relative(row["name"]),
        "algorithm": row["algorithm"],
        "purpose": alg.purpose if alg else None,
        "state": key_state(row, versions, now),
        "primary_version": row["primary_version"],
        "description": row["description"],
        "labels": json.loads(row["labels"]),
        "rotate_every": durations.format_duration(row["rotate_every"]) if row["rotate_every"] else None,
        "next_rotation": durations.rfc3339(row["next_rotation"]),
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


def _new_version(vault, full: str, alg, version: int, now: float) -> None:
    private, public = algorithms.generate(alg)
    vault.store.insert_key_version(
        name=full,
        version=version,
        state=V_ACTIVE,
        material=vault.seal_material(full, version, alg.name, private),
        public=vault.seal_material(full, version, alg.name, public, kind="public") if public else None,
        fingerprint=algorithms.fingerprint(alg, public) if public else None,
        created=now,
    )


def create(vault, name: str, algorithm: str, rotate_every: int | None, description: str | None,
           labels: dict[str, str]) -> dict:
    alg = algorithms.get(algorithm)
    full = vault.ns.full(name)
    with vault.operation("key.create", full, 1) as rec:
        if vault.store.key(full) is not None:
            raise AlreadyExistsError(f"a key named {name!r} already exists")
        now = durations.now()
        vault.store.insert_key(
            name=full, algorithm=alg.name, state=ACTIVE, description=description,
            labels=json.dumps(labels, sort_keys=True), rotate_every=rotate_every,
            next_rotation=now + rotate_every if rotate_every else None,
            primary_version=1, created=now, updated=now,
        )
        _new_version(vault, full, alg, 1, now)
        reseal_rows(vault, full)
        rec.extra = {"algorithm": alg.name}
        return describe(vault, vault.store.key(full))


def list_keys(vault) -> list[dict]:
    with vault.operation("key.list", vault.ns.prefix or None, write=False):
        return [describe(vault, row, with_versions=False) for row in vault.store.keys(vault.ns.like_pattern())]


def show(vault, name: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.show", full, write=False):
        _, row = _find(vault, name)
        return describe(vault, row)


def _require_usable_key(row, name: str) -> None:
    state = row["state"]
    if state == DISABLED:
        raise StateError(f"key {name!r} is disabled", hint=f"enable it with `kms-cli key enable {name}`")
    if state == DESTROY_SCHEDULED:
        raise StateError(f"key {name!r} is scheduled for destruction",
                         hint=f"cancel with `kms-cli key cancel-destroy {name}`")
    if state == DESTROYED:
        raise StateError(f"key {name!r} is destroyed")


def _rotate_row(vault, full: str, row, reason: str, grace: int | None, now: float) -> int:
    alg = algorithms.get(row["algorithm"])
    new = max(v["version"] for v in vault.store.key_versions(full)) + 1
    for v in vault.store.key_versions(full):
        if v["state"] == V_ACTIVE:
            vault.store.update_key_version(full, v["version"], state=V_DECRYPT_ONLY, superseded=now)
        if v["state"] in (V_ACTIVE, V_DECRYPT_ONLY):
            if reason == "compromise":
                vault.store.update_key_version(full, v["version"], state=V_REVOKED, revoked=now,
                                               revoke_reason="compromise")
            elif grace is not None:
                until = now + grace
                if v["grace_until"] is None or v["grace_until"] > until:
                    vault.store.update_key_version(full, v["version"], grace_until=until)
    _new_version(vault, full, alg, new, now)
    vault.store.update_key(full, primary_version=new, updated=now,
                           next_rotation=now + row["rotate_every"] if row["rotate_every"] else None)
    reseal_rows(vault, full)
    return new


def rotate(vault, name: str, reason: str = "manual", grace: int | None = None) -> dict:
    if reason not in ("scheduled", "manual", "compromise"):
        raise UsageError(f"invalid reason {reason!r}", hint="use scheduled, manual or compromise")
    full = vault.ns.full(name)
    with vault.operation("key.rotate", full) as rec:
        _, row = _find(vault, name)
        _check_rows(vault, row, vault.store.key_versions(full))
        _require_usable_key(row, name)
        rec.version = _rotate_row(vault, full, row, reason, grace, durations.now())
        rec.extra = {"reason": reason}
        return describe(vault, vault.store.key(full))


def rotate_due(vault) -> list[dict]:
    """Rotate every key in the namespace whose schedule has elapsed (for cron)."""
    done = []
    with vault.operation("key.rotate-due", vault.ns.prefix or None) as rec:
        now = durations.now()
        for row in vault.store.keys(vault.ns.like_pattern()):
            if row["state"] != ACTIVE or not row["next_rotation"] or row["next_rotation"] > now:
                continue
            new = _rotate_row(vault, row["name"], row, "scheduled", None, now)
            vault.audit.append("key.rotate", row["name"], new, extra={"reason": "scheduled"})
            done.append({"name": vault.ns.relative(row["name"]), "version": new})
        rec.extra = {"rotated": len(done)}
    return done


def revoke(vault, name: str, version: int | None, reason: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.revoke", full, version) as rec:
        _, row = _find(vault, name)
        if row["state"] == DESTROYED:
            raise StateError(f"key {name!r} is destroyed")
        now = durations.now()
        versions = vault.store.key_versions(full)
        if version is not None:
            versions = [v for v in versions if v["version"] == version]
            if not versions:
                raise NotFoundError(f"key {name!r} has no version {version}")
        for v in versions:
            if v["state"] in (V_ACTIVE, V_DECRYPT_ONLY):
                vault.store.update_key_version(full, v["version"], state=V_REVOKED, revoked=now, revoke_reason=reason)
        vault.store.update_key(full, updated=now)
        reseal_rows(vault, full)
        rec.extra = {"reason": reason}
        return describe(vault, vault.store.key(full))


def set_enabled(vault, name: str, enabled: bool) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.enable" if enabled else "key.disable", full):
        _, row = _find(vault, name)
        if row["state"] in (DESTROYED, DESTROY_SCHEDULED):
            raise StateError(f"key {name!r} is {row['state']}")
        _check_rows(vault, row, vault.store.key_versions(full))
        vault.store.update_key(full, state=ACTIVE if enabled else DISABLED, updated=durations.now())
        reseal_rows(vault, full)
        return describe(vault, vault.store.key(full))


def destroy(vault, name: str, after: int | None) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.destroy", full) as rec:
        _, row = _find(vault, name)
        if row["state"] in (DESTROYED, DESTROY_SCHEDULED):
            raise StateError(f"key {name!r} is already {row['state']}")
        now = durations.now()
        when = now + (DEFAULT_DESTROY_AFTER if after is None else after)
        _check_rows(vault, row, vault.store.key_versions(full))
        vault.store.update_key(full, state=DESTROY_SCHEDULED, state_before=row["state"], destroy_at=when, updated=now)
        reseal_rows(vault, full)
        rec.extra = {"destroy_at": durations.rfc3339(when)}
        if when <= now:
            purge_due(vault)
        return describe(vault, vault.store.key(full))


def cancel_destroy(vault, name: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("key.cancel-destroy", full):
        _, row = _find(vault, name)
        if row["state"] != DESTROY_SCHEDULED:
            raise StateError(f"key {name!r} is not scheduled for destruction")
        _check_rows(vault, row, vault.store.key_versions(full))
        vault.store.update_key(full, state=row["state_before"] or ACTIVE, state_before=None, destroy_at=None,
                               updated=durations.now())
        reseal_rows(vault, full)
        return describe(vault, vault.store.key(full))


def purge_due(vault) -> None:
    """Destroy the material of keys whose destroy window has passed (inside a write transaction)."""
    now = durations.now()
    for row in vault.store.all(
        "SELECT name FROM keys WHERE state = ? AND destroy_at <= ?", (DESTROY_SCHEDULED, now)
    ):
        vault.store.run(
            "UPDATE key_versions SET material = NULL, state = ?, destroyed = ? WHERE name = ?",
            (V_DESTROYED, now, row["name"]),
        )
        vault.store.update_key(row["name"], state=DESTROYED, updated=now)
        reseal_rows(vault, row["name"])
        vault.audit.append("key.destroyed", row["name"], None)


def usable_version(vault, full: str, version: int | None, use: str):
    """The key row and version row for `use` (encrypt/decrypt/sign/verify), or the error that forbids it.

    Unknown keys and versions raise NotFoundError; the caller maps that to exit 5
    where the name came from a ciphertext (spec: a key this vault does not have).
    """
    row = vault.store.key(full)
    if row is None:
        raise NotFoundError(f"no key named {vault.ns.relative(full)!r}")
    name = vault.ns.relative(full)
    _check_rows(vault, row, [])
    alg = algorithms.get(row["algorithm"])
    wants = "encrypt" if use in ("encrypt", "decrypt", "rewrap", "datakey") else "sign"
    if alg.purpose != wants:
        raise StateError(f"key {name!r} is a {alg.purpose}ing key ({alg.name}); it cannot {use}")
    _require_usable_key(row, name)
    if version is None:
        version = row["primary_version"]
    v = vault.store.key_version(full, version)
    if v is None:
        raise NotFoundError(f"key {name!r} has no version {version}")
    _check_rows(vault, row, [v])  # the key row again is cheap; the version row is new here
    state = version_state(v, durations.now())
    if use in ("encrypt", "sign", "datakey") and state != V_ACTIVE:
        raise StateError(f"key {name!r} has no active version (version {version} is {state})",
                         hint=f"rotate it with `kms-cli key rotate {name}`")
    if state in (V_REVOKED, V_DESTROYED, V_EXPIRED):
        what = {"expired": "past its grace period"}.get(state, state)
        raise StateError(f"version {version} of key {name!r} is {what}")
    return row, v, alg
