"""The streaming engine behind `chunked`'s stream functions: read, process and write blocks in order.

`chunked` owns the constructions (key schedules, the per-block seal and open functions,
in-memory messages); this module only moves blocks, whatever is done to them: `run`
reads `src` in blocks of about 1 MiB with `readinto` into reused buffers, runs a block
function on each (inline, in worker processes, or in worker threads) and writes the
results strictly in order. It is imported only when a stream is encrypted or decrypted,
not by the small wraps every command makes. What it shares with `chunked` (the block
views, the worker count, the errors) lives below both, in `kms_cli.crypto.blocks`.

The parts: a block source (`_read_blocks`, or `_planned_blocks` for a large regular file)
yields blocks in order, `(slot, n, at_eof, offset)`, in buffers from a `_SlotPool`; an
`_Engine` consumes them with one method per strategy (`inline`, `in_processes`,
`in_threads`) and writes each result with `emit`.

With more than one worker (`threads`, default `blocks.default_threads()`), a large
stream is processed in parallel with a bounded number of blocks in flight (two per
worker), so memory stays constant whatever the input size:

- on POSIX, in a single-threaded process, the first `_FORK_AFTER_BLOCKS` blocks are
  processed inline and the rest by forked worker processes working on shared block
  buffers (see `_Workers`): worker threads contend for the GIL, which every 16 KiB AEAD
  call hands off and takes back. When the input is a large regular file, the workers are
  started at once and read their blocks themselves (`_read_plan`): the parent only hands
  out offsets and writes results;
- elsewhere (no fork, or other threads running, where forking is unsafe), blocks after
  the first go to a small pool of worker threads (the AEAD calls release the GIL).

Inputs of at most one block are always processed inline, and streams of at most
`_FORK_AFTER_BLOCKS` blocks never fork. Decryption writes a chunk only once it has
authenticated, and stops at the first failure having written exactly the
authenticated prefix.

Measured (2026-11-30, 2-core VM, 1 GiB file in /dev/shm, output /dev/null, the block
functions called in-process, median of 9 interleaved runs, GiB/s; encrypt / decrypt):

    Cobblestone (AES-256-GCM)             age STREAM (ChaCha20-Poly1305)
    worker processes        4.2 / 4.0     (the default: fork usable)
    threads, default GIL    3.7 / 3.8     2.3 / 2.2
    threads, 100 us switch  3.0 / 3.2     2.2 / 2.2
    inline (one thread)     3.1 / 3.3     2.0 / 2.0

So the thread fallback still pays (about 1.2x inline) where forking is not possible;
lowering the interpreter's switch interval while threads run (sys.setswitchinterval
100 us, as earlier versions did) no longer does (0.8-1.0x): it was removed. The
`age` binary on the same file: about 0.8-1.0 GiB/s either way.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import mmap
import os
import stat
import struct
import sys
from collections import deque

from kms_cli.crypto.blocks import BlockViews, InputChangedError, WorkerError, resolve_threads
from kms_cli.errors import IntegrityError

# Blocks in flight per worker (bounds memory: about 2 MiB per block in flight).
_DEPTH_PER_THREAD = 2
# Worker processes: used on POSIX (os.fork) by a single-threaded caller once a stream has
# proven large, i.e. after this many blocks were processed inline. Small inputs never fork.
_USE_PROCESSES = True
_FORK_AFTER_BLOCKS = 8
_MAX_PROCESSES = 16


# --------------------------------------------------------------------------
# I/O helpers.


def read_full(src, mv) -> int:
    """Fill `mv` from `src`; fewer bytes than len(mv) only at end of file."""
    total, size = 0, len(mv)
    readinto = getattr(src, "readinto", None)
    while total < size:
        if readinto is not None:
            got = readinto(mv[total:])
        else:
            data = src.read(size - total)
            got = None if data is None else len(data)
            if got:
                mv[total : total + got] = data
        if got is None:
            raise BlockingIOError("source is in non-blocking mode")
        if got == 0:
            break
        total += got
    return total


def write_all(dst, mv) -> None:
    """Write all of `mv` to `dst` (which may accept only part of it per call)."""
    if isinstance(dst, io.BufferedWriter):
        # Blocks are large: a buffered writer would copy one that fits its buffer (a 1 MiB
        # block into a 1 MiB buffer, say) before writing it. Write past the buffer instead,
        # after what it holds (the header), so the bytes stay in order.
        dst.flush()
        dst = dst.raw
    if not isinstance(dst, io.IOBase):
        # A foreign writer might keep a reference to the view: hand it its own copy,
        # since the underlying buffer is reused for the next block.
        dst.write(bytes(mv))
        return
    while len(mv):
        written = dst.write(mv)
        if written is None:
            raise BlockingIOError("destination is in non-blocking mode")
        if written >= len(mv):
            return
        mv = mv[written:]


# Buffer placement. On some CPUs (seen on AMD Zen) the kernel's `rep movsb` copy between the
# page cache and a user buffer runs ~5x slower when (destination - source) mod 4096 falls in
# 1..31. Block buffers are page-aligned anonymous mappings placed at an offset chosen from the
# file positions so that this difference is always 128 mod 256 (block sizes are multiples of 256).
_PAGE = 4096
_PHASE = 128


def _position(f) -> int:
    try:
        return int(f.tell())
    except (AttributeError, OSError, ValueError):
        return 0


def _aligned(size: int, offset: int) -> memoryview:
    """A zeroed writable buffer of `size` bytes starting `offset` bytes into a page."""
    region = mmap.mmap(-1, size + _PAGE)
    return memoryview(region)[offset : offset + size]


class _Slot(BlockViews):
    """A reusable pair of block buffers for streaming."""

    __slots__ = ()

    def __init__(self, in_chunk: int, out_chunk: int, chunks: int, in_offset: int, out_offset: int):
        inmv = _aligned(in_chunk * chunks, in_offset)
        # + one chunk's expansion (the AEAD tag) of slack: an encrypting block at end of file
        # may gain an empty final chunk.
        outmv = _aligned(out_chunk * chunks + abs(out_chunk - in_chunk), out_offset)
        super().__init__(inmv, outmv, in_chunk, out_chunk, chunks)


class _SlotPool:
    """The block buffers of one run: reused, made on demand, all of them made before a fork.

    `slots` lists every slot made, in order: a slot's index there is its name for the
    worker processes, which see only the slots that existed when they were forked.
    """

    def __init__(self, in_chunk: int, out_chunk: int, chunks: int, in_offset: int, out_offset: int):
        self._shape = (in_chunk, out_chunk, chunks, in_offset, out_offset)
        self.slots: list[_Slot] = []
        self.free: list[_Slot] = []
        self.frozen = False  # workers were forked: no new slot can be shared with them

    def _new(self) -> _Slot:
        slot = _Slot(*self._shape)
        self.slots.append(slot)
        return slot

    def acquire(self) -> _Slot:
        if self.free:
            return self.free.pop()
        if self.frozen:  # pragma: no cover - the slots are counted before forking
            raise RuntimeError("chunked: no free block buffer")
        return self._new()

    def release(self, slot: _Slot) -> None:
        self.free.append(slot)

    def reserve(self, count: int) -> None:
        """Make free slots until `count` exist in all."""
        while len(self.slots) < count:
            self.free.append(self._new())


# --------------------------------------------------------------------------
# Worker processes. Worker threads gain little over one thread (one GIL hand-off per 16 KiB
# AEAD call; see the figures at the top), so large streams are processed by forked workers
# instead. The block buffers are anonymous MAP_SHARED mappings created
# before the fork, so the parent and the workers see the same memory: the parent reads a
# block into a slot, sends (slot, n, first, at_eof) to a worker through a pipe, the worker
# runs the same block function on the slot (the AEAD state is inherited through fork, never
# serialised) and answers (slot, output length, error). Each worker has its own pair of
# pipes, whose worker-side ends only that worker holds: a worker that dies is seen by the
# parent as end of file on its result pipe, and workers see end of file on their command
# pipe (and exit) when the parent closes it or dies.

_CMD = struct.Struct("<IQQBq")  # slot index, n, first chunk, at_eof, file offset to read the block at (-1: in the slot)
_RES = struct.Struct("<IQBI")  # slot index, output length, kind (0 ok, 1 error message, 2 exception, 3 input shrank), payload size


def _fork_usable() -> bool:
    """Whether forking workers is safe here: POSIX with os.fork, and a single-threaded process."""
    if not _USE_PROCESSES or os.name != "posix" or not hasattr(os, "fork"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # pragma: no cover - no /proc (not Linux)
        threading = sys.modules.get("threading")
        return threading is None or threading.active_count() == 1


def _read_fd(fd: int, size: int) -> bytes | None:
    """Exactly `size` bytes from `fd`, or None at end of file before any byte."""
    data = os.read(fd, size)
    if not data:
        return None
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            raise EOFError("short message")
        data += more
    return data


def _write_fd(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while len(mv):
        mv = mv[os.write(fd, mv) :]


def _preadfull(fd: int, mv, offset: int) -> int:
    """Fill `mv` from `fd` at `offset` (the file position is neither used nor moved)."""
    total = 0
    while total < len(mv):
        got = os.preadv(fd, [mv[total:]], offset + total)
        if got == 0:
            break
        total += got
    return total


def _worker_loop(work, state, slots: list, cmd_r: int, res_w: int, infd: int) -> int:
    while True:
        msg = _read_fd(cmd_r, _CMD.size)
        if msg is None:
            return 0
        idx, n, first, at_eof, offset = _CMD.unpack(msg)
        try:
            slot = slots[idx]
            if offset >= 0 and _preadfull(infd, slot.inmv[:n], offset) < n:
                out_len, kind, payload = 0, 3, b""  # the file is shorter than when the run began
            else:
                out_len, err = work(state, slot, n, first, bool(at_eof))
                kind, payload = (0, b"") if err is None else (1, err.encode())
        except Exception as exc:  # re-raised by the parent
            import pickle

            out_len, kind = 0, 2
            try:
                payload = pickle.dumps(exc)
                pickle.loads(payload)
            except Exception:
                payload = pickle.dumps(RuntimeError(repr(exc)))
        _write_fd(res_w, _RES.pack(idx, out_len, kind, len(payload)) + payload)


class _Workers:
    """Forked worker processes sharing `slots`; see above."""

    def __init__(self, count: int, work, state, slots: list, infd: int = -1):
        self.pids: list[int] = []
        self.cmd: list[int] = []  # parent's write ends
        self.res: list[int] = []  # parent's read ends
        self.infd = infd  # the input file, which workers read blocks of themselves (or -1)
        try:
            for _ in range(count):
                self._start(work, state, slots)
        except BaseException:
            self.close(kill=True)
            raise

    def _start(self, work, state, slots: list) -> None:
        cmd_r, cmd_w = os.pipe()
        try:
            res_r, res_w = os.pipe()
        except BaseException:
            os.close(cmd_r)
            os.close(cmd_w)
            raise
        try:
            pid = os.fork()
        except BaseException:
            for fd in (cmd_r, cmd_w, res_r, res_w):
                os.close(fd)
            raise
        if pid == 0:  # worker: never return into the caller's stack, never run atexit or flush stdio
            code = 1
            try:
                # No cyclic GC: it could finalise inherited garbage (e.g. flush a lost file buffer).
                gc.disable()
                import signal

                # The parent handles ^C and the signals that stop it (see kms_cli.leftovers): it
                # kills and reaps its workers before removing its output. A worker outlives a
                # parent killed outright by no more than one block: its pipes then read EOF.
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                    with contextlib.suppress(ValueError, OSError):
                        signal.signal(sig, signal.SIG_IGN)
                for fd in self.cmd + self.res + [cmd_w, res_r]:
                    os.close(fd)
                code = _worker_loop(work, state, slots, cmd_r, res_w, self.infd)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(res_w)
        self.pids.append(pid)
        self.cmd.append(cmd_w)
        self.res.append(res_r)

    def _died(self, w: int) -> WorkerError:
        return WorkerError(f"chunked encryption worker process {self.pids[w]} exited unexpectedly")

    def submit(self, w: int, idx: int, n: int, first: int, at_eof: bool, offset: int = -1) -> None:
        try:
            _write_fd(self.cmd[w], _CMD.pack(idx, n, first, 1 if at_eof else 0, offset))
        except BrokenPipeError:
            raise self._died(w) from None

    def result(self, w: int, expected: int):
        """(output length, error message or None) for worker w's oldest block, in slot `expected`."""
        try:
            head = _read_fd(self.res[w], _RES.size)
            if head is None:
                raise self._died(w)
            idx, out_len, kind, size = _RES.unpack(head)
            payload = _read_fd(self.res[w], size) if size else b""
        except EOFError:
            raise self._died(w) from None
        if idx != expected:  # pragma: no cover - protocol bug
            raise RuntimeError("chunked: worker answered for the wrong block")
        if kind == 2:
            import pickle

            raise pickle.loads(payload)
        if kind == 3:
            raise InputChangedError("the input file shrank while it was being read")
        return out_len, (payload.decode() if kind == 1 else None)

    def close(self, kill: bool) -> None:
        """Stop and reap all workers (kill: do not let them finish their current block)."""
        import signal  # here and in the workers only: importing it costs every command's start

        for fd in self.cmd:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.cmd = []
        if kill:
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for fd in self.res:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.res = []
        interrupted = None
        while self.pids:
            try:
                os.waitpid(self.pids[0], 0)
            except ChildProcessError:
                pass
            except KeyboardInterrupt as exc:  # still reap everyone, then re-raise
                interrupted = exc
                for pid in self.pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                continue
            self.pids.pop(0)
        if interrupted is not None:
            raise interrupted


def _read_plan(src, block: int, threads: int | None):
    """(file descriptor, `src`'s position, full blocks the workers read themselves) or None.

    In a large regular file, the workers read their blocks themselves (pread at the
    block's offset, into the shared block buffer) instead of the parent reading every
    block: the parent only hands out offsets and writes results, and the copy from the
    page cache is spread over the workers. Only where worker processes are used anyway,
    and only full blocks before the last one: the stream's end is still found by the
    parent reading on, so a file that grew is read to its new end; a file found shorter
    than planned ends the run with InputChangedError, nothing released.
    """
    if not _USE_PROCESSES or resolve_threads(threads) <= 1 or not hasattr(os, "preadv"):
        return None
    try:
        fd = src.fileno()
        st = os.fstat(fd)
        start = src.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(st.st_mode) or start < 0:
        return None
    count = (st.st_size - start - 1) // block  # full blocks before the last one
    if count < _FORK_AFTER_BLOCKS + 2 or not _fork_usable():
        return None
    return fd, start, count


# --------------------------------------------------------------------------
# Block sources: iterators of (slot, n, at_eof, offset) in stream order. Every block but the
# last is full (n = block size); `at_eof` marks the last one, which may be short (or empty,
# for an empty input). `offset` is -1 for a block read into its slot, else the offset in the
# input file at which a worker process reads it itself.


def _read_blocks(src, pool: _SlotPool, block: int):
    """The blocks of `src` as this process reads them, from its position to end of file.

    The last block is found with one block of look-ahead: a block is yielded only once the
    next one was read (or end of file found), so up to two slots are held at a time.
    """
    slot = pool.acquire()
    n = read_full(src, slot.inmv)
    while True:
        if n < block:
            yield slot, n, True, -1
            return
        nxt = pool.acquire()
        m = read_full(src, nxt.inmv)
        if m == 0:
            pool.release(nxt)
            yield slot, n, True, -1
            return
        yield slot, n, False, -1
        slot, n = nxt, m


def _planned_blocks(src, pool: _SlotPool, block: int, plan):
    """A large regular file (see `_read_plan`): the workers read every full block but the
    last themselves; then this process reads on from there (whether a block ends the stream
    is found by reading on after it, so a file that grew is read to its new end)."""
    _fd, start, count = plan
    for i in range(count):
        yield pool.acquire(), block, False, start + i * block
    src.seek(start + count * block)
    yield from _read_blocks(src, pool, block)


# --------------------------------------------------------------------------
# The engine.


def run(src, dst, work, state, in_chunk: int, out_chunk: int, chunks: int, threads: int | None) -> int:
    """Read `src` block by block, run work(state, views, n, first, at_eof) on each, write in order.

    A block is `chunks` chunks of `in_chunk` input bytes (of `out_chunk` output bytes);
    `first` is the index of its first chunk. Returns the number of bytes written; raises
    IntegrityError(err) after writing the output that a failing block reported as good.
    """
    return _Engine(src, dst, work, state, in_chunk, out_chunk, chunks, threads).run()


class _Engine:
    """One stream: blocks from a block source, processed by one strategy after another, written in order."""

    def __init__(self, src, dst, work, state, in_chunk: int, out_chunk: int, chunks: int, threads: int | None):
        self.src = src
        self.dst = dst
        self.work = work
        self.state = state
        self.chunks = chunks
        self.block = in_chunk * chunks
        self.threads = threads  # as the caller gave it (None: blocks.default_threads())
        self.pool = _SlotPool(in_chunk, out_chunk, chunks,
                              (_position(src) + _PHASE) % _PAGE, (_position(dst) - _PHASE) % _PAGE)
        self.first = 0  # index of the first chunk of the next block to process
        self.written = 0

    def run(self) -> int:
        plan = _read_plan(self.src, self.block, self.threads)
        if plan is not None:
            blocks = _planned_blocks(self.src, self.pool, self.block, plan)
            if self.in_processes(blocks, min(resolve_threads(self.threads), _MAX_PROCESSES), infd=plan[0]):
                return self.written
            # fork failed (before any block was read): read the stream below instead
        blocks = _read_blocks(self.src, self.pool, self.block)
        # An input of one block never starts a thread, nor forks.
        blocks = self.inline(blocks, 1)
        if blocks is None:
            return self.written
        threads = resolve_threads(self.threads)
        if threads <= 1:
            self.inline(blocks)
            return self.written
        if _fork_usable():
            # Forking pays only for a stream that proved large: the next blocks inline too.
            blocks = self.inline(blocks, _FORK_AFTER_BLOCKS - 1)
            if blocks is None:
                return self.written
            if _fork_usable() and self.in_processes(blocks, min(threads, _MAX_PROCESSES)):
                return self.written
            # fork failed: use threads
        self.in_threads(blocks, threads)
        return self.written

    def emit(self, slot: _Slot, result) -> None:
        """Write a block's output, free its slot, raise its error (after the good output)."""
        out_len, err = result
        if out_len:
            write_all(self.dst, slot.outmv[:out_len])
            self.written += out_len
        self.pool.release(slot)
        if err is not None:
            raise IntegrityError(err)

    def inline(self, blocks, limit: int | None = None):
        """Process blocks in this thread: `limit` of them (None: all), and the stream's last block
        whenever it comes up. Returns the blocks left, or None once the stream has ended."""
        done = 0
        for item in blocks:
            slot, n, at_eof, _offset = item
            if limit is not None and done >= limit and not at_eof:
                return itertools.chain((item,), blocks)
            self.emit(slot, self.work(self.state, slot, n, self.first, at_eof))
            if at_eof:
                return None
            self.first += self.chunks
            done += 1
        return None  # pragma: no cover - a block source always ends with an at_eof block

    def in_processes(self, blocks, nworkers: int, infd: int = -1) -> bool:
        """Process the rest of the stream in `nworkers` forked workers (see `_Workers`), in order.

        False, with nothing read from `blocks`, if forking failed. `infd`: the input file the
        workers read blocks of themselves (blocks with an offset), or -1.
        """
        depth = nworkers * _DEPTH_PER_THREAD
        # Every buffer the workers will see must exist before the fork: the most ever in use
        # is `depth` blocks in flight, plus the one being read ahead.
        self.pool.reserve(depth + 2)
        slots = self.pool.slots
        index = {id(s): i for i, s in enumerate(slots)}
        try:
            workers = _Workers(nworkers, self.work, self.state, slots, infd)
        except OSError:  # pragma: no cover - fork failed (e.g. process limit)
            return False
        self.pool.frozen = True
        pending: deque = deque()  # (slot, worker) of the blocks in flight, oldest first
        ok = False
        try:
            for seq, (slot, n, at_eof, offset) in enumerate(blocks):
                w = seq % nworkers
                workers.submit(w, index[id(slot)], n, self.first, at_eof, offset)
                pending.append((slot, w))
                self.first += self.chunks
                while len(pending) > (0 if at_eof else depth - 1):  # at the end: all of them
                    done_slot, w = pending.popleft()
                    self.emit(done_slot, workers.result(w, index[id(done_slot)]))
                if at_eof:
                    break
            ok = True
        finally:
            workers.close(kill=not ok)
        return True

    def in_threads(self, blocks, threads: int) -> None:
        """Process the rest of the stream in a pool of `threads` worker threads, in order."""
        from concurrent.futures import ThreadPoolExecutor  # only when threads run: it costs start-up time

        depth = threads * _DEPTH_PER_THREAD
        pending: deque = deque()  # (slot, future) of the blocks in flight, oldest first
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kms-chunked")
        try:
            for slot, n, at_eof, _offset in blocks:
                pending.append((slot, pool.submit(self.work, self.state, slot, n, self.first, at_eof)))
                if at_eof:
                    break
                self.first += self.chunks
                while len(pending) >= depth:
                    done_slot, fut = pending.popleft()
                    self.emit(done_slot, fut.result())
            while pending:
                done_slot, fut = pending.popleft()
                self.emit(done_slot, fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)
