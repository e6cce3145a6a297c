"""`python -m kms_cli` and the `kms-cli` console script."""

import atexit
import gc
import os
import sys


def main() -> None:
    # kms-cli is short-lived and start-up builds many long-lived objects (modules, classes, the
    # command table): with the default gen-0 threshold of 700, cyclic collections run over and
    # over during imports, about 7% of a cold start. Collect more rarely, never disable: the
    # long-running commands (exec, audit follow) still reclaim cycles.
    gc.set_threshold(20_000, 20, 20)
    from kms_cli.cli.entry import run

    code = run(sys.argv[1:])
    _exit(code)


def _exit(code: int) -> None:
    """Exit with `code`, skipping the interpreter's teardown when nothing depends on it.

    Tearing down ~150 modules (and the final collection) is about a sixth of a `secret get`.
    By the time `run` returns, every file kms-cli wrote is closed (outputs are renamed into
    place, the vault's connection is closed), so only the standard streams need flushing.
    Teardown is still run normally whenever anything could rely on it: an atexit handler
    (logging, thread pools, an SDK), a thread still running, or a stream that fails to flush.
    """
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None after a closed pipe (see entry.run)
                stream.flush()
    except (OSError, ValueError):  # e.g. a pipe closed since: the normal exit handles it as usual
        sys.exit(code)
    ncallbacks = getattr(atexit, "_ncallbacks", None)  # CPython's count of registered handlers
    threading = sys.modules.get("threading")
    if (
        ncallbacks is None
        or ncallbacks() != 0
        or (threading is not None and threading.active_count() != 1)
        or os.environ.get("KMS_CLI_DEBUG")
    ):
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
