"""One command path: the fast parser and the Typer app's click parser agree on every option of the table.

Commands run only through `parse.parse` -> `entry.dispatch`; Typer renders their help and
completion. Both are built from `spec.COMMANDS` and `spec.GLOBAL_OPTS`, and these tests are
generated from the same table: for every command and every option it declares (each kind: str,
int, dur, flag, multi, choices, required, arguments, exec's rest), both parsers must read the same
values and refuse the same inputs. click only parses here (`make_context`), nothing is invoked.
"""

from __future__ import annotations

import pytest

from kms_cli.cli import parse, spec, typer_app
from kms_cli.errors import UsageError

click = typer_app.click

REJECTED = "rejected"


@pytest.fixture(scope="module")
def root():
    return typer_app.click_command()


@pytest.fixture(autouse=True)
def _no_settings_from_env(monkeypatch):
    for o in spec.GLOBAL_OPTS:
        if o.envvar:
            monkeypatch.delenv(o.envvar, raising=False)


def _pending(ctx) -> list[str]:
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def click_parse(root, argv: list[str]):
    """(path, globals, params) as click reads argv, in the shapes the fast parser produces."""
    try:
        ctx = root.make_context("kms-cli", list(argv))
        found = {k: list(v) if isinstance(v, tuple) else v for k, v in ctx.params.items()
                 if k != "version" and v not in (None, False, ())}  # a repeatable global: a list, or absent
        cmd, path, rest = root, [], _pending(ctx)
        while hasattr(cmd, "resolve_command"):
            if not rest:
                return REJECTED  # a group without its subcommand
            name, cmd, rest = cmd.resolve_command(ctx, rest)
            path.append(name)
            ctx = cmd.make_context(name, rest, parent=ctx)
            rest = _pending(ctx)
    except click.exceptions.UsageError:
        return REJECTED
    table = spec.find(tuple(path))
    params = {}
    for k, v in ctx.params.items():
        if k.startswith("g_"):
            if v not in (None, False, ()):
                found[k[2:]] = list(v) if isinstance(v, tuple) else v
            continue
        multi = any(o.dest == k and o.kind == "multi" for o in table.opts) or any(
            a.dest == k and a.rest for a in table.args)
        params[k] = list(v or ()) if multi else v
    return tuple(path), found, params


def fast_parse(argv: list[str]):
    try:
        p = parse.parse(list(argv))
    except UsageError:
        return REJECTED
    return p.cmd.path, p.globals, p.params


# -- generated cases -----------------------------------------------------------------------------

def _valid(o: spec.Opt) -> list[str]:
    if o.choices:
        return list(o.choices)
    return {"int": ["1", "7"], "dur": ["90d", "PT12H", "30m"], "multi": ["K=V"]}.get(o.kind, ["v", "a b"]) + (
        [""] if o.empty else [])


def _invalid(o: spec.Opt) -> list[str]:
    bad = {"int": ["0", "-1", "x", "1.5"], "dur": ["soon", "-1d", "9999999d"]}.get(o.kind, [])
    if o.choices:
        bad.append("bogus")
    if not o.empty:
        bad.append("")
    return bad


def _base(cmd: spec.Cmd, without: spec.Opt | None = None) -> list[str]:
    """The command with its required arguments and options (but `without`): the smallest accepted form."""
    argv = list(cmd.path)
    for o in cmd.opts:
        if o.required and o is not without:
            argv += [o.flags[-1], _valid(o)[0]]
    for a in cmd.args:
        if a.rest:
            argv += ["--", "prog", "--flag", "-h"]
        elif a.required:
            argv.append("acme/x")
    return argv


def _cases():
    for cmd in spec.COMMANDS:
        name = " ".join(cmd.path)
        base = _base(cmd)
        n = len(cmd.path)

        rest = any(a.rest for a in cmd.args)
        yield name + ": base", base, True
        for o in cmd.opts:
            # each case gives the option once (a required one replaces the base's), right after the
            # command (before exec's `--`)
            b = _base(cmd, without=o) if o.required else base

            def at(*tokens, b=b, n=n):
                return [*b[:n], *tokens, *b[n:]]

            for flag in o.flags:
                if o.kind == "flag":
                    yield f"{name}: {flag}", at(flag), True
                    yield f"{name}: {flag}=x", at(f"{flag}=x"), False
                    continue
                for v in _valid(o):
                    yield f"{name}: {flag} {v!r}", at(flag, v), True
                    if flag.startswith("--"):
                        yield f"{name}: {flag}={v!r}", at(f"{flag}={v}"), True
                for v in _invalid(o):
                    yield f"{name}: {flag} {v!r}", at(flag, v), False
                yield f"{name}: {flag} without a value", [*b[:n], flag] if rest else [*b, flag], False
            if o.kind == "multi":
                v1, v2 = (_valid(o) * 2)[:2]
                yield f"{name}: {o.flags[0]} twice", at(o.flags[0], v1, o.flags[-1], v2 + "2"), True
            if o.required:
                yield f"{name}: missing {o.flags[-1]}", b, False
        for a in cmd.args:
            if a.rest and a.interspersed:  # PATH...: positionals with options read among them
                # (the base ends with `-- prog --flag -h`: after --, every word is a path)
                yield f"{name}: several {a.metavar}", [*base[:-4], "p1", "p2"], True
                yield f"{name}: an unknown option among {a.metavar}", [*base[:-4], "p1", "--bogus", "p2"], False
                yield f"{name}: no {a.metavar}", base[:-4], True
            elif a.rest:
                yield f"{name}: CMD without --", [*base[:-4], "prog", "-x", "--flag"], True
                yield f"{name}: no CMD", base[:-4], True
            elif a.required:
                yield f"{name}: missing {a.metavar}", [t for t in base if t != "acme/x"], False
        if not any(a.rest for a in cmd.args):
            yield f"{name}: an extra argument", [*base, "extra", "more"], False
        yield f"{name}: an unknown option", [*base[:len(cmd.path)], "--bogus", *base[len(cmd.path):]], False
        for g in spec.GLOBAL_OPTS:
            if any(g.flags[0] in o.flags for o in cmd.opts):
                continue
            v = [] if g.kind == "flag" else [_valid(g)[0]]
            yield f"{name}: global {g.flags[0]} first", [g.flags[0], *v, *base], True
            yield f"{name}: global {g.flags[0]} after", [*base[:len(cmd.path)], g.flags[0], *v,
                                                         *base[len(cmd.path):]], True


CASES = list(_cases())


@pytest.mark.parametrize(("argv", "valid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_both_parsers_agree(root, argv, valid):
    fast, slow = fast_parse(argv), click_parse(root, argv)
    assert fast == slow, f"fast parser: {fast}\nclick: {slow}"
    assert (fast != REJECTED) == valid, fast


def test_every_option_kind_is_covered():
    kinds = {o.kind for c in spec.COMMANDS for o in c.opts} | {o.kind for o in spec.GLOBAL_OPTS}
    assert kinds == {"str", "int", "dur", "flag", "multi"}
    assert any(o.choices for c in spec.COMMANDS for o in c.opts)
    assert any(o.required for c in spec.COMMANDS for o in c.opts)
    assert any(a.rest for c in spec.COMMANDS for a in c.args)
    assert len(CASES) > 1000


@pytest.mark.parametrize("argv", [
    ["secret", "get", "x", "-h"], ["-h", "secret", "get", "x"], ["secret", "-h"], ["--vault", "v", "key", "create", "--help"],
    ["backup", "-o", "-h"], ["key", "create", "k", "--algorithm", "--help"], ["encrypt", "-o", "--help"],
    ["exec", "-s", "x", "-h", "--", "ls"],
])
def test_help_is_requested_before_double_dash(argv):
    with pytest.raises(parse.HelpRequested) as info:
        parse.parse(argv)
    path = info.value.path
    assert path == tuple(w for w in argv if w in {p for c in spec.COMMANDS for p in c.path})[:len(path)]
    assert info.value.argv == [*path, "--help"]  # only the path: never the user's other arguments


@pytest.mark.parametrize("argv", [["exec", "-s", "x", "--", "ls", "-h"], ["exec", "ls", "-h", "--help"]])
def test_help_after_double_dash_or_cmd_is_the_childs(argv):
    p = parse.parse(argv)
    assert p.params["command"][-1] in ("-h", "--help")


def test_typer_commands_never_run(root):
    ctx = root.make_context("kms-cli", ["secret", "get", "x"])
    _, sub, rest = root.resolve_command(ctx, _pending(ctx))
    sctx = sub.make_context("secret", rest, parent=ctx)
    _, leaf, rest = sub.resolve_command(sctx, _pending(sctx))
    with pytest.raises(RuntimeError, match="dispatch only"):
        leaf.callback(**leaf.make_context("get", rest, parent=sctx).params)


@pytest.mark.parametrize("argv", [
    ["encrypt", "-qa", "-ofile", "--key", "k"], ["encrypt", "-ao", "f"], ["encrypt", "-o-"], ["-q", "secret", "get", "x"],
    ["encrypt", "-qx"], ["secret", "get", "--", "x"], ["secret", "get", "-", "--version=2"], ["key"],
    ["audit", "log", "-fq", "--since", "1h"], ["nosuch"], ["secret", "nosuch"],
])
def test_short_options_and_odd_forms_agree(root, argv):
    assert fast_parse(argv) == click_parse(root, argv)


def test_no_command_is_usage():
    assert parse.parse([]).cmd is None and parse.parse(["--json", "-q"]).cmd is None  # entry: usage, exit 2
