"""Backup and restore of a vault file: consistent sealed copies out, checked copies in.

Backup: SQLite's online backup API copies the database in one step, which is one
read snapshot, so it is consistent while other processes write. The copy is just
the database: it stays sealed and opens only with the vault's master key sources.
It is written 0600 to a temporary file beside OUT, fsynced, then renamed.

Backup and its audit entry: the copy is taken first and the `vault.backup` entry
(detail: the head seq the copy holds) is appended after it; OUT appears only once
the entry is committed, so a backup never exists without its entry. The backup
therefore holds the chain up to just before its own entry.

Restore: FILE is copied beside the vault and every check runs on that copy (FILE
itself is never written): it must open as a kms-cli vault, unlock with this
invocation's master key sources, pass `PRAGMA integrity_check`, audit verification,
and authentication of every sealed key and secret row. Only then is a
`vault.restore` entry appended to the copy and the copy swapped in: the old vault
(its WAL checkpointed first; refused while another process holds it open) is
renamed to `<vault>.bak-<UTC time>` together with any -wal, the stale -shm is
removed, and the copy is renamed into place, so no leftover WAL is ever applied
to the restored file. The .bak file is deleted by `cleanup_after_restore`, called
when a vault is next unlocked successfully. Restoring over an existing vault needs
`force`; a backup of another vault is allowed then, and reported.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time

from kms_cli import durations
from kms_cli.errors import (AlreadyExistsError, IntegrityError, KmsError, NotFoundError, UnavailableError,
                            UsageError)

_BAK_TIME = "%Y%m%dT%H%M%SZ"


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    try:
        _fsync_path(directory)
    except OSError:  # some filesystems refuse fsync on a directory
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        _unlink(path + suffix)


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
    if _same_file(out, vault.store.path):
        raise UsageError("the backup file is the vault itself")
    tmp = _temp_beside(out, ".kms-cli-backup-")
    try:
        with vault.operation("vault.backup", None, write=False) as rec:
            head, size = _copy(vault.store.conn, tmp)
            rec.extra = {"head": head}
        os.replace(tmp, out)
        _fsync_dir(os.path.dirname(os.path.abspath(out)))
    except BaseException:
        _remove_db(tmp)
        raise
    return {"file": out, "vault_id": vault.vault_id.hex(), "head": head, "bytes": size}


def _copy(src: sqlite3.Connection, tmp: str) -> tuple[int, int]:
    """Online backup in one step (one read snapshot); returns the copied audit head seq and size."""
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        try:
            src.backup(dst)
        except sqlite3.Error as exc:
            raise UnavailableError(f"the backup could not be written: {exc}") from exc
        row = dst.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
    finally:
        dst.close()
    _unlink(tmp + "-journal")
    _fsync_path(tmp)
    return (row[0] if row else 0), os.path.getsize(tmp)


# -- restore -------------------------------------------------------------------------------

def restore(options, file: str, force: bool = False) -> dict:
    """Check the backup `file`, then replace (or create) the vault `options.path` with it."""
    path = options.path
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
    old_id = _peek_vault_id(path) if exists else None
    tmp = _temp_beside(path, ".kms-cli-restore-")
    try:
        import shutil

        try:
            shutil.copyfile(file, tmp)
        except OSError as exc:
            raise UnavailableError(f"cannot read {file}: {exc.strerror}") from exc
        info = _check_and_seal(options, tmp, file, old_id)
        kept = _swap(path, tmp)
    except BaseException:
        _remove_db(tmp)
        raise
    info.update(vault=path, kept=kept, replaced_vault_id=old_id)
    return info


def _peek_vault_id(path: str) -> str | None:
    """The id of the vault at `path`, read without unlocking (None if it is unreadable or damaged)."""
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            row = conn.execute("SELECT v FROM meta WHERE k = 'vault_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _refuse(file: str, why: str) -> IntegrityError:
    return IntegrityError(f"refusing to restore {file}: {why}", hint="nothing was changed")


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
    except (KmsError, sqlite3.DatabaseError) as exc:  # not a vault, damaged, or other master keys: foreign
        raise _refuse(file, f"it is not a backup this master key opens: {exc}") from None
    try:
        try:
            problems = [r[0] for r in bv.store.conn.execute("PRAGMA integrity_check(20)").fetchall()]
            if problems != ["ok"]:
                raise _refuse(file, "SQLite integrity_check failed: " + "; ".join(problems[:3]))
            try:
                result = bv.audit.verify()
            except IntegrityError as exc:
                raise _refuse(file, f"its {exc}") from None
            sealed = _authenticate_rows(bv, file)
        except sqlite3.DatabaseError as exc:
            raise _refuse(file, f"the database is damaged: {exc}") from None
        vault_id = bv.vault_id.hex()
        with bv.operation("vault.restore") as rec:
            rec.extra = {"head": result.last_seq, **({"replaced": old_id} if old_id else {})}
        busy = bv.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise UnavailableError("could not fold the restored copy's WAL into it")
    finally:
        bv.close()
    if os.path.exists(tmp + "-wal") and os.path.getsize(tmp + "-wal"):
        raise UnavailableError("the restored copy still has a write-ahead log")
    _unlink(tmp + "-wal")
    _unlink(tmp + "-shm")
    _fsync_path(tmp)
    return {"vault_id": vault_id, "entries": result.entries, "head": result.last_seq, "sealed_rows": sealed,
            "other_vault": bool(old_id) and old_id != vault_id}


def _authenticate_rows(bv, file: str) -> int:
    """Open every sealed key version and secret value: integrity_check cannot see a flipped byte in a blob."""
    algorithms = {r["name"]: r["algorithm"] for r in bv.store.all("SELECT name, algorithm FROM keys")}
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


def _quiesce(path: str) -> None:
    """Fold the old vault's WAL into its file; refuse while another process holds it open."""
    try:
        conn = sqlite3.connect(path, timeout=2, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.DatabaseError:
        return  # a damaged vault is being replaced: move it aside as it is, WAL included
    finally:
        conn.close()
    if busy:
        raise UnavailableError("the vault is in use by another process", hint="stop it and retry the restore")


def _swap(path: str, tmp: str) -> str | None:
    """Move the old vault (and its WAL) aside, then rename the checked copy into place."""
    directory = os.path.dirname(os.path.abspath(path))
    kept = None
    if os.path.exists(path):
        _quiesce(path)
        kept = f"{path}.bak-{time.strftime(_BAK_TIME, time.gmtime(durations.now()))}"
        n = 1
        while os.path.exists(kept):
            kept = f"{path}.bak-{time.strftime(_BAK_TIME, time.gmtime(durations.now()))}-{n}"
            n += 1
        os.rename(path, kept)
        if os.path.exists(path + "-wal"):
            os.rename(path + "-wal", kept + "-wal")  # stays with its database, never with the new one
    else:
        _unlink(path + "-wal")  # a stale WAL of a vault that is gone
    _unlink(path + "-shm")
    try:
        os.rename(tmp, path)
    except OSError:
        if kept:
            os.rename(kept, path)
            if os.path.exists(kept + "-wal"):
                os.rename(kept + "-wal", path + "-wal")
        raise
    _fsync_dir(directory)
    return kept


def cleanup_after_restore(path: str) -> list[str]:
    """Delete the `<vault>.bak-<time>` files a restore left (called after a successful unlock)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    base = os.path.basename(path)
    pattern = re.compile(re.escape(base) + r"\.bak-\d{8}T\d{6}Z(?:-\d+)?(?:-wal|-shm)?\Z")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith(base) and pattern.match(name):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed
