"""A small, strict parser over the command table, fast enough for the hot paths.

It accepts global options before or after the command, `--opt value`,
`--opt=value`, short options (`-o FILE`, `-oFILE`, `-qa`), repeatable options and `--`.
Anything it does not accept is a UsageError (exit 2).

Every command runs through this parser. `-h`/`--help` anywhere before `--` (and before
exec's CMD), even where an option expects its value, stops parsing: `HelpRequested` names
the command path found so far and the Typer app renders that path's help, nothing else.
`--install-completion` and `--show-completion` before the command are Typer's too.
"""

from __future__ import annotations

from kms_cli.cli import spec
from kms_cli.errors import UsageError


_HELP = ("--help", "-h")
_COMPLETION = ("--install-completion", "--show-completion")


class ForTyper(Exception):
    """Not a command to run: the Typer app handles `argv` (help or a completion script), never a handler."""

    def __init__(self, argv: list[str]):
        super().__init__(argv)
        self.argv = argv


class HelpRequested(ForTyper):
    """-h/--help: `path` is the command path (possibly a group, or () for kms-cli itself)."""

    def __init__(self, path: tuple[str, ...]):
        super().__init__([*path, "--help"])
        self.path = path


class Parsed:
    __slots__ = ("cmd", "globals", "params", "version")

    def __init__(self, cmd: spec.Cmd | None):
        self.cmd = cmd
        self.globals: dict = {}
        self.params: dict = {}
        self.version = False


def _index(opts):
    table = {}
    for o in opts:
        for f in o.flags:
            table[f] = o
    return table


_GLOBAL = _index(spec.GLOBAL_OPTS)


def convert(o: spec.Opt, raw: str, flag: str):
    """The value of option `o` given as `flag`, checked (the Typer app validates with it too)."""
    if not raw and not o.empty:
        raise UsageError(f"option {flag} needs a value, got an empty one")
    if o.kind == "int":  # a version: 1 to names.MAX_VERSION
        from kms_cli.names import parse_version

        return parse_version(raw, f"option {flag}")
    if o.kind == "dur":
        from kms_cli.durations import parse_duration

        try:
            parse_duration(raw)  # bounded here; the handler receives the text
        except UsageError as exc:
            raise UsageError(f"option {flag}: {exc.message}", hint=exc.hint) from None
        return raw
    if o.choices and raw not in o.choices:
        raise UsageError(f"invalid value {raw!r} for {flag}", hint="choose one of: " + ", ".join(o.choices))
    return raw


def parse(argv: list[str]) -> Parsed:
    out = Parsed(cmd=None)
    words: list[str] = []
    i = 0
    cmd = None
    local: dict = {}
    positionals: list[str] = []
    rest_mode = False
    while i < len(argv):
        tok = argv[i]
        i += 1
        if rest_mode:
            positionals.append(tok)
            continue
        if tok == "--":
            if cmd is None:
                raise UsageError("missing command before '--'")
            rest_mode = True
            continue
        if tok in _HELP:
            raise HelpRequested(cmd.path if cmd else tuple(words))
        if tok.startswith("-") and tok != "-":
            flag, eq, inline = tok.partition("=")
            o = local.get(flag) if cmd else None
            target = out.params
            if o is None:
                o = _GLOBAL.get(flag)
                target = out.globals
                if cmd is None and flag == "--version":
                    out.version = True
                    continue
                if cmd is None and flag in _COMPLETION:
                    more = argv[i:i + 1] if not eq and i < len(argv) and not argv[i].startswith("-") else []
                    raise ForTyper([tok, *more])
            if o is None:
                if flag[1] != "-" and len(tok) > 2:
                    i = _short_cluster(tok, argv, i, cmd, local, out)
                    continue
                where = f" for `{' '.join(cmd.path)}`" if cmd else ""
                raise UsageError(f"unknown option {flag}{where}", hint="see `kms-cli --help`")
            if o.kind == "flag":
                if eq:
                    raise UsageError(f"option {flag} takes no value")
                target[o.dest] = True
                continue
            if eq:
                value = inline
            else:
                if i >= len(argv):
                    raise UsageError(f"option {flag} needs a value")
                value = argv[i]
                i += 1
                if value in _HELP:
                    raise HelpRequested(cmd.path if cmd else tuple(words))
            _store(o, value, flag, target)
            continue
        if cmd is None:
            words.append(tok)
            found = spec.find(tuple(words))
            if found:
                cmd = found
                local = _index(cmd.opts)
                continue
            if len(words) == 1 and tok in spec.group_names():
                continue
            raise UsageError(f"unknown command {' '.join(words)!r}", hint="see `kms-cli --help`")
        positionals.append(tok)
        if cmd.args and cmd.args[-1].rest and not cmd.args[-1].interspersed and len(positionals) >= len(cmd.args):
            rest_mode = True  # CMD started: everything after it belongs to CMD
    if cmd is None:
        if words:
            raise UsageError(f"missing subcommand for {words[0]!r}", hint=f"see `kms-cli {words[0]} --help`")
        out.cmd = None
        return out
    out.cmd = cmd
    _bind_positionals(cmd, positionals, out.params)
    for o in cmd.opts:
        if o.dest not in out.params:
            if o.required:
                raise UsageError(f"missing option {o.flags[-1]} for `{' '.join(cmd.path)}`")
            out.params[o.dest] = [] if o.kind == "multi" else (False if o.kind == "flag" else o.default)
    return out


def _store(o: spec.Opt, value: str, flag: str, target: dict) -> None:
    value = convert(o, value, flag)
    if o.kind == "multi":
        target.setdefault(o.dest, []).append(value)
    else:
        target[o.dest] = value


def _short_cluster(tok: str, argv: list[str], i: int, cmd, local: dict, out: Parsed) -> int:
    """`-oFILE` (a value attached to a short option) and `-qa` (short flags together), as getopt and
    click accept them: each letter is an option; the first that takes a value takes the rest of the
    token, or the next argument. Returns the index of the next argument."""
    for j in range(1, len(tok)):
        flag = "-" + tok[j]
        o = local.get(flag) if cmd else None
        target = out.params
        if o is None:
            o = _GLOBAL.get(flag)
            target = out.globals
        if o is None:
            where = f" for `{' '.join(cmd.path)}`" if cmd else ""
            raise UsageError(f"unknown option {flag}{where}" + (f" (in {tok})" if j > 1 else ""),
                             hint="see `kms-cli --help`")
        if o.kind == "flag":
            target[o.dest] = True
            continue
        value = tok[j + 1:]
        if not value:
            if i >= len(argv):
                raise UsageError(f"option {flag} needs a value")
            value = argv[i]
            i += 1
            if value in _HELP:
                raise HelpRequested(cmd.path if cmd else ())
        _store(o, value, flag, target)
        break
    return i


def _bind_positionals(cmd: spec.Cmd, positionals: list[str], params: dict) -> None:
    args = list(cmd.args)
    for a in args:
        if a.rest:
            params[a.dest] = positionals
            positionals = []
            continue
        if positionals:
            params[a.dest] = positionals.pop(0)
        elif a.required:
            raise UsageError(f"missing argument {a.metavar or a.dest.upper()} for `{' '.join(cmd.path)}`")
        else:
            params[a.dest] = None
    if positionals:
        raise UsageError(
            f"unexpected argument for `{' '.join(cmd.path)}`",
            hint=cmd.extra_arg_hint,
        )
