"""The thin entry point: parse with the fast parser, run the handler, map every error to its exit code.

Every command runs through `parse` and `dispatch`: there is one command path. Typer (and rich)
are imported only to render help and shell completion, never to run a command, so the hot
paths (`secret get`, `read`, `decrypt`, `exec`) start as fast as Python can.
"""

from __future__ import annotations

import os
import sys

from kms_cli.errors import KmsError, UnavailableError, UsageError


def _print_error(exc: KmsError, as_json: bool) -> None:
    lines = [f"kms-cli: error: {exc.message}"]
    if exc.hint:
        lines.append(f"kms-cli: hint: {exc.hint}")
    if as_json:
        import json

        lines.append(json.dumps({"error": {"code": exc.code, "exit": exc.exit_code, "message": exc.message}}))
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr itself is full or gone: the exit code still tells
        pass


def _stand_in_for_closed_streams() -> None:
    from kms_cli.cli.context import ClosedStream

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            try:
                os.fstat(fd)
            except OSError:
                held = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                if held != fd:
                    os.dup2(held, fd, inheritable=False)
                    os.close(held)
            setattr(sys, name, ClosedStream(name))


def _settle_stdout() -> None:
    """After an error: flush what stdout holds, or drop it when it cannot take it (full, gone),
    so the exit does not try again and fail outside our error handling."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError, KmsError):
        sys.stdout = None


def os_error(exc: OSError) -> KmsError | None:
    """The error to report for an OSError no handler turned into one: a full disk, a read-only
    file system, an I/O error are exit 7 (the vault and the inputs are fine, the machine cannot
    take the output now); a permission or a descriptor problem is the caller's (exit 2)."""
    import errno

    target = f"cannot write {exc.filename}" if exc.filename else "cannot write the output"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return UnavailableError(f"{target}: no space left on device")
    if code == errno.EFBIG:
        return UnavailableError(f"{target}: file too large")
    if code == errno.EROFS:
        return UnavailableError(f"{target}: read-only file system")
    if code == errno.EIO:
        return UnavailableError(f"{exc.filename or 'the output'}: input/output error")
    if code in (errno.EACCES, errno.EPERM) and exc.filename:
        return UsageError(f"permission denied: {exc.filename}")
    if code == errno.EBADF and not exc.filename:
        return UsageError("cannot write the output: bad file descriptor")
    return None


def _internal(exc: BaseException, as_json: bool) -> int:
    if os.environ.get("KMS_CLI_DEBUG") == "1":
        import traceback

        traceback.print_exc()
    _print_error(KmsError(f"internal error ({exc.__class__.__name__}); rerun with KMS_CLI_DEBUG=1 for details"),
                 as_json)
    return 1


def run(argv: list[str]) -> int:
    os.umask(0o077)  # every file kms-cli writes is readable by its owner only
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    if sys.stdout is None or sys.stderr is None or sys.stdin is None:
        _stand_in_for_closed_streams()
    try:
        code = _run(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # a full disk or a closed pipe is reported here, not at exit
        return code
    except KmsError as exc:
        _settle_stdout()
        _print_error(exc, as_json)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # ^C, or SIGTERM/SIGHUP/SIGPIPE while a temporary file existed
        _settle_stdout()
        signo = getattr(exc, "signo", 2)  # kms_cli.leftovers.Interrupted carries the signal
        if signo == 2:
            message = "interrupted"
        else:
            from kms_cli.leftovers import signal_name

            message = f"terminated by {signal_name(signo)}"
        _print_error(KmsError(message), False)
        return 128 + signo
    except BrokenPipeError:
        try:
            sys.stdout = None  # silence the interpreter's flush at exit
        finally:
            return 141
    except OSError as exc:
        _settle_stdout()
        err = os_error(exc)
        if err is None:
            return _internal(exc, as_json)
        _print_error(err, as_json)
        return err.exit_code
    except Exception as exc:  # a bug: one line, traceback only on request
        _settle_stdout()
        return _internal(exc, as_json)


def _run(argv: list[str]) -> int:
    if os.environ.get("_KMS_CLI_COMPLETE"):  # the shell asks for completions (see completions/)
        from kms_cli.cli.typer_app import complete

        return complete()
    if argv:
        from kms_cli.agent import client

        # With an agent running, the command line goes to it first, before the command table is
        # even loaded: it runs the command when it holds the vault (None: not served, run it here).
        if client.ENABLED and not client.disabled(argv):
            code = client.run(argv)
            if code is not None:
                return code
    from kms_cli.cli.parse import ForTyper, parse

    try:
        parsed = parse(argv)
    except ForTyper as request:  # -h/--help (only that path's help), or a completion script
        from kms_cli.cli.typer_app import run_typer

        return run_typer(request.argv)
    if parsed.version:
        from kms_cli import __version__

        sys.stdout.write(f"kms-cli {__version__}\n")
        return 0
    if parsed.cmd is None:  # `kms-cli` alone, or only global options: usage on stderr, exit 2
        from kms_cli.cli.typer_app import run_typer

        run_typer(["--help"], to_stderr=True)
        return UsageError.exit_code
    return dispatch(parsed.cmd, parsed.globals, parsed.params)


def dispatch(cmd, global_flags: dict, params: dict) -> int:
    """Import the command's handler and run it with a fresh context."""
    import importlib

    from kms_cli import fileio
    from kms_cli.cli.context import Ctx

    module, _, func = cmd.handler.partition(":")
    handler = getattr(importlib.import_module(module), func)
    fileio.sweep_leftovers()  # what a killed kms-cli left (temporary outputs, env files): usually one listdir
    ctx = Ctx(global_flags)
    if params.get("output") == "-" or ctx.json:
        ctx.need_stdout()  # stdout closed: refuse before anything is read or written
    code = handler(ctx, **params)  # the store turns every driver error into a kms_cli error
    sys.stdout.flush()
    return code or 0
