"""Editing a value in the user's editor: a private directory, the editor's run, nothing left behind.

Below the CLI and beside `runner` (nothing here touches the vault: the caller hands in the value
and stores what comes back). `edit()`:

- makes a private 0700 directory under $XDG_RUNTIME_DIR (per user, on tmpfs by its definition) or
  /dev/shm where they exist, else under the temporary directory (the caller is warned that the
  value may then reach a disk);
- writes the value to a 0600 file there, named as the caller asks (the secret's last name segment,
  so an editor picks its mode from the extension), registered with `leftovers` as a "tree" before
  any byte is written: after a SIGKILL of kms-cli the next command removes the directory and
  whatever is in it, once kms-cli and the editor are both gone;
- runs the editor without a shell, the file's absolute path as its last argument, with kms-cli's
  standard streams (its terminal) and the environment it is given;
- reads the file back by path once the editor has exited 0 (an editor that writes a new file and
  renames it over the old one works the same);
- then, whatever happened (editor failure, ^C, SIGTERM, SIGHUP: `leftovers.guard`), overwrites
  with zeros and fsyncs the file it wrote (through the descriptor it kept: the original inode too,
  when the editor replaced the file by rename) and every file in the directory (swap, backup and
  undo files the editor left there), removes them and the directory. An editor still running when
  kms-cli is interrupted is sent SIGTERM (SIGKILL after `STOP_GRACE` seconds) first.

What an editor keeps elsewhere (vim's viminfo registers, an undo or backup directory configured
outside the file's directory, an IDE's local history) is beyond kms-cli's reach.
"""

from __future__ import annotations

import os
import stat
import sys

from kms_cli.errors import CommandNotExecutableError, UsageError

DEFAULT_EDITOR = "vi"
STOP_GRACE = 3.0  # seconds an interrupted editor has to exit after SIGTERM before SIGKILL
_PREFIX = "kms-cli-edit-"


def editor_command(environ) -> tuple[list[str], str | None]:
    """The editor's argv from $VISUAL, else $EDITOR (split like a shell word list, no shell),
    and the variable it came from; ([DEFAULT_EDITOR], None) when neither is set (or blank)."""
    import shlex

    for var in ("VISUAL", "EDITOR"):
        text = environ.get(var) or ""
        if not text.strip():
            continue
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise UsageError(f"cannot split ${var} into words: {str(exc).lower()}",
                             hint=f"quote it as a shell would, e.g. {var}='code --wait'") from None
        if argv:
            return argv, var
    return [DEFAULT_EDITOR], None


def _private_base(environ) -> str | None:
    """$XDG_RUNTIME_DIR (an absolute directory of this user's) or /dev/shm, else None."""
    uid = os.getuid()
    runtime = environ.get("XDG_RUNTIME_DIR") or ""
    if os.path.isabs(runtime):
        try:
            st = os.stat(runtime)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and os.access(runtime, os.W_OK | os.X_OK):
                return runtime
        except OSError:
            pass
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def make_private_dir(environ, warn, base: str | None = None) -> str:
    """A new 0700 directory under `base`, or the first of $XDG_RUNTIME_DIR and /dev/shm; else under
    the temporary directory, after `warn(message)`."""
    import tempfile

    if base is None:
        base = _private_base(environ)
    if base is None:
        base = tempfile.gettempdir()
        warn(f"neither $XDG_RUNTIME_DIR nor /dev/shm is available: the value is written under {base}, "
             "which may reach a disk")
    try:
        path = tempfile.mkdtemp(prefix=_PREFIX, dir=base)
    except OSError as exc:
        raise UsageError(f"cannot create a private directory under {base}: {(exc.strerror or str(exc)).lower()}",
                         hint="set XDG_RUNTIME_DIR or TMPDIR to a directory of yours") from None
    os.chmod(path, 0o700)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _zero_fd(fd: int, size: int) -> None:
    """Overwrite the first `size` bytes of the file open as `fd` with zeros, and fsync it."""
    chunk = b"\0" * min(max(size, 1), 1 << 16)
    offset = 0
    while offset < size:
        offset += os.pwrite(fd, chunk[: min(len(chunk), size - offset)], offset)
    os.fsync(fd)


def _wipe_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                _zero_fd(fd, st.st_size)
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass


def wipe_dir(path: str) -> bool:
    """Zero, fsync and remove every regular file under `path` (no symlink followed), then the
    directories; True when `path` is gone."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                _wipe_file(full)
            else:  # a symlink (emacs' lock file), a FIFO or a socket: no content of ours
                try:
                    os.unlink(full)
                except OSError:
                    pass
        for name in dirs:
            full = os.path.join(root, name)
            try:
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _stop(proc) -> bool:
    """End an editor still running (kms-cli was interrupted): SIGTERM, then SIGKILL; True once gone."""
    import signal
    import subprocess

    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
        try:
            proc.send_signal(sig)
        except OSError:
            pass
        try:
            proc.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            continue
    return proc.poll() is not None


def _read_back(path: str, limit: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise UsageError("the editor removed the file; nothing stored") from None
    except OSError as exc:
        raise UsageError(f"cannot read the edited file back: {(exc.strerror or str(exc)).lower()}; nothing stored"
                         ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError("the edited file is no longer a regular file; nothing stored")
        parts, size = [], 0
        while size <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - size))
            if not block:
                break
            parts.append(block)
            size += len(block)
    finally:
        os.close(fd)
    data = b"".join(parts)
    if len(data) > limit:
        raise UsageError(f"the edited value is larger than {limit} bytes; nothing stored",
                         hint="store files with `kms-cli encrypt`")
    return data


def _describe_status(code: int) -> str:
    if code < 0:
        from kms_cli.leftovers import signal_name

        return f"was killed by {signal_name(-code)}"
    return f"exited with status {code}"


def edit(value: bytes, filename: str, argv: list[str], env: dict[str, str], *, warn, limit: int,
         base: str | None = None) -> bytes:
    """Run the editor `argv` on a private copy of `value` named `filename`; return the edited bytes.

    Raises:
        UsageError: the editor exited non-zero or was killed (named in the message), or removed
            the file, or the result is larger than `limit`: nothing came back.
        CommandNotExecutableError: the editor could not be started.
        leftovers.Interrupted: ^C, SIGTERM, SIGHUP (or SIGPIPE) while the file existed.
    In every case the file, whatever the editor left beside it, and the directory are gone.
    """
    import subprocess

    from kms_cli import leftovers

    with leftovers.guard():
        directory = make_private_dir(env, warn, base)
        marker, fd, proc, tty_state = None, -1, None, None
        try:
            marker = leftovers.register([(directory, "tree")])  # before any byte of the value is written
            path = os.path.join(directory, filename)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            _write_all(fd, value)
            os.fsync(fd)
            tty_state = _tty_state()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, AttributeError):
                    pass
            try:
                proc = subprocess.Popen([*argv, path], env=env, close_fds=True)
            except OSError as exc:
                raise CommandNotExecutableError(
                    f"cannot execute {argv[0]}: {(exc.strerror or str(exc)).lower()}") from None
            if marker is not None:
                marker.add_process(proc.pid)  # after a SIGKILL of kms-cli: removed once the editor is gone too
            code = proc.wait()
            proc = None
            if code != 0:
                raise UsageError(f"the editor {_describe_status(code)}; nothing stored",
                                 hint="the edit is discarded; run `kms-cli secret edit` again")
            return _read_back(path, limit)
        finally:
            with leftovers.deferred():
                gone = True
                if proc is not None and proc.poll() is None:
                    gone = _stop(proc)
                    _restore_tty(tty_state)
                if fd >= 0:
                    try:
                        _zero_fd(fd, len(value))  # the inode first written, even if the editor renamed over it
                    except OSError:
                        pass
                    os.close(fd)
                removed = wipe_dir(directory)
                if marker is not None and removed and gone:
                    marker.release()


def _tty_state():
    """The terminal settings of stdin (restored if the editor has to be stopped), or None."""
    try:
        if not os.isatty(0):
            return None
        import termios

        return termios.tcgetattr(0)
    except (OSError, ImportError):
        return None
    except Exception:  # noqa: BLE001 - termios.error
        return None


def _restore_tty(state) -> None:
    if state is None:
        return
    try:
        import termios

        termios.tcsetattr(0, termios.TCSADRAIN, state)
    except Exception:  # noqa: BLE001 - best effort: a terminal left raw by a killed editor
        pass
