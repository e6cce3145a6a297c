"""`vault copy SRC DST`: a whole vault from one backend to another (a file and PostgreSQL, either way).

The copy is the same vault: same vault id, slots, keys, secrets, policies and audit chain, rows
copied as they are (every MAC binds the vault id, not where the vault lives). It opens with the
same master key sources and identities as the source.

Order of events:
1. DST is refused if it holds a vault already (exit 8), before anything is unlocked.
2. SRC is opened and unlocked the usual way (its slots, the agent).
3. Inside one read snapshot of SRC, DST is created and every table streamed into it in one write
   transaction, `store/copy.py`'s batches at a time: memory stays bounded whatever the size.
4. DST is checked with SRC's root key before success is reported: its set of slots, and its whole
   audit chain (every entry's MAC and the head's seal), and the number of rows per table. A copy
   that fails a check is removed (the file deleted, or the schema dropped) and the error raised.
5. The `vault.copy` entry (detail: the destination and the head seq copied) is appended to SRC's
   log after the copy, as `backup` does: DST holds the chain up to just before it.

A file DST is built as a temporary file beside it and linked into place only after the checks, so
a killed copy never leaves a half vault at DST (the temporary file is removed on any error). A
PostgreSQL DST gets its schema in one transaction and its rows in a second one: a SIGKILL between
the two leaves an empty schema without a vault id, which never opens as a vault and which
`vault copy` refuses as an existing DST until it is dropped (`init --force` on it, then copy
again, or DROP SCHEMA).
"""

from __future__ import annotations

import copy as _copy

from kms_cli.errors import AlreadyExistsError, IntegrityError, KmsError, UsageError
from kms_cli.locations import canonical, is_uri


def _shown(location: str) -> str:
    return canonical(location) if is_uri(location) else location


def copy_vault(options, src: str, dst: str, progress=None) -> dict:
    """Copy the vault at `src` to the new vault `dst`; returns what was copied."""
    from kms_cli.store import check_location, create_store, vault_exists
    from kms_cli.store.copy import copy_rows
    from kms_cli.vault.core import Vault, _timeout
    from kms_cli.vault.rows import verify_slot_set

    check_location(src)
    check_location(dst)
    if canonical(src) == canonical(dst):
        raise UsageError("SRC and DST are the same vault")
    timeout = _timeout(options)
    if vault_exists(dst, timeout):
        raise AlreadyExistsError(f"a vault already exists at {_shown(dst)}",
                                 hint="vault copy never replaces a vault: choose a new DST, or remove that one first")
    src_options = _copy.copy(options)
    src_options.path = src
    vault = Vault.open(src_options)
    try:
        with vault.operation("vault.copy", _shown(dst), write=False) as rec:
            # a file copy is built beside DST and linked into place only once checked (a killed copy
            # leaves no half vault at DST); a database copy commits in one transaction
            staging = dst if is_uri(dst) else _temp_beside(dst)
            target = create_store(staging, force=staging != dst, timeout=timeout)
            try:
                counts = copy_rows(vault.store, target, progress)
                head = vault.store.audit_head()
                _check(vault, target, counts, verify_slot_set)
                target.seal_for_move()
                target.close()
                if staging != dst:
                    _link_into_place(staging, dst)
            except BaseException:
                target.destroy()
                raise
            rec.extra = {"to": _shown(dst), "head": head[0] if head else 0}
    finally:
        vault.close()
    return {"from": _shown(src), "to": _shown(dst), "vault_id": vault.vault_id.hex(),
            "head": head[0] if head else 0, "rows": counts}


def _temp_beside(path: str) -> str:
    import os
    import tempfile

    from kms_cli.errors import NotFoundError

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NotFoundError(f"no such directory: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=".kms-cli-copy-", suffix=".tmp", dir=directory)
    os.close(fd)
    return tmp


def _link_into_place(tmp: str, dst: str) -> None:
    """`dst` appears whole or not at all, and a file created there meanwhile is never replaced."""
    import os

    from kms_cli.store.swap import fsync_dir, fsync_path

    fsync_path(tmp)
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise AlreadyExistsError(f"a file appeared at {dst} during the copy: it was left alone") from None
    os.unlink(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def _check(vault, target, counts: dict, verify_slot_set) -> None:
    """DST opens with SRC's root key: its slot set and its whole audit chain verify, and it holds
    as many rows per table as were copied."""
    from kms_cli.audit import AuditLog

    try:
        with target.read():
            verify_slot_set(target, vault.vault_id, vault.subkeys.slot)
            AuditLog(target, vault.subkeys.audit, vault.audit.actor).verify()
            for table, n in counts.items():
                if sum(len(b) for b in target.export_rows(table)) != n:
                    raise IntegrityError(f"the copy's {table} table does not hold the {n} rows copied")
    except KmsError as exc:
        raise IntegrityError(f"the copy failed its check and was removed: {exc}") from None
