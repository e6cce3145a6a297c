"""The thin entry point: parse with the fast parser, run the handler, map every error to its exit code.

Typer (and rich) are imported only for help and shell completion, so the hot
paths (`secret get`, `read`, `decrypt`, `exec`) start as fast as Python can.
"""

from __future__ import annotations

import os
import sys

from kms_cli.errors import KmsError


def _print_error(exc: KmsError, as_json: bool) -> None:
    lines = [f"kms-cli: error: {exc.message}"]
    if exc.hint:
        lines.append(f"kms-cli: hint: {exc.hint}")
    if as_json:
        import json

        lines.append(json.dumps({"error": {"code": exc.code, "exit": exc.exit_code, "message": exc.message}}))
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _wants_typer(argv: list[str]) -> bool:
    if not argv:
        return True
    before = argv[: argv.index("--")] if "--" in argv else argv
    return any(a in ("--help", "-h", "--install-completion", "--show-completion") for a in before) or any(
        a.startswith("--install-completion") or a.startswith("--show-completion") for a in before
    ) or bool(os.environ.get("_KMS_CLI_COMPLETE"))


def run(argv: list[str]) -> int:
    os.umask(0o077)  # every file kms-cli writes is readable by its owner only
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        if _wants_typer(argv):
            from kms_cli.cli.typer_app import run_typer

            return run_typer(argv)
        from kms_cli.cli.parse import HelpRequested, parse

        try:
            parsed = parse(argv)
        except HelpRequested:
            from kms_cli.cli.typer_app import run_typer

            return run_typer(argv)
        if parsed.version:
            from kms_cli import __version__

            sys.stdout.write(f"kms-cli {__version__}\n")
            return 0
        if parsed.cmd is None:
            from kms_cli.cli.typer_app import run_typer

            return run_typer(["--help"])
        return dispatch(parsed.cmd, parsed.globals, parsed.params)
    except KmsError as exc:
        _print_error(exc, as_json)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("kms-cli: error: interrupted\n")
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = None  # silence the interpreter's flush at exit
        finally:
            return 141
    except Exception as exc:  # a bug: one line, traceback only on request
        if os.environ.get("KMS_CLI_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        err = KmsError(f"internal error ({exc.__class__.__name__}); rerun with KMS_CLI_DEBUG=1 for details")
        _print_error(err, as_json)
        return 1


def dispatch(cmd, global_flags: dict, params: dict) -> int:
    """Import the command's handler and run it with a fresh context."""
    import importlib

    from kms_cli.cli.context import Ctx

    module, _, func = cmd.handler.partition(":")
    handler = getattr(importlib.import_module(module), func)
    ctx = Ctx(global_flags)
    code = handler(ctx, **params)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return 141
    return code or 0
