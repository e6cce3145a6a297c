"""Backup and restore of a vault file: consistent sealed copies out, checked copies in.

Backup: the store copies the database in one read snapshot (SQLite's online backup API),
so it is consistent while other processes write. The copy is just
the database: it stays sealed and opens only with the vault's master key sources.
It is written 0600 to a temporary file beside OUT, fsynced, then renamed.

Backup and its audit entry: the copy is taken first and the `vault.backup` entry
(detail: the head seq the copy holds) is appended after it; OUT appears only once
the entry is committed, so a backup never exists without its entry. The backup
therefore holds the chain up to just before its own entry.

Restore: FILE is copied beside the vault and every check runs on that copy (FILE
itself is never written): it must open as a kms-cli vault, unlock with this
invocation's master key sources, pass the store's integrity check, audit verification,
and authentication of every sealed key and secret row. Only then is a
`vault.restore` entry appended to the copy and the copy swapped in. Restoring over an
existing vault needs `force`; a backup of another vault is allowed then, and reported.

The swap is crash-safe, and a restore killed at any point is finished or rolled back by the
next command that opens the vault: see `kms_cli/store/swap.py` (journal, .bak names, recovery,
and the KMS_CLI_TEST_CRASH_AT test hook).
"""

from __future__ import annotations

import os

from kms_cli.errors import (AlreadyExistsError, IntegrityError, KmsError, NotFoundError, UnavailableError,
                            UsageError)
from kms_cli.store import peek_vault_id
from kms_cli.store.swap import (DB_COMPANIONS, cleanup_after_restore, fsync_dir, fsync_path,  # noqa: F401
                                journal_path, recover_interrupted_restore, remove_db, restore_leftovers, swap,
                                unlink)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _temp_beside(path: str, prefix: str) -> str:
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NotFoundError(f"no such directory: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o600)
    return tmp


# -- backup --------------------------------------------------------------------------------

def backup(vault, out: str) -> dict:
    """Write a consistent, sealed copy of the open vault to `out` (0600, atomically)."""
    if out in (None, "", "-"):
        raise UsageError("backup needs a file: -o FILE", hint="the backup is a database, not a stream")
    if _same_file(out, vault.store.location):
        raise UsageError("the backup file is the vault itself")
    from kms_cli import leftovers

    # SIGTERM, SIGHUP, SIGPIPE end the backup like ^C (the copy and its journal removed);
    # after a SIGKILL the next kms-cli command removes them (the marker below).
    with leftovers.guard():
        tmp = _temp_beside(out, ".kms-cli-backup-")
        marker = None
        committed = False
        try:
            marker = leftovers.register([(tmp, "file")], companions=DB_COMPANIONS)
            with vault.operation("vault.backup", None, write=False) as rec:
                head, size = _copy(vault.store, tmp)
                rec.extra = {"head": head}
            os.replace(tmp, out)
            committed = True
            fsync_dir(os.path.dirname(os.path.abspath(out)))
        finally:
            with leftovers.deferred():
                if not committed:
                    remove_db(tmp)
                if marker is not None:
                    marker.release()
    return {"file": out, "vault_id": vault.vault_id.hex(), "head": head, "bytes": size}


def _copy(store, tmp: str) -> tuple[int, int]:
    """The store's consistent copy into `tmp`, fsynced; returns the copied audit head seq and size."""
    head = store.backup_to(tmp)
    fsync_path(tmp)
    return head, os.path.getsize(tmp)


# -- restore -------------------------------------------------------------------------------

def restore(options, file: str, force: bool = False) -> dict:
    """Check the backup `file`, then replace (or create) the vault `options.path` with it."""
    path = options.path
    from kms_cli.locations import is_uri

    if is_uri(path):
        raise UsageError("restore writes a vault file; a PostgreSQL vault is filled by `vault copy`",
                         hint=f"kms-cli vault copy {file} 'postgresql://...' (into a new vault; the backup "
                              "opens with its own master key sources)")
    recover_interrupted_restore(path)
    if not os.path.isfile(file):
        raise NotFoundError(f"no such file: {file}")
    exists = os.path.exists(path)
    if exists and _same_file(file, path):
        raise UsageError("the backup file is the vault itself")
    if exists and not force:
        raise AlreadyExistsError(f"a vault already exists at {path}",
                                 hint="pass --force to replace it (the old one is kept as "
                                      f"{os.path.basename(path)}.bak-<time> until the next successful command)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    old_id = peek_vault_id(path) if exists else None
    from kms_cli import leftovers

    with leftovers.guard():
        tmp = _temp_beside(path, ".kms-cli-restore-")
        marker = None
        swapped = False
        try:
            marker = leftovers.register([(tmp, "file")], companions=DB_COMPANIONS)
            import shutil

            try:
                shutil.copyfile(file, tmp)
            except OSError as exc:
                raise UnavailableError(f"cannot read {file}: {exc.strerror}") from exc
            info = _check_and_seal(options, tmp, file, old_id)
            kept = swap(path, tmp)
            swapped = True
        finally:
            with leftovers.deferred():
                if not swapped:
                    remove_db(tmp)
                if marker is not None:
                    marker.release()
    info.update(vault=path, kept=kept, replaced_vault_id=old_id)
    return info


class _Refused(IntegrityError):
    """The backup failed a check (exit 5); nothing was changed."""


def _refuse(file: str, why: str) -> IntegrityError:
    return _Refused(f"refusing to restore {file}: {why}", hint="nothing was changed")


def _check_and_seal(options, tmp: str, file: str, old_id: str | None) -> dict:
    """Open the copy as a vault, check everything, append the restore entry, and fold its WAL in."""
    import copy

    from kms_cli.vault.core import Vault

    copy_options = copy.copy(options)
    copy_options.path = tmp
    try:
        bv = Vault.open(copy_options)
    except UnavailableError:
        raise
    except KmsError as exc:  # not a vault, damaged, or other master keys: foreign
        raise _refuse(file, f"it is not a backup this master key opens: {exc}") from None
    try:
        try:
            problems = bv.store.integrity_problems()
            if problems:
                raise _refuse(file, "the database's integrity check failed: " + "; ".join(problems[:3]))
            try:
                result = bv.audit.verify()
            except IntegrityError as exc:
                raise _refuse(file, f"its {exc}") from None
            sealed = _authenticate_rows(bv, file)
        except _Refused:
            raise
        except IntegrityError as exc:  # the store found the database itself damaged
            raise _refuse(file, f"the database is damaged: {exc}") from None
        vault_id = bv.vault_id.hex()
        with bv.operation("vault.restore") as rec:
            rec.extra = {"head": result.last_seq, **({"replaced": old_id} if old_id else {})}
        bv.store.seal_for_move()
    finally:
        bv.close()
    if os.path.exists(tmp + "-wal") and os.path.getsize(tmp + "-wal"):
        raise UnavailableError("the restored copy still has a write-ahead log")
    unlink(tmp + "-wal")
    unlink(tmp + "-shm")
    fsync_path(tmp)
    return {"vault_id": vault_id, "entries": result.entries, "head": result.last_seq, "sealed_rows": sealed,
            "other_vault": bool(old_id) and old_id != vault_id}


def _authenticate_rows(bv, file: str) -> int:
    """Open every sealed key version and secret value: integrity_check cannot see a flipped byte in a blob."""
    algorithms = {r["name"]: r["algorithm"] for r in bv.store.keys()}
    opened = []  # (what, thunk): checked below, every one
    for v in bv.store.all_key_versions():
        alg = algorithms.get(v["name"])
        if alg is None:
            raise _refuse(file, f"a key version of {v['name']} has no key")
        if v["material"] is not None:
            opened.append(lambda v=v, alg=alg: bv.open_material(v["name"], v["version"], alg, v["material"]))
        if v["public"] is not None:
            opened.append(lambda v=v, alg=alg: bv.open_material(v["name"], v["version"], alg, v["public"],
                                                                kind="public"))
    for s in bv.store.all_secret_versions():
        opened.append(lambda s=s: bv.open_secret(s["name"], s["version"], s["value"], s["expires"]))
    for open_row in opened:
        try:
            open_row()
        except IntegrityError as exc:
            raise _refuse(file, str(exc)) from None
    return len(opened)
