"""Secrets as Vault's KV version 2 sees them (`serve`, spec section 10): versions with their times,
check-and-set writes, listings by folder. The HTTP shapes are in `kms_cli/server/kv.py`.

A kms-cli secret holds one value per version: KV's `data` is `{"value": ...}`. A version's TTL is
KV's `deletion_time` (the time it stops being readable); a read of an expired version is Vault's
read of a deleted version: no data, its metadata. `secret rm` is KV's metadata delete (every
version gone); kms-cli has no soft delete of one version.
"""

from __future__ import annotations

from kms_cli import durations
from kms_cli.errors import NotFoundError, StateError, UsageError
from kms_cli.secretvalue import SecretValue
from kms_cli.vault import rows, secrets


class CasMismatch(StateError):
    """options.cas did not match the secret's current version (Vault: 400)."""


def _version_info(row: dict, now: float) -> dict:
    return {"version": row["version"], "created": row["created"], "expires": row["expires"],
            "expired": row["expires"] is not None and row["expires"] <= now}


def read(vault, full: str, version: int | None) -> tuple[dict, SecretValue | None]:
    """(the version's metadata, its value, or None when it is expired: Vault's deleted version).
    A value that is not UTF-8 text is refused (a JSON string cannot carry it), in the entry too."""
    with vault.operation("secret.get", full, version, write=False) as rec:
        srec = rows.load_secret(vault, full)
        if srec is None or (srec.deleted and version is None):
            raise NotFoundError(f"no secret named {vault.ns.relative(full)!r}")
        n = version or srec.last_version
        row = srec.version(vault, n)
        if row is None:
            raise NotFoundError(f"secret {vault.ns.relative(full)!r} has no version {n}")
        rec.version = n
        info = _version_info(row, durations.now())
        if info["expired"]:
            rec.extra = {"expired": True}
            return info, None
        value = SecretValue(vault.open_secret(row["name"], n, row["value"], row["expires"]))
        if not value.is_utf8():
            raise UsageError(f"secret {vault.ns.relative(full)!r} version {n} is not UTF-8 text, so it cannot be a "
                             "JSON string: read it with `kms-cli secret get`")
        return info, value


def write(vault, full: str, value: bytes, cas: int | None) -> dict:
    """A new version (Vault's `options.cas`: 0 = only if the secret does not exist, N = only if its
    current version is N), checked and written in one transaction. Returns its metadata."""
    if len(value) > secrets.MAX_VALUE:
        raise UsageError(f"the value is larger than {secrets.MAX_VALUE} bytes")
    with vault.operation("secret.put", full) as rec:
        srec = rows.load_secret(vault, full)
        if cas is not None:
            current = 0 if srec is None or srec.deleted else srec.last_version
            rec.extra = {"cas": cas}
            if cas != current:
                raise CasMismatch("check-and-set parameter did not match the current version")
        srec = srec or rows.new_secret(full, durations.now())
        rec.version = secrets._put_row(vault, full, value, None, None, srec=srec)
        return _version_info(srec.version(vault, rec.version), durations.now())


def metadata(vault, full: str) -> dict:
    """The secret's versions and times (no value is opened)."""
    with vault.operation("secret.history", full, write=False):
        srec = rows.load_secret(vault, full)
        if srec is None or srec.deleted:
            raise NotFoundError(f"no secret named {vault.ns.relative(full)!r}")
        now = durations.now()
        versions = [_version_info(v, now) for v in srec.versions(vault)]
        return {"created": srec.head["created"], "updated": srec.head["updated"],
                "current_version": srec.last_version, "versions": versions}


def list_names(vault, prefix: str) -> list[str]:
    """Vault's LIST of a folder: the names directly inside `prefix` ("" or "a/b/"), sub-folders with
    a trailing `/`, sorted."""
    under = prefix.rstrip("/")
    with vault.operation("secret.list", under or None, write=False):
        out = set()
        for s in rows.load_secrets(vault, under):
            rest = s.name[len(under) + 1:] if under else s.name
            head, sep, _ = rest.partition("/")
            out.add(head + sep)
        return sorted(out)


def delete(vault, full: str) -> bool:
    """Every version of the secret removed (`secret rm`); False when there was no such secret."""
    try:
        secrets.remove(vault, vault.ns.relative(full))
    except NotFoundError:
        return False
    return True
