"""A small, strict parser over the command table, fast enough for the hot paths.

It accepts global options before or after the command, `--opt value`,
`--opt=value`, short flags, repeatable options and `--`. Anything it does not
accept is a UsageError (exit 2); `--help` is left to the Typer app.
"""

from __future__ import annotations

from kms_cli.cli import spec
from kms_cli.errors import UsageError


class HelpRequested(Exception):
    pass


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


def _convert(o: spec.Opt, raw: str, flag: str):
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
        if tok in ("--help", "-h"):
            raise HelpRequested()
        if tok.startswith("-") and tok != "-":
            flag, eq, inline = tok.partition("=")
            o = local.get(flag) if cmd else None
            target = out.params
            if o is None:
                o = _GLOBAL.get(flag)
                target = out.globals
                if flag == "--version" and cmd is None:
                    out.version = True
                    continue
            if o is None:
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
            value = _convert(o, value, flag)
            if o.kind == "multi":
                target.setdefault(o.dest, []).append(value)
            else:
                target[o.dest] = value
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
        if cmd.args and cmd.args[-1].rest and len(positionals) >= len(cmd.args):
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
