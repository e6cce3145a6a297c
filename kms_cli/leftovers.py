"""Nothing left behind: signals while a temporary file exists, and files a killed process left.

Signals. While kms-cli holds a file that must not outlive it (an output being written beside
OUT, a backup or restore copy), SIGTERM, SIGHUP and SIGPIPE are handled like SIGINT: `guard()`
installs a handler that raises `Interrupted` (a KeyboardInterrupt carrying the signal number)
in the main thread, the code owning the file removes it on the way out, and `cli.entry` exits
128+N. Only the first signal raises; later ones arriving during that clean-up are dropped, so
a second ^C cannot cut it short, and `deferred()` holds signals back over a step that must not
stop half-way (a restore's swap). Outside a guard these signals keep their default action and
`signal` is not imported at all (it costs every command's start-up). Python runs a handler
between bytecodes, and a blocking system call is interrupted for it: a signal that lands in
the instant between Python's last check and a read(2) that then blocks (a stalled input pipe)
is acted on only when that read returns, with more input or at end of file.

SIGKILL and power loss cannot be handled. A file that would then stay behind is registered
(`register`): a small marker in the per-user directory `pending.pending_dir()` (0700) names the file
(path, device and inode) and the processes it belongs to (boot id, pid, start time). Every
command looks at that directory once (`fileio.sweep_leftovers`: one listdir, of a directory
that is missing or empty unless something is pending) and removes the files of markers whose processes
are provably gone: another boot, no such pid, a zombie, or a pid now used by a process that
started at another time. A marker of a live process is left alone, and a file is removed only
if it is still the very file kms-cli created: a regular file (or an empty directory) of this
user's, on the same device and inode, carrying the marker's random tag in the extended
attribute `user.kms-cli` (set at registration; where the file system has no extended
attributes, the size and modification time recorded once the file was written stand in for
it). An inode number is reused as soon as it is freed, so the inode alone would not tell a
file the user put at the same path since from ours.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

# -- signals -----------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """Raised by the handler `guard()` installs: the process got signal `signo` (exit 128+signo)."""

    def __init__(self, signo: int):
        super().__init__(signo)
        self.signo = signo


class _State:
    depth = 0  # nested guards
    saved: dict = {}  # signal -> the handler before the outermost guard
    raised = False  # the first signal raised Interrupted: later ones are dropped
    deferring = 0  # inside deferred(): record, raise at its end
    pending: int | None = None


def _handler(signo, _frame) -> None:
    if _State.raised:
        return
    if _State.deferring:
        if _State.pending is None:
            _State.pending = signo
        return
    _State.raised = True
    raise Interrupted(signo)


@contextmanager
def guard() -> Iterator[None]:
    """While inside: SIGINT, SIGTERM, SIGHUP and SIGPIPE raise `Interrupted` (main thread only).

    A handler the program installed itself is left alone; SIGINT is taken over only from
    Python's default (which raises KeyboardInterrupt anyway), SIGPIPE only from its default
    SIG_IGN, so a write to a closed pipe still fails with EPIPE as before.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed in the main thread; the caller cleans up as usual
        return
    if _State.depth == 0:
        wanted = {signal.SIGINT: (signal.default_int_handler,), signal.SIGTERM: (signal.SIG_DFL,),
                  signal.SIGHUP: (signal.SIG_DFL,), signal.SIGPIPE: (signal.SIG_IGN, signal.SIG_DFL)}
        _State.saved = {}
        _State.raised, _State.pending = False, None
        for sig, replaceable in wanted.items():
            current = signal.getsignal(sig)
            if current in replaceable:
                _State.saved[sig] = current
                signal.signal(sig, _handler)
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            for sig, previous in _State.saved.items():
                signal.signal(sig, previous)
            _State.saved = {}


@contextmanager
def deferred() -> Iterator[None]:
    """Hold guarded signals back while inside; the first one is raised on leaving."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1
    if not _State.deferring and _State.pending is not None and not _State.raised and _State.depth:
        signo, _State.pending = _State.pending, None
        _State.raised = True
        raise Interrupted(signo)


def signal_name(signo: int) -> str:
    import signal

    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


# -- processes ---------------------------------------------------------------------------------

_boot: list[str] = []


def _boot_id() -> str:
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot.append(f.read().strip())
        except OSError:
            _boot.append("")
    return _boot[0]


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode("ascii", "replace").split()


def identity(pid: int | None = None) -> dict:
    """What tells this process (or `pid`) apart from a later one with the same pid."""
    pid = os.getpid() if pid is None else pid
    fields = _proc_stat(pid)
    return {"boot": _boot_id(), "pid": pid, "start": fields[19] if fields and len(fields) > 19 else ""}


def gone(ident: dict) -> bool:
    """Whether the process `ident` names has provably ended (False when in doubt)."""
    try:
        pid = int(ident["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    boot = _boot_id()
    if ident.get("boot") and boot and ident["boot"] != boot:
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists (another user's process now holds the pid: checked below)
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return sys.platform.startswith("linux") and not os.path.exists(f"/proc/{pid}")
    if fields[0] in ("Z", "X"):  # killed, not yet reaped
        return True
    return bool(ident.get("start")) and len(fields) > 19 and fields[19] != ident["start"]


# -- the registry of pending files ---------------------------------------------------------------


def _own_dir(create: bool) -> str | None:
    """pending_dir(), made 0700 if `create`; None unless it is a directory of this user's."""
    from kms_cli.pending import pending_dir

    path = pending_dir()
    if path is None:
        return None
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError:
            return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return None
    return path


_XATTR = "user.kms-cli"


class Marker:
    """A registration: `release()` when the files are gone or handed over."""

    __slots__ = ("path", "doc")

    def __init__(self, path: str, doc: dict):
        self.path, self.doc = path, doc

    def stamp(self, path: str) -> None:
        """Note the size and modification time of the finished file `path` (written by `add_process`)."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        for entry in self.doc["files"]:
            if entry["path"] == os.path.abspath(path):
                entry["size"], entry["mtime_ns"] = st.st_size, st.st_mtime_ns

    def add_process(self, pid: int) -> None:
        """The files also belong to `pid` (e.g. exec's child): stale only once it is gone too."""
        self.doc["procs"].append(identity(pid))
        tmp = self.path + ".new"
        try:
            _write_new(tmp, self.doc)
            os.replace(tmp, self.path)
        except OSError:
            _unlink(tmp)

    def release(self) -> None:
        _unlink(self.path)


def _write_new(path: str, doc: dict) -> None:
    import json

    data = json.dumps(doc).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def register(files: list[tuple[str, str]], companions: tuple[str, ...] = ()) -> Marker | None:
    """Record that `files` ((path, "file", "dir" or "tree"), existing now) belong to this process.

    A "tree" is a private directory kms-cli made whose files (regular files and symlinks of this
    user's, directly inside: whatever an editor put there, by any name) are removed with it.

    `companions` are suffixes of files derived from a registered file's name (a SQLite
    `-journal`), removed along with it. Best effort: None when nothing could be recorded
    (no home directory, read-only); the caller's own clean-up works the same either way.
    """
    directory = _own_dir(create=True)
    if directory is None:
        return None
    tag = os.urandom(12).hex()
    entries = []
    for path, kind in files:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        entry = {"path": os.path.abspath(path), "kind": kind, "dev": st.st_dev, "ino": st.st_ino}
        try:
            os.setxattr(path, _XATTR, tag.encode(), follow_symlinks=False)
            entry["tag"] = tag
        except (OSError, AttributeError):  # no extended attributes here (or not Linux): see stamp()
            pass
        entries.append(entry)
    doc = {"procs": [identity()], "files": entries, "companions": list(companions)}
    name = f"{os.getpid()}-{tag[:12]}.json"
    path = os.path.join(directory, name)
    try:
        _write_new(path, doc)
    except OSError:
        _unlink(path)
        return None
    return Marker(path, doc)


def sweep_stale() -> list[str]:
    """Remove the files of markers whose processes are all gone; returns the paths removed.

    Every command calls this through `fileio.sweep_leftovers`, which imports this module only
    when the directory has entries.
    """
    path = _own_dir(create=False)
    if path is None:
        return []
    try:
        names = os.listdir(path)
    except OSError:
        return []
    removed: list[str] = []
    for name in names:
        _sweep_one(os.path.join(path, name), name, removed)
    return removed


def _sweep_one(marker: str, name: str, removed: list[str]) -> None:
    import json

    try:
        with open(marker, "rb") as f:
            doc = json.loads(f.read())
        procs = doc["procs"]
        stale = bool(procs) and all(gone(p) for p in procs)
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable or half written: only its creator's pid (the name's prefix) says whether it is stale
        head = name.split("-", 1)[0]
        if head.isdigit() and gone({"pid": int(head)}):
            _unlink(marker)
        return
    if not stale:
        return
    import stat

    uid = os.getuid()
    for entry in doc.get("files", []):
        try:
            path, kind, dev, ino = entry["path"], entry["kind"], entry["dev"], entry["ino"]
            st = os.lstat(path)
        except (OSError, KeyError, TypeError):
            continue
        if (st.st_dev, st.st_ino) != (dev, ino) or st.st_uid != uid or not _tagged(path, st, entry):
            continue  # not the file kms-cli made: never touched
        try:
            if kind == "file" and stat.S_ISREG(st.st_mode):
                os.unlink(path)
                for suffix in doc.get("companions", []):
                    _unlink_own(path + suffix, uid)
                removed.append(path)
            elif kind == "dir" and stat.S_ISDIR(st.st_mode):
                os.rmdir(path)  # only if empty
                removed.append(path)
            elif kind == "tree" and stat.S_ISDIR(st.st_mode):  # a private directory and what is in it
                for child in os.listdir(path):
                    _unlink_own(os.path.join(path, child), uid, links=True)
                os.rmdir(path)  # only if nothing else (a subdirectory) is left
                removed.append(path)
        except OSError:
            continue
    _unlink(marker)
    if name.endswith(".json"):
        _unlink(marker[: -len(".json")] + ".json.new")


def _tagged(path: str, st, entry: dict) -> bool:
    """Whether `path` (same inode as recorded) still is the file the marker names, not a new one."""
    if "tag" in entry:
        try:
            return os.getxattr(path, _XATTR, follow_symlinks=False) == str(entry["tag"]).encode()
        except (OSError, AttributeError):
            return False
    if "mtime_ns" in entry:
        return (st.st_size, st.st_mtime_ns) == (entry.get("size"), entry["mtime_ns"])
    return True  # only the inode to go by (a temporary file: a random name kms-cli created)


def _unlink_own(path: str, uid: int, links: bool = False) -> None:
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return
    if (stat.S_ISREG(st.st_mode) or (links and stat.S_ISLNK(st.st_mode))) and st.st_uid == uid:
        _unlink(path)
