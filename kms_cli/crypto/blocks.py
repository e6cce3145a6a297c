"""What the chunked constructions and the streaming engine share: block views, worker count, errors.

A block is a contiguous run of chunks, the unit of work: `chunked`'s per-block seal and
open functions work on the `BlockViews` of one block, and `streaming`'s engine reads,
hands out and writes blocks without knowing what is done to them. Both import this
module; neither imports the other's private names, and only `chunked` imports
`streaming` (when a stream runs). Cheap to import: no threads, no mmap.
"""

from __future__ import annotations

import os

from kms_cli.errors import KmsError

__all__ = ["BlockViews", "default_threads", "resolve_threads", "WorkerError", "InputChangedError"]

_MAX_THREADS = 4


class BlockViews:
    """Input and output buffers of one block, with cached per-chunk views.

    `inmv`/`outmv` are the whole block buffers, `chunks(count)` the views of its first
    `count` full input and output chunks (cached for the first `cache` chunks, since the
    engine reuses its buffers block after block).
    """

    __slots__ = ("inmv", "outmv", "ins", "outs", "in_chunk", "out_chunk")

    def __init__(self, inmv, outmv, in_chunk: int, out_chunk: int, cache: int = 0):
        self.inmv = inmv
        self.outmv = outmv
        self.in_chunk = in_chunk
        self.out_chunk = out_chunk
        self.ins = [inmv[j * in_chunk : (j + 1) * in_chunk] for j in range(cache)]
        self.outs = [outmv[j * out_chunk : (j + 1) * out_chunk] for j in range(cache)]

    def chunks(self, count: int):
        if count > len(self.ins):
            ic, oc, inmv, outmv = self.in_chunk, self.out_chunk, self.inmv, self.outmv
            ins = [inmv[j * ic : (j + 1) * ic] for j in range(count)]
            outs = [outmv[j * oc : (j + 1) * oc] for j in range(count)]
            return ins, outs
        return self.ins[:count], self.outs[:count]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _aead_releases_gil() -> bool:
    # cryptography 50.0.2 runs encrypt_into/decrypt_into without holding the GIL (its
    # Rust `run_with_gil_detached`, seen in the installed build). Older versions are
    # assumed to hold it: extra threads could then only overlap I/O, which does not pay
    # for the GIL hand-offs (measured), so they default to a single thread.
    try:
        from cryptography import __version__ as version

        return int(version.split(".")[0]) >= 50
    except (ImportError, ValueError):  # pragma: no cover
        return False


_AEAD_RELEASES_GIL = _aead_releases_gil()


def default_threads() -> int:
    """Workers used when `threads` is None: the usable CPUs, at most 4 (1 if AEAD calls hold the GIL)."""
    if not _AEAD_RELEASES_GIL:
        return 1
    return max(1, min(_usable_cpus(), _MAX_THREADS))


def resolve_threads(threads: int | None) -> int:
    """The worker count for a `threads` argument: None means `default_threads()`."""
    return default_threads() if threads is None else max(1, int(threads))


class WorkerError(RuntimeError):
    """A chunked-encryption worker process ended unexpectedly."""


class InputChangedError(KmsError):
    """The input file shrank while it was being encrypted or decrypted (nothing was released)."""
