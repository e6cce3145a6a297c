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
`vault.restore` entry appended to the copy and the copy swapped in. Restoring over an
existing vault needs `force`; a backup of another vault is allowed then, and reported.

The swap is crash-safe: at every instant the vault path holds the old vault or the new
one, never neither. A journal `<vault>.restore-journal` (locked with flock(2) by the
restoring process for its lifetime) is written first, naming the checked copy (its
inode) and the name the old vault is kept under. Then the old vault (its WAL
checkpointed first; refused while another process holds it open) gets a second name,
`<vault>.bak-<UTC time>`, by a hard link (a copy where links are not supported), as does
any -wal; the -wal and stale -shm are removed from the vault path, so no leftover WAL is
ever applied to the restored file; and the copy is renamed over the vault path, rename(2)
replacing the old name atomically: that rename is the commit. The journal is removed last.
The .bak files are deleted by `cleanup_after_restore`, called when a vault is next unlocked
successfully (never while a journal exists).

A restore killed at any point is finished or rolled back by the next command that opens the
vault (`recover_interrupted_restore`, run before the vault file is opened, once the journal
is no longer locked): if the vault path holds the copy's inode, the restore had committed and
only the journal is removed; otherwise the old vault is still in place and the rest is undone
(its WAL put back, the .bak names and the copy removed). Signals other than SIGKILL are held
back during the swap, and during the checks they end the restore like ^C, removing the copy.

Test hook (harmless, for crash tests only): KMS_CLI_TEST_CRASH_AT=restore:<step> makes the
restoring process SIGKILL itself at that step of the swap: `journal` (journal written),
`kept` (old vault linked to its .bak name), `wal` (its -wal/-shm removed from the vault path:
the old "between the two renames"), `replaced` (copy renamed into place, journal still there).
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


_DB_COMPANIONS = ("-wal", "-shm", "-journal")


def _remove_db(path: str) -> None:
    for suffix in ("", *_DB_COMPANIONS):
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
    from kms_cli import leftovers

    # SIGTERM, SIGHUP, SIGPIPE end the backup like ^C (the copy and its journal removed);
    # after a SIGKILL the next kms-cli command removes them (the marker below).
    with leftovers.guard():
        tmp = _temp_beside(out, ".kms-cli-backup-")
        marker = None
        committed = False
        try:
            marker = leftovers.register([(tmp, "file")], companions=_DB_COMPANIONS)
            with vault.operation("vault.backup", None, write=False) as rec:
                head, size = _copy(vault.store.conn, tmp)
                rec.extra = {"head": head}
            os.replace(tmp, out)
            committed = True
            _fsync_dir(os.path.dirname(os.path.abspath(out)))
        finally:
            with leftovers.deferred():
                if not committed:
                    _remove_db(tmp)
                if marker is not None:
                    marker.release()
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
    old_id = _peek_vault_id(path) if exists else None
    from kms_cli import leftovers

    with leftovers.guard():
        tmp = _temp_beside(path, ".kms-cli-restore-")
        marker = None
        swapped = False
        try:
            marker = leftovers.register([(tmp, "file")], companions=_DB_COMPANIONS)
            import shutil

            try:
                shutil.copyfile(file, tmp)
            except OSError as exc:
                raise UnavailableError(f"cannot read {file}: {exc.strerror}") from exc
            info = _check_and_seal(options, tmp, file, old_id)
            kept = _swap(path, tmp)
            swapped = True
        finally:
            with leftovers.deferred():
                if not swapped:
                    _remove_db(tmp)
                if marker is not None:
                    marker.release()
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


def journal_path(path: str) -> str:
    return path + ".restore-journal"


def _crash_point(step: str) -> None:
    """Test hook: KMS_CLI_TEST_CRASH_AT=restore:<step> SIGKILLs this process here (see the docstring)."""
    if os.environ.get("KMS_CLI_TEST_CRASH_AT") == "restore:" + step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _lock(fd: int, block: bool) -> bool:
    """flock(2) the journal; True when held (or when the platform has no flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock: the recorded process identity decides
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _link_or_copy(src: str, dst: str) -> None:
    """Give the file `src` the second name `dst` (which must not exist): a hard link, else a copy."""
    try:
        os.link(src, dst)
        return
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
    import shutil

    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with open(src, "rb") as f, os.fdopen(fd, "wb", closefd=False) as out:
            shutil.copyfileobj(f, out, 1 << 20)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(dst)
        raise
    os.close(fd)


def _swap(path: str, tmp: str) -> str | None:
    """Put the checked copy `tmp` at `path`, keeping the old vault as .bak: crash-safe (see above)."""
    import json

    from kms_cli import leftovers

    directory = os.path.dirname(os.path.abspath(path))
    kept = None
    if os.path.exists(path):
        _quiesce(path)
        kept = f"{path}.bak-{time.strftime(_BAK_TIME, time.gmtime(durations.now()))}"
        n = 1
        while os.path.lexists(kept) or os.path.lexists(kept + "-wal"):
            kept = f"{path}.bak-{time.strftime(_BAK_TIME, time.gmtime(durations.now()))}-{n}"
            n += 1
    st = os.stat(tmp)
    journal = journal_path(path)
    with leftovers.deferred():  # no signal stops the swap half-way (SIGKILL: the journal)
        try:
            fd = os.open(journal, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise UnavailableError("another restore of this vault is in progress",
                                   hint=f"if none is, the next command finishes it ({journal})") from None
        try:
            _lock(fd, block=True)
            doc = {"procs": [leftovers.identity()], "vault": path, "tmp": tmp, "new": [st.st_dev, st.st_ino],
                   "kept": kept}
            data = json.dumps(doc).encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            _fsync_dir(directory)
            if os.fstat(fd).st_nlink == 0:  # a recovery took it for a dead restore's before it was locked
                raise UnavailableError("another command interfered with the restore", hint="retry the restore")
            _crash_point("journal")
            try:
                if kept:
                    _link_or_copy(path, kept)
                    if os.path.exists(path + "-wal"):
                        _link_or_copy(path + "-wal", kept + "-wal")  # stays with its database
                    _fsync_dir(directory)
                _crash_point("kept")
                _unlink(path + "-wal")  # the old vault's WAL (empty once checkpointed), or a stale one
                _unlink(path + "-shm")
                _crash_point("wal")
                os.replace(tmp, path)  # the commit: atomic, the old name replaced in one step
                _fsync_dir(directory)
            except BaseException:
                _roll_back(doc)
                _unlink(journal)
                raise
            _crash_point("replaced")
            _unlink(journal)
            _fsync_dir(directory)
        finally:
            os.close(fd)  # releases the lock
    return kept


def _same_inode(path: str, dev_ino) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return [st.st_dev, st.st_ino] == list(dev_ino)


def _roll_back(doc: dict) -> None:
    """Undo an uncommitted swap: the old vault (never moved from its path) gets its WAL back."""
    path, kept, tmp = doc["vault"], doc.get("kept"), doc.get("tmp")
    if kept:
        if not os.path.exists(path) and os.path.exists(kept):  # cannot happen with this code; be safe
            os.rename(kept, path)
        if os.path.exists(kept + "-wal"):
            if os.path.exists(path + "-wal"):
                _unlink(kept + "-wal")
            else:
                os.rename(kept + "-wal", path + "-wal")
        if os.path.exists(path):
            _unlink(kept)
    if tmp and _same_inode(tmp, doc.get("new", ())):
        _remove_db(tmp)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def recover_interrupted_restore(path: str) -> str | None:
    """Finish or roll back a restore of `path` whose process died; None if there is none to handle.

    Returns "finished" (the copy had been renamed into place) or "rolled back" (the old
    vault is in place, as before the restore). A journal still locked by a live restore
    is left alone.
    """
    import json

    from kms_cli import leftovers

    journal = journal_path(path)
    try:
        fd = os.open(journal, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _lock(fd, block=False):
            return None  # a restore in progress
        if os.fstat(fd).st_nlink == 0:
            return None  # another process handled it meanwhile
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        try:
            doc = json.loads(data)
            procs = doc["procs"]
            doc["vault"] = path
        except (ValueError, KeyError, TypeError):
            _unlink(journal)  # written only partly: nothing had been done yet
            return "rolled back"
        try:
            import fcntl  # noqa: F401 - with flock, holding the lock proves the restore's process gone
        except ImportError:  # pragma: no cover
            if not all(leftovers.gone(p) for p in procs):
                return None
        if _same_inode(path, doc.get("new", ())):
            outcome = "finished"
        else:
            _roll_back(doc)
            outcome = "rolled back"
        _unlink(journal)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
        return outcome
    finally:
        os.close(fd)


def cleanup_after_restore(path: str) -> list[str]:
    """Delete the `<vault>.bak-<time>` files a restore left (called after a successful unlock)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    base = os.path.basename(path)
    if os.path.lexists(journal_path(path)):
        return []  # a restore is in progress, or one was interrupted: its .bak may still be needed
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
