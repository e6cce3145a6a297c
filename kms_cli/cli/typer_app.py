"""The Typer app, built from the command table: it renders help, shell completion and the man page.

It never runs a command: every command runs through the fast parser and `entry.dispatch`
(one command path). Its commands' callbacks only raise, and it does not import `entry`.
Its options validate values with the parser's own conversion (`parse.convert`), so
what Typer's click parser accepts is what the table accepts (tests/cli/test_parity.py).
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import List, Optional

import typer
from rich.markup import escape

try:  # recent Typer vendors its own copy of click: its exceptions and contexts are the ones raised here
    from typer import _click as click
except ImportError:  # pragma: no cover - Typer versions that use the click package
    import click

from kms_cli import __version__
from kms_cli.cli import spec
from kms_cli.cli.parse import convert
from kms_cli.errors import UsageError

GLOBAL_PANEL = "Global options"
_ABORT = getattr(click.exceptions, "Abort", ())


def _quiet_types() -> None:
    """No type noise in help: Typer shows `<bool>`, `<str>`, `<list[str]>` beside every parameter and
    `{NAME}` in usage lines. Options show their metavar (PATH, DUR, K=V), flags and arguments nothing,
    usage lines NAME, [NAME] and `-- CMD [ARGS]...`. Only this process renders help with Typer."""
    core = typer.core
    option, argument = getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)
    if option is not None and hasattr(option, "display_type_rich"):
        option.display_type_rich = lambda self, ctx: None if self.is_flag else self.metavar
    if argument is not None and hasattr(argument, "display_type_rich"):
        argument.display_type_rich = lambda self, ctx: None
    if argument is not None and hasattr(argument, "_usage_display_name"):
        def usage_name(self) -> str:
            name = self.metavar or self.name.upper()
            if self.nargs != 1:
                return f"-- {name}"
            return name if self.required else f"[{name}]"

        argument._usage_display_name = usage_name


_quiet_types()


def _parser(o: spec.Opt):
    """The table's conversion and checks (choices, versions, durations, empty values) for click."""
    flag = o.flags[-1] if o.flags[-1].startswith("--") else o.flags[0]

    def parse_value(raw):
        if not isinstance(raw, str):  # an already converted default
            return raw
        try:
            return convert(o, raw, flag)
        except UsageError as exc:
            raise typer.BadParameter(exc.message) from None

    return parse_value


def shown_default(o: spec.Opt) -> str | None:
    """The default --help shows: --vault's path for this user (the man page shows a neutral form)."""
    if o.default_doc == spec.DEFAULT_VAULT_DOC:
        from kms_cli.config import default_vault_path

        path, home = default_vault_path(), os.path.expanduser("~")
        if home not in ("", "/") and path.startswith(home + os.sep):
            path = "~" + path[len(home):]
        return path
    if o.default_doc:
        return o.default_doc
    if o.kind != "flag" and o.default not in (None, ""):
        return str(o.default)
    return None


def _help(o: spec.Opt) -> str:
    text = escape(o.help)
    if o.envvar:
        text += escape(f"  [env var: {o.envvar}]")
    default = shown_default(o)
    if default:
        text += escape(f"  [default: {default}]")
    return text


def _completer(choices: tuple[str, ...]):
    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def _option(o: spec.Opt, panel: str | None = None, at_root: bool = True):
    common = dict(help=_help(o), rich_help_panel=panel, show_default=False)
    if o.metavar:
        common["metavar"] = o.metavar
    if o.kind == "flag":
        return bool, typer.Option(False, *o.flags, **common)
    common["parser"] = _parser(o)
    if o.choices:
        common["autocompletion"] = _completer(o.choices)
    if o.kind == "multi":
        return Optional[List[str]], typer.Option(None, *o.flags, **common)
    ann = Optional[int] if o.kind == "int" else Optional[str]
    default = ... if o.required else (o.default if at_root else None)
    return ann, typer.Option(default, *o.flags, **common)


def epilog(cmd: spec.Cmd) -> str | None:
    """The command's epilog (placeholders expanded), then its examples."""
    parts = [spec.expand(cmd.epilog)] if cmd.epilog else []
    if cmd.examples:
        parts.append(_examples(cmd.examples))
    return _epilog_text("\n\n".join(parts)) if parts else None


def _epilog_text(text: str) -> str:
    # Typer dedents help text like a docstring (inspect.cleandoc: the first line does not count):
    # a leading newline keeps the examples' indentation.
    return "\n" + escape(text)


def _examples(examples) -> str:
    return "Examples:\n" + "\n".join(f"  # {what}\n  {line}" for what, line in examples)


def _not_run(cmd: spec.Cmd):
    def command(**kwargs):
        raise RuntimeError(f"`kms-cli {' '.join(cmd.path)}` reached the Typer app: commands run through "
                           "kms_cli.cli.entry.dispatch only")

    return command


def _command_function(cmd: spec.Cmd):
    params = []
    for a in cmd.args:
        if a.rest:
            ann, default = Optional[List[str]], typer.Argument(None, help=escape(a.help), metavar=a.metavar)
        else:
            ann = str if a.required else Optional[str]
            default = typer.Argument(... if a.required else None, help=escape(a.help), metavar=a.metavar,
                                     show_default=False)
        params.append(inspect.Parameter(a.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    local = {o.dest for o in cmd.opts}
    local_flags = {f for o in cmd.opts for f in o.flags}
    for o in cmd.opts:
        ann, default = _option(o)
        params.append(inspect.Parameter(o.dest, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
    for o in spec.GLOBAL_OPTS:
        if o.dest in local or local_flags & set(o.flags):  # the command's own option wins after it
            continue
        ann, default = _option(o, GLOBAL_PANEL, at_root=False)
        params.append(inspect.Parameter("g_" + o.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=ann))
    command = _not_run(cmd)
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = cmd.path[-1].replace("-", "_")
    command.__doc__ = escape(cmd.help)
    return command


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
        epilog=_epilog_text(_examples(spec.EXAMPLES)),
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
        """Runs when click resolves a subcommand (for its help): nothing to do."""

    root.__signature__ = inspect.Signature(root_params)
    root.__annotations__ = {p.name: p.annotation for p in root_params}
    root.__doc__ = "A local key-management and secrets vault: keys, secrets, encryption, audit."
    app.callback()(root)

    for cmd in spec.COMMANDS:
        fn = _command_function(cmd)
        settings = {}
        if cmd.args and cmd.args[-1].rest and not cmd.args[-1].interspersed:
            settings = {"allow_interspersed_args": False}
        target = groups[cmd.path[0]] if len(cmd.path) > 1 else app
        target.command(name=cmd.path[-1], help=escape(cmd.help), epilog=epilog(cmd), context_settings=settings)(fn)
    for g in spec.GROUPS:
        if any(c.path[0] == g.name for c in spec.COMMANDS):
            app.add_typer(groups[g.name], name=g.name)
    return app


def click_command() -> click.Command:
    return typer.main.get_command(build())


def run_typer(argv: list[str], to_stderr: bool = False) -> int:
    """Let Typer handle `argv`: `[*PATH, "--help"]`, or a completion option. Nothing runs a handler."""
    command = click_command()
    stdout = sys.stdout
    if to_stderr:
        sys.stdout = sys.stderr  # rich writes to sys.stdout as it is when it prints
    try:
        rv = command.main(args=argv, prog_name="kms-cli", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # click >= 8.2: a group alone prints its help
        sys.stdout.write(exc.ctx.get_help() + "\n")
        return 0
    except click.exceptions.UsageError as exc:
        raise UsageError(exc.format_message().splitlines()[0].rstrip(".").lower() if exc.message else "usage error",
                         hint="see `kms-cli --help`") from None
    except _ABORT:  # Ctrl-C at a prompt, in click versions that have Abort
        raise KeyboardInterrupt from None
    finally:
        sys.stdout = stdout
    return rv if isinstance(rv, int) else 0


def complete() -> int:
    """Answer the shell's completion request (_KMS_CLI_COMPLETE and COMP_WORDS... in the environment)."""
    return run_typer([])
