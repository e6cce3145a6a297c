"""Files kms-cli reads and writes: `-` for the standard streams, outputs atomic and 0600."""

from __future__ import annotations

import os
import stat
import sys
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from kms_cli.errors import NotFoundError, UsageError


def open_input(path: str | None) -> BinaryIO:
    if path in (None, "-"):
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory") from None
    except PermissionError:
        raise UsageError(f"permission denied: {path}") from None


def read_input(path: str | None) -> bytes:
    f = open_input(path)
    try:
        return f.read()
    finally:
        if f is not sys.stdin.buffer:
            f.close()


@contextmanager
def atomic_output(path: str | None) -> Iterator[BinaryIO]:
    """Yield a stream for OUT. A file appears at `path` only if the block completes:
    it is written 0600 to a temporary file beside it, fsynced and renamed. The temporary
    file never outlives the command: it is removed on any error and on SIGINT, SIGTERM,
    SIGHUP or SIGPIPE (exit 128+N), and by the next command after a SIGKILL."""
    if path in (None, "-"):
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{path} is a directory")
        # A device, FIFO or socket (/dev/null, /dev/stdout, a named pipe): write to it as it is;
        # a temporary file renamed over it would replace the device itself.
        with open(path, "wb", buffering=1 << 20) as f:
            yield f
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NotFoundError(f"no such directory: {directory}")
    import tempfile

    from kms_cli import leftovers

    # SIGTERM, SIGHUP and SIGPIPE now end the command like ^C, removing the temporary file;
    # after a SIGKILL the next kms-cli command removes it (the marker registered below).
    with leftovers.guard():
        fd, tmp = tempfile.mkstemp(prefix=".kms-cli-", suffix=".tmp", dir=directory)
        marker = None
        committed = False
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                marker = leftovers.register([(tmp, "file")])  # before any byte is written
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            committed = True
        finally:
            with leftovers.deferred():
                if not committed:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
                if marker is not None:
                    marker.release()


def write_private(path: str, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def sweep_leftovers() -> None:
    """Remove what killed kms-cli processes left behind; run by every command before its work.

    On every command's path, so cheap: one listdir of a directory that is missing or empty
    unless something is pending, and `kms_cli.leftovers` imported only then.
    """
    from kms_cli.pending import pending_dir

    path = pending_dir()
    try:
        if path is None or not os.listdir(path):
            return
    except OSError:
        return
    from kms_cli import leftovers

    leftovers.sweep_stale()
