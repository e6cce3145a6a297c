"""The crash-safe swap of a vault file for a checked copy, and the recovery of an interrupted one.

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
import time

from kms_cli import durations
from kms_cli.errors import UnavailableError

_BAK_TIME = "%Y%m%dT%H%M%SZ"


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    try:
        fsync_path(directory)
    except OSError:  # some filesystems refuse fsync on a directory
        pass


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


DB_COMPANIONS = ("-wal", "-shm", "-journal")


def remove_db(path: str) -> None:
    for suffix in ("", *DB_COMPANIONS):
        unlink(path + suffix)


def _quiesce(path: str) -> None:
    """Fold the old vault's WAL into its file; refuse while another process holds it open."""
    from kms_cli.store.sqlite import checkpoint_file

    if checkpoint_file(path) is False:
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
        unlink(dst)
        raise
    os.close(fd)


def swap(path: str, tmp: str) -> str | None:
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
            fsync_dir(directory)
            if os.fstat(fd).st_nlink == 0:  # a recovery took it for a dead restore's before it was locked
                raise UnavailableError("another command interfered with the restore", hint="retry the restore")
            _crash_point("journal")
            try:
                if kept:
                    _link_or_copy(path, kept)
                    if os.path.exists(path + "-wal"):
                        _link_or_copy(path + "-wal", kept + "-wal")  # stays with its database
                    fsync_dir(directory)
                _crash_point("kept")
                unlink(path + "-wal")  # the old vault's WAL (empty once checkpointed), or a stale one
                unlink(path + "-shm")
                _crash_point("wal")
                os.replace(tmp, path)  # the commit: atomic, the old name replaced in one step
                fsync_dir(directory)
            except BaseException:
                _roll_back(doc)
                unlink(journal)
                raise
            _crash_point("replaced")
            unlink(journal)
            fsync_dir(directory)
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
                unlink(kept + "-wal")
            else:
                os.rename(kept + "-wal", path + "-wal")
        if os.path.exists(path):
            unlink(kept)
    if tmp and _same_inode(tmp, doc.get("new", ())):
        remove_db(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


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
            unlink(journal)  # written only partly: nothing had been done yet
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
        unlink(journal)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
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

def restore_leftovers(path: str) -> list[str]:
    """What a restore kept beside `path` (`<vault>.bak-<time>` and its -wal/-shm), in name order."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = os.path.basename(path) + ".bak-"
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names]
