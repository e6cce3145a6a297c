"""Progress bars for long operations: on stderr, and only when stderr is a terminal (spec section 1).

The API, for handlers in `kms_cli/cli/`:

    from kms_cli.cli.progress import progress

    with progress(ctx, total, "encrypting") as advance:  # total: bytes (or items), None if unknown
        ...
        advance(n)                                        # n more bytes (items) done

    # the callback form, for a layer below the CLI that reports (done, total) itself:
    with progress(ctx, None, "verifying the audit log", unit="entries") as p:
        audit.verify(..., progress=p.update)              # p.update(done, total): absolute counts;
                                                          # total may be None, or change between calls

    # byte streams: count what passes through a file object
    with progress(ctx, input_size(src), "encrypting", to_stdout=True) as p:
        dst = p.writer(dst)   # counts the bytes written to dst (p.reader(src) counts those read)

`to_stdout=True` says the command writes its output to stdout while the bar runs: when stdout
is the same terminal, no bar is shown (it would be torn by the output).

A prompt (`ctx.prompt`, e.g. a passphrase asked while sealing) erases the bar first; it comes
back after the next report.

`progress` yields a tracker that is false (`if p:`) and does nothing at all when no bar can be
shown: stderr is not a terminal (a pipe, a file, closed), `--quiet`, or TERM=dumb. Then
`p.writer(dst)` and `p.reader(src)` return the stream itself, unwrapped, so scripts pay nothing.

When it can, the bar still appears only once work has been reported for `DELAY` (0.5 s) and is
not finished (the clock starts at the first report, so an unlock or a prompt before it does not
count): a quick command never flashes a bar, a slow one (a 2 GiB file, a slow pipe, a large
vault) shows it, whatever the size. The bar is transient: it is erased when the block ends, so
what stays on stderr is exactly what a pipe would have received (the usual `kms-cli: ...`
lines). rich is imported (through `cli.output`, its only user) only when a bar is first drawn,
never on the hot paths, and draws without a refresh thread: the streaming engine forks its
workers only from a single-threaded process, so a thread would slow every large stream down.

Why stream progress counts the output (`p.writer`) rather than the input: for a large regular
file the engine's worker processes read their blocks themselves, past any reader wrapper; the
output is always written in order by this process, once each block is done.
"""

from __future__ import annotations

import io
import os
import time

DELAY = 0.5  # seconds before a bar appears
_REFRESH = 0.1  # at most this often is the bar redrawn


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def enabled(ctx) -> bool:
    """Whether a bar may be shown for this command at all."""
    return not ctx.quiet and _is_terminal(ctx.stderr) and ctx.environ.get("TERM", "") != "dumb"


def input_size(f) -> int | None:
    """Bytes left to read in `f` when it is a regular file, else None (a pipe, a terminal)."""
    try:
        import stat

        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(st.st_size - f.tell(), 0)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


class _Null:
    """The tracker when no bar can be shown: false, and every call does nothing."""

    def __bool__(self) -> bool:
        return False

    def __call__(self, n: int = 1) -> None:
        pass

    def update(self, done: int, total: int | None = None) -> None:
        pass

    def writer(self, dst):
        return dst

    def reader(self, src):
        return src


class Tracker:
    """Counts work done and draws a bar once the work has lasted DELAY seconds."""

    def __init__(self, ctx, total: int | None, description: str, unit: str):
        self.ctx = ctx
        self.total = total
        self.description = description
        self.unit = unit
        self.done = 0
        self._next = None  # the next moment worth drawing at; DELAY after the first report
        self._display = None
        self._failed = False
        ctx.active_progress = self  # ctx.prompt erases the bar before asking anything

    def __bool__(self) -> bool:
        return True

    def __call__(self, n: int = 1) -> None:
        """`n` more units done (the `advance` form)."""
        self.done += n
        now = time.monotonic()
        if self._next is None:
            self._next = now + DELAY
        elif now >= self._next:
            self._draw(now)

    advance = __call__

    def update(self, done: int, total: int | None = None) -> None:
        """`done` units of `total` done so far (the `callback(done, total)` form)."""
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self._next is None:
            self._next = now + DELAY
        elif now >= self._next:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._next = now + _REFRESH
        if self._failed:
            return
        try:
            if self._display is None:
                from kms_cli.cli import output

                self._display = output.progress_display(self.ctx, self.description, self.unit)
            shown = self.done if self.total is None else min(self.done, self.total)
            self._display.show(shown, self.total)
        except Exception:  # a bar must never break the command it decorates
            self._failed = True
            self._close_display()

    def _close_display(self) -> None:
        display, self._display = self._display, None
        if display is not None:
            try:
                display.close()
            except Exception:
                pass

    def hide(self) -> None:
        """Erase the bar now (before a prompt); it is drawn again DELAY after the next report."""
        self._close_display()
        self._next = None

    def close(self) -> None:
        self._close_display()
        if getattr(self.ctx, "active_progress", None) is self:
            self.ctx.active_progress = None

    def writer(self, dst):
        return CountingWriter(dst, self)

    def reader(self, src):
        return CountingReader(src, self)


class progress:  # noqa: N801 - used as a function: `with progress(ctx, total, "encrypting") as advance:`
    """Context manager yielding a tracker (see the module docstring); the bar is erased on exit."""

    def __init__(self, ctx, total: int | None, description: str, *, unit: str = "bytes", to_stdout: bool = False):
        # to_stdout: the command writes its output to stdout meanwhile; when that is a terminal
        # too, the bar and the output would share the screen: no bar then.
        show = enabled(ctx) and not (to_stdout and _is_terminal(ctx.stdout))
        self._tracker = Tracker(ctx, total, description, unit) if show else _Null()

    def __enter__(self):
        return self._tracker

    def __exit__(self, *exc) -> None:
        if self._tracker:
            self._tracker.close()


class CountingWriter(io.RawIOBase):
    """A binary sink that passes everything to `dst` and counts it.

    An io.RawIOBase, so the streaming engine hands it its block buffers without a copy; large
    writes to a buffered file go past its buffer (after flushing what it holds), as the engine
    does itself, so wrapping costs no extra copy of the data.
    """

    def __init__(self, dst, advance):
        self.dst = dst
        self._advance = advance
        self._raw = dst.raw if isinstance(dst, io.BufferedWriter) else None
        self._released = False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = len(b)
        if self._raw is not None and n >= 1 << 16:
            self.dst.flush()
            mv = memoryview(b).cast("B")
            while len(mv):
                written = self._raw.write(mv)
                if written is None:
                    raise BlockingIOError("destination is in non-blocking mode")
                mv = mv[written:]
        else:
            self.dst.write(b)
        self._advance(n)
        return n

    def flush(self) -> None:
        if not self._released:
            self.dst.flush()

    def tell(self) -> int:
        return self.dst.tell()

    def fileno(self) -> int:
        return self.dst.fileno()

    def close(self) -> None:  # the caller owns dst: closing the wrapper (or collecting it) leaves dst alone
        self._released = True
        super().close()


class CountingReader(io.RawIOBase):
    """A binary source that reads from `src` and counts what it returns.

    It hides `src`'s file descriptor on purpose: a reader that the engine bypassed (reading the
    file's blocks by descriptor in its workers) would count nothing.
    """

    def __init__(self, src, advance):
        self.src = src
        self._advance = advance

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        readinto = getattr(self.src, "readinto", None)
        if readinto is not None:
            n = readinto(b)
        else:
            data = self.src.read(len(b))
            n = len(data)
            b[:n] = data
        if n:
            self._advance(n)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        if data:
            self._advance(len(data))
        return data

    def readline(self, size: int = -1) -> bytes:
        line = self.src.readline(size)
        if line:
            self._advance(len(line))
        return line

    def close(self) -> None:  # the caller owns src
        super().close()

