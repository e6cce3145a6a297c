"""Bulk rewrap (`rewrap --in-place`): the key part, for a batch of ciphertext headers at once.

The CLI (`cli/bulk_rewrap.py`) walks the files, reads each header and rewrites the files; this
module decides for each header whether the file is this vault's and whether its key has a newer
primary version, and for those that have one unwraps the data key with the version that wrapped
it and wraps it again with the primary, exactly as `data.rewrap` does for one stream: only the
header's `version` and `wrap` change, the payload is never decrypted (see `envelope`).

Outcomes, per header:
  SKIPPED  not a kms-cli ciphertext, another vault's, a key outside the namespace, or a public-key
           file (`encrypt --public-key`) to a key this vault does not hold: nothing to do here
  CURRENT  already wrapped by its key's primary version (not unwrapped: nothing is done with it)
  STALE    rewrapped: `new_header` holds the header to write before the unchanged payload
  FAILED   `error` says why: the wrapped data key failed authentication, the header names a key or
           version this vault does not have (exit 5, as for `rewrap`), or the key's state forbids it
           (a revoked, destroyed or past-grace version, a disabled key: exit 6)

Audit, fail-closed: the entries of a batch are durable before `rewrap_headers` returns, and the
caller replaces no file before that. One entry `rewrap` per batch and (key, from version) that
rewrapped anything (extra: from_version, to_version, the number of files, in_place, and dry_run
when it only checked), and one error entry per file that failed (a group whose key version cannot
be used gets one error entry for the group). An entry per file would cost a write transaction (a
sync) per file; the count in one entry per batch keeps 100,000 files to a few hundred.
"""

from __future__ import annotations

from kms_cli import envelope
from kms_cli.errors import IntegrityError, KmsError, NotFoundError
from kms_cli.vault import keys, rows
from kms_cli.vault.core import OpRecord
from kms_cli.vault.data import NO_VAULT, _public_of, _unwrap_dek, _wrap_dek

SKIPPED, CURRENT, STALE, FAILED = "skipped", "current", "stale", "failed"


class Outcome:
    __slots__ = ("status", "new_header", "error")

    def __init__(self, status: str, new_header: bytes | None = None, error: KmsError | None = None):
        self.status, self.new_header, self.error = status, new_header, error


def read_header(stream) -> envelope.Header | None:
    """The header at the start of `stream` (left at the payload), or None when it is not a
    kms-cli ciphertext (wrong magic, unknown format or suite, truncated, malformed)."""
    try:
        return envelope.read_header(stream)
    except IntegrityError:
        return None


def _locate(vault, header: envelope.Header) -> tuple[str, int] | None:
    """(full key name, version) of a header of this vault's, or None when it is not this vault's."""
    if header.vault_id == NO_VAULT and not header.name and header.version == 0:
        if len(header.wrap) < 32:
            return None
        found = [r for r in vault.store.key_versions_by_fingerprint(header.wrap[:32].hex())
                 if vault.ns.contains(r["name"])]
        return (found[0]["name"], found[0]["version"]) if found else None
    if header.vault_id != vault.vault_id or not vault.ns.contains(header.name):
        return None
    return header.name, header.version


def rewrap_headers(vault, headers: list, *, dry_run: bool = False) -> list[Outcome]:
    """An Outcome per header (None for a file that is not a ciphertext). With `dry_run` the data
    keys are unwrapped (so a header that fails authentication is reported) but not wrapped again."""
    out: list[Outcome | None] = [None] * len(headers)
    groups: dict[tuple[str, int], list[int]] = {}
    entries: list[tuple[OpRecord, KmsError | None]] = []
    with vault.store.read():
        primaries: dict[str, int | None] = {}
        for i, h in enumerate(headers):
            where = None if h is None else _locate(vault, h)
            if where is None:
                out[i] = Outcome(SKIPPED)
                continue
            full, version = where
            if full not in primaries:
                k = rows.load_key(vault, full)
                primaries[full] = None if k is None else k.row["primary_version"]
            if primaries[full] is None:
                exc = IntegrityError("the ciphertext's key is not in this vault")
                out[i] = Outcome(FAILED, error=exc)
                entries.append((OpRecord("rewrap", full, version), exc))
            elif version == primaries[full]:
                out[i] = Outcome(CURRENT)
            else:
                groups.setdefault((full, version), []).append(i)
        for (full, version), idx in groups.items():
            _rewrap_group(vault, full, version, [headers[i] for i in idx], idx, out, entries, dry_run)
    for rec, exc in entries:  # durable before the caller replaces any file
        vault.record(rec, exc, housekeeping=not dry_run)  # a dry run changes nothing but the log
    return out


def _rewrap_group(vault, full: str, version: int, headers, idx, out, entries, dry_run: bool) -> None:
    rec = OpRecord("rewrap", full, version)
    try:
        try:
            _, v, alg = keys.usable_version(vault, full, version, "rewrap")
            material = vault.open_material(full, v["version"], alg.name, v["material"])
            _, cur, _ = keys.usable_version(vault, full, None, "encrypt")
            new_material = public = None
            if not dry_run:
                new_material = vault.open_material(full, cur["version"], alg.name, cur["material"])
                public = _public_of(vault, full, cur, alg)
        except NotFoundError:
            raise IntegrityError("the ciphertext's key or version is not in this vault") from None
    except KmsError as exc:
        for i in idx:
            out[i] = Outcome(FAILED, error=exc)
        entries.append((rec, exc))
        return
    done = 0
    for i, h in zip(idx, headers):
        try:
            dek = _unwrap_dek(vault, alg, material, h, v["fingerprint"])
        except IntegrityError as exc:
            out[i] = Outcome(FAILED, error=exc)
            entries.append((OpRecord("rewrap", full, version), exc))
            continue
        new = None
        if not dry_run:
            if h.vault_id != NO_VAULT:
                h.version = cur["version"]
            h.wrap = _wrap_dek(vault, alg, new_material, dek, h, public)
            new = h.to_bytes()
        out[i] = Outcome(STALE, new)
        done += 1
    if done:
        rec.version = cur["version"]
        rec.extra = {"from_version": version, "to_version": cur["version"], "files": done, "in_place": True}
        if dry_run:
            rec.extra["dry_run"] = True
        entries.append((rec, None))
