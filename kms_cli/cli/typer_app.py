"""The Typer app, built from the command table: help, shell completion and the man page.

Commands run through it behave exactly as through the fast parser: both call
`entry.dispatch` with the same handler and parameters.
"""

from __future__ import annotations

import inspect
import sys
from typing import List, Optional

import typer

try:  # recent Typer vendors its own copy of click: its exceptions and contexts are the ones raised here
    from typer import _click as click
except ImportError:  # pragma: no cover - Typer versions that use the click package
    import click

from kms_cli import __version__
from kms_cli.cli import spec
from kms_cli.errors import UsageError

GLOBAL_PANEL = "Global options"
_ABORT = getattr(click.exceptions, "Abort", ())


def _option(o: spec.Opt, panel: str | None = None):
    common = dict(help=o.help, rich_help_panel=panel, show_default=False)
    if o.metavar:
        common["metavar"] = o.metavar
    if o.kind == "flag":
        return bool, typer.Option(False, *o.flags, **common)
    if o.kind == "multi":
        return Optional[List[str]], typer.Option(None, *o.flags, **common)
    ann = Optional[int] if o.kind == "int" else Optional[str]
    default = ... if o.required else (o.default if panel is None else None)
    return ann, typer.Option(default, *o.flags, **common)


def _command_function(cmd: spec.Cmd):
    params = []
    for a in cmd.args:
        if a.rest:
            ann, default = Optional[List[str]], typer.Argument(None, help=a.help, metavar=a.metavar)
        else:
            ann = str if a.required else Optional[str]
            default = typer.Argument(... if a.required else None, help=a.help, metavar=a.metavar, show_default=False)
        params.append(inspect.Parameter(a.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    local = {o.dest for o in cmd.opts}
    for o in cmd.opts:
        ann, default = _option(o)
        params.append(inspect.Parameter(o.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    for o in spec.GLOBAL_OPTS:
        if o.dest in local:
            continue
        ann, default = _option(o, GLOBAL_PANEL)
        params.append(inspect.Parameter("g_" + o.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=ann))

    def command(**kwargs):
        from kms_cli.cli.entry import dispatch

        globals_ = dict(click.globals.get_current_context().find_root().obj or {})
        params_ = {}
        for k, v in kwargs.items():
            if k.startswith("g_"):
                if v not in (None, False):
                    globals_[k[2:]] = v
            else:
                params_[k] = v if v is not None or not _is_multi(cmd, k) else []
        if cmd.args and cmd.args[-1].rest and params_.get(cmd.args[-1].dest) is None:
            params_[cmd.args[-1].dest] = []
        raise typer.Exit(dispatch(cmd, globals_, params_) or 0)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = cmd.path[-1].replace("-", "_")
    command.__doc__ = cmd.help
    return command


def _is_multi(cmd, dest):
    return any(o.dest == dest and o.kind == "multi" for o in cmd.opts)


def _version_callback(value: bool):
    if value:
        typer.echo(f"kms-cli {__version__}")
        raise typer.Exit(0)


def build() -> typer.Typer:
    app = typer.Typer(
        name="kms-cli",
        help="A local key-management and secrets vault.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    groups = {g.name: typer.Typer(name=g.name, help=g.help, no_args_is_help=True) for g in spec.GROUPS}

    root_params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    ]
    for o in spec.GLOBAL_OPTS:
        ann, default = _option(o)
        root_params.append(inspect.Parameter(o.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                             annotation=ann))
    root_params.append(inspect.Parameter(
        "version", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--version", help="Print the version and exit.",
                             callback=_version_callback, is_eager=True)))

    def root(ctx: typer.Context, **kwargs):
        ctx.obj = {k: v for k, v in kwargs.items() if k != "version" and v not in (None, False)}

    root.__signature__ = inspect.Signature(root_params)
    root.__annotations__ = {p.name: p.annotation for p in root_params}
    root.__doc__ = "A local key-management and secrets vault: keys, secrets, encryption, audit."
    app.callback()(root)

    for cmd in spec.COMMANDS:
        fn = _command_function(cmd)
        settings = {}
        if cmd.args and cmd.args[-1].rest:
            settings = {"allow_interspersed_args": False}
        target = groups[cmd.path[0]] if len(cmd.path) > 1 else app
        target.command(name=cmd.path[-1], help=cmd.help, epilog=cmd.epilog, context_settings=settings)(fn)
    for g in spec.GROUPS:
        if any(c.path[0] == g.name for c in spec.COMMANDS):
            app.add_typer(groups[g.name], name=g.name)
    return app


def click_command() -> click.Command:
    return typer.main.get_command(build())


def run_typer(argv: list[str]) -> int:
    command = click_command()
    try:
        rv = command.main(args=argv, prog_name="kms-cli", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # click >= 8.2: `kms-cli` alone prints help
        sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except click.exceptions.UsageError as exc:
        raise UsageError(exc.format_message().splitlines()[0].rstrip(".").lower() if exc.message else "usage error",
                         hint="see `kms-cli --help`") from None
    except _ABORT:  # Ctrl-C at a prompt, in click versions that have Abort
        raise KeyboardInterrupt from None
    return rv if isinstance(rv, int) else 0
