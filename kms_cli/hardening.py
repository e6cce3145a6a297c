"""No core dumps of a process that holds key material or secret values.

`no_core_dumps()` runs before a command opens (unlocks or creates) a vault, so before any root
key, key material or secret value is in memory (`cli.context.Ctx.vault_options`, and the few
commands that handle keys without a vault). It sets the soft RLIMIT_CORE to 0 and, on Linux,
PR_SET_DUMPABLE to 0. The second matters most: when the kernel's core_pattern pipes cores to a
helper (systemd-coredump, apport), RLIMIT_CORE 0 is only advice to that helper, while a
non-dumpable process is never dumped; it also keeps other processes of the same user from
attaching a debugger or reading its memory, and makes its /proc/PID files root's.

Costs: `resource` is a small extension module; prctl(2) is called through `_ctypes` directly
(about 0.3 ms to import) rather than the `ctypes` package (about 1.5 ms), falling back to the
latter if `_ctypes`' internals ever change. Elsewhere than Linux only the limit is set; any
failure is silent (hardening never stops a command).

Programs that `exec` starts inherit the soft core limit 0 (they can raise it again with
`ulimit -c`, the hard limit is untouched) but not the dumpability, which execve(2) resets.
Forked stream workers inherit both.
"""

from __future__ import annotations

import sys

PR_SET_DUMPABLE = 4
_done: list[bool] = []


def no_core_dumps() -> None:
    """Soft RLIMIT_CORE 0 and (Linux) PR_SET_DUMPABLE 0, once per process."""
    if _done:
        return
    _done.append(True)
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        if soft != 0:
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - no resource module (Windows)
        pass
    if sys.platform.startswith("linux"):
        try:
            _prctl(PR_SET_DUMPABLE, 0)
        except Exception:  # pragma: no cover - no libc prctl reachable: the limit above still holds
            pass


def _prctl(option: int, arg: int) -> int:
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _Process:  # what a CFuncPtr looks a symbol up in: this program and its libraries
            _handle = _ctypes.dlopen(None, 0)

        class _Func(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = _Int

        prctl = _Func(("prctl", _Process))
    except Exception:  # pragma: no cover - _ctypes' internals changed: the public module
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    return prctl(option, arg, 0, 0, 0)
