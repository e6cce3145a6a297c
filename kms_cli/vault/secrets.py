"""Secrets policy: versioned values, TTLs and tags; every value sealed and bound to name and version."""

from __future__ import annotations

import json

from kms_cli import durations
from kms_cli.errors import NotFoundError, StateError
from kms_cli.secretvalue import SecretValue
from kms_cli.vault import rows
from kms_cli.vault.rows import SecretRecord

MAX_VALUE = 1 << 20  # 1 MiB: a secret, not a file (use `encrypt` for files)


def _load(vault, full: str, name: str, *, deleted_ok: bool = False) -> SecretRecord:
    """The secret's authenticated head (rows.load_secret), or not found."""
    srec = rows.load_secret(vault, full)
    if srec is None or (srec.deleted and not deleted_ok):
        raise NotFoundError(f"no secret named {name!r}")
    return srec


def _current(vault, full: str, name: str, version: int | None) -> dict:
    srec = _load(vault, full, name, deleted_ok=version is not None)
    if version is None:
        version = srec.last_version
    row = srec.version(vault, version)
    if row is None:
        raise NotFoundError(f"secret {name!r} has no version {version}")
    return row


def put(vault, name: str, value: bytes, ttl: int | None, tags: dict[str, str] | None,
        rotate_every: int | None = None, rotate_with: list[str] | None = None) -> dict:
    """A new version; `rotate_every`/`rotate_with` set the secret's rotation (kept when not given)."""
    from kms_cli.errors import UsageError

    if len(value) > MAX_VALUE:
        raise UsageError(f"the value is larger than {MAX_VALUE} bytes", hint="store files with `kms-cli encrypt`")
    full = vault.ns.full(name)
    with vault.operation("secret.put", full) as rec:
        changes = {k: v for k, v in (("every", rotate_every), ("with", rotate_with)) if v is not None}
        rec.version = _put_row(vault, full, value, ttl, tags, rotation=changes or None)
        return {"name": name, "version": rec.version}


def _put_row(vault, full: str, value: bytes, ttl: int | None, tags: dict[str, str] | None,
             rotation: dict | None = None, srec: SecretRecord | None = None) -> int:
    """Store a version. `rotation`: fields to merge into the secret's rotation; the next due time
    restarts from now whenever the secret has a schedule."""
    now = durations.now()
    srec = srec or rows.load_secret(vault, full) or rows.new_secret(full, now)
    current = (srec.rotation or {}) if not srec.deleted else {}
    if rotation:
        current.update(rotation)
    if current.get("every"):
        current["next"] = now + current["every"]
    srec.set_rotation(current or None)
    version = srec.last_version + 1
    if tags is None:
        prev = srec.version(vault, srec.last_version) if not srec.deleted else None
        tags = json.loads(prev["tags"]) if prev else {}
    expires = now + ttl if ttl else None
    srec.add_version(dict(
        name=full, version=version, value=vault.seal_secret(full, version, value, expires), created=now,
        expires=expires, tags=json.dumps(tags, sort_keys=True),
    ))
    srec.save(vault)
    return version


def get(vault, name: str, version: int | None = None, op: str = "secret.get") -> tuple[int, SecretValue]:
    full = vault.ns.full(name)
    with vault.operation(op, full, version, write=False) as rec:
        row = _current(vault, full, name, version)
        rec.version = row["version"]
        return row["version"], _open(vault, row, name)


def _open(vault, row, name: str) -> SecretValue:
    if row["expires"] is not None and row["expires"] <= durations.now():
        raise StateError(f"secret {name!r} version {row['version']} expired at {durations.rfc3339(row['expires'])}",
                         hint="put a new value with `kms-cli secret put`")
    return SecretValue(vault.open_secret(row["name"], row["version"], row["value"], row["expires"]))


def get_many(vault, refs: list[tuple[str, int | None]], op: str,
             check=None) -> dict[tuple[str, int | None], SecretValue]:
    """Several secrets read as one audited operation (exec, env, inject): all or nothing.

    `refs` are (name, version or None for the current one); the entry's target lists the
    full names, never values. With no refs (`--all` on an empty namespace) the entry still lands.
    """
    fulls = [(vault.ns.full(n), n, v) for n, v in refs]
    target = ",".join(dict.fromkeys(f for f, _, _ in fulls)) or (vault.ns.prefix or None)
    with vault.operation(op, target, write=False) as rec:
        out = {}
        for full, name, version in fulls:
            row = _current(vault, full, name, version)
            out[(name, version)] = _open(vault, row, name)
        rec.extra = {"count": len(out)}
        if check is not None:  # the caller's checks of what it will output: a refusal is this entry's result
            check(out)
        return out


def all_names(vault) -> list[str]:
    return [vault.ns.relative(s.name) for s in rows.load_secrets(vault, vault.ns.prefix)]


def _describe(vault, srow, vrow) -> dict:
    now = durations.now()
    return {
        "name": vault.ns.relative(srow["name"]),
        "version": vrow["version"],
        "created": durations.rfc3339(srow["created"]),
        "updated": durations.rfc3339(vrow["created"]),
        "expires": durations.rfc3339(vrow["expires"]),
        "expired": vrow["expires"] is not None and vrow["expires"] <= now,
        "tags": json.loads(vrow["tags"]),
    }


def list_secrets(vault, tags: dict[str, str] | None = None) -> list[dict]:
    with vault.operation("secret.list", vault.ns.prefix or None, write=False):
        out = []
        for srec in rows.load_secrets(vault, vault.ns.prefix):
            vrow = srec.version(vault, srec.last_version)
            if vrow is None:
                continue
            d = _describe(vault, srec.head, vrow)
            if tags and any(d["tags"].get(k) != v for k, v in tags.items()):
                continue
            out.append(d)
        return out


def history(vault, name: str) -> list[dict]:
    full = vault.ns.full(name)
    with vault.operation("secret.history", full, write=False):
        srec = _load(vault, full, name)
        now = durations.now()
        return [
            {"version": v["version"], "created": durations.rfc3339(v["created"]),
             "expires": durations.rfc3339(v["expires"]),
             "expired": v["expires"] is not None and v["expires"] <= now,
             "current": v["version"] == srec.last_version, "tags": json.loads(v["tags"])}
            for v in srec.versions(vault)
        ]


def remove(vault, name: str) -> dict:
    full = vault.ns.full(name)
    with vault.operation("secret.rm", full) as rec:
        srec = _load(vault, full, name)
        rec.version = srec.last_version
        count = len(srec.versions(vault))
        srec.delete(durations.now())
        srec.save(vault)
        return {"name": name, "versions_removed": count}


def import_items(vault, items: list[tuple[str, bytes]], ttl: int | None = None, progress=None) -> list[dict]:
    """Put every item in one transaction (a dotenv import lands whole or not at all);
    `progress(done, total)`, if given, is called after each item."""
    fulls = [(vault.ns.full(k), k, v) for k, v in items]
    with vault.operation("secret.import", vault.ns.prefix or None) as rec:
        out = []
        for full, name, value in fulls:
            version = _put_row(vault, full, value, ttl, None)
            vault.audit.append("secret.put", full, version)
            out.append({"name": name, "version": version})
            if progress is not None:
                progress(len(out), len(fulls))
        rec.extra = {"count": len(out)}
        return out


def export_all(vault, check=None) -> list[tuple[str, SecretValue]]:
    with vault.operation("secret.export", vault.ns.prefix or None, write=False) as rec:
        out = []
        for srec in rows.load_secrets(vault, vault.ns.prefix):
            vrow = srec.version(vault, srec.last_version)
            if vrow is None:
                continue
            name = vault.ns.relative(srec.name)
            out.append((name, _open(vault, vrow, name)))
        rec.extra = {"count": len(out)}
        if check is not None:  # as get_many: the caller's refusal is this entry's result
            check(out)
        return out


# -- rotation: generated values and outside programs -----------------------------------------

DEFAULT_LENGTH = 32
MAX_LENGTH = 4096


def _new_value(vault, srec: SecretRecord, name: str, length: int | None, charset: str | None,
               run_hook) -> tuple[str, bytes, dict]:
    """(how, value, rotation changes): the outside program's value for a secret that names one
    (unless a generator is asked for), else a random value from the OS CSPRNG."""
    from kms_cli.crypto.primitives import random_text
    from kms_cli.errors import UsageError

    rot = srec.rotation or {}
    if rot.get("with") and length is None and charset is None:
        if run_hook is None:
            raise UsageError(f"secret {name!r} is rotated by an outside program that cannot run here")
        old = _open(vault, _current(vault, srec.name, name, None), name)
        value = run_hook(rot["with"], old.reveal())
        if not value or len(value) > MAX_VALUE:
            from kms_cli.errors import UnavailableError

            raise UnavailableError(f"the rotation program of {name!r} gave {'no value' if not value else 'a value over 1 MiB'}"
                                   "; the secret is unchanged")
        return "program", value, {}
    charset = charset or rot.get("charset") or "alnum"
    length = length or rot.get("length") or DEFAULT_LENGTH
    if not 1 <= length <= MAX_LENGTH:
        raise UsageError(f"--length must be from 1 to {MAX_LENGTH}")
    return "generated", random_text(length, charset).encode(), {"charset": charset, "length": length}


def rotate(vault, name: str, *, length: int | None = None, charset: str | None = None, every: int | None = None,
           run_hook=None) -> dict:
    """A new version with a fresh value (generated, or from the secret's outside program); keeps
    its tags and its TTL's length. `every` sets (or changes) its schedule."""
    full = vault.ns.full(name)
    with vault.operation("secret.rotate", full) as rec:
        srec = _load(vault, full, name)
        how, value, changes = _new_value(vault, srec, name, length, charset, run_hook)
        if every is not None:
            changes["every"] = every
        prev = srec.version(vault, srec.last_version)
        ttl = int(prev["expires"] - prev["created"]) if prev and prev["expires"] else None
        rec.version = _put_row(vault, full, value, ttl, None, rotation=changes, srec=srec)
        rec.extra = {"by": how}
        return {"name": name, "version": rec.version, "by": how}


def due(vault, now: float) -> list[str]:
    """Names (relative) of the live secrets whose schedule has elapsed."""
    out = []
    with vault.store.read():
        for srec in rows.load_secrets(vault, vault.ns.prefix):
            rot = srec.rotation or {}
            if rot.get("every") and rot.get("next") is not None and rot["next"] <= now:
                out.append(vault.ns.relative(srec.name))
    return out


def rotate_due(vault, *, dry_run: bool = False, run_hook=None) -> list[dict]:
    """Rotate every due secret, each in its own audited operation (one failing program leaves the
    others rotated and is reported in its action: `error`, `exit`)."""
    from kms_cli.errors import KmsError

    names = due(vault, durations.now())
    if dry_run:
        with vault.operation("secret.rotate-due", vault.ns.prefix or None, write=False, housekeeping=False) as rec:
            rec.extra = {"dry_run": True, "due": len(names)}
        return [{"name": n, "action": "rotate"} for n in names]
    actions = []
    for n in names:
        try:
            actions.append({"action": "rotate", **rotate(vault, n, run_hook=run_hook)})
        except KmsError as exc:
            actions.append({"action": "rotate", "name": n, "error": exc.message, "exit": exc.exit_code})
    return actions
