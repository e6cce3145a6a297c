"""Handlers for `secret ...`: values come from stdin, a file or a hidden prompt, never argv."""

from __future__ import annotations

import sys

from kms_cli import fileio
from kms_cli.cli import output
from kms_cli.durations import parse_duration
from kms_cli.errors import UsageError


def _read_value(ctx, from_file: str | None) -> bytes:
    if from_file:
        return fileio.read_input(from_file)
    if sys.stdin.isatty():
        return ctx.prompt("value", True).encode()
    return sys.stdin.buffer.read()


def put(ctx, name, from_file, ttl, tag, rotate_every=None, rotate_with=None) -> int:
    from kms_cli.vault import secrets

    seconds = parse_duration(ttl) if ttl else None
    if seconds == 0:
        raise UsageError("option --ttl must be longer than 0s", hint="leave --ttl out for a value that never expires")
    every = parse_duration(rotate_every) if rotate_every else None
    if every == 0:
        raise UsageError("option --rotate-every must be longer than 0s")
    program = None
    if rotate_with is not None:
        import shlex

        try:
            program = shlex.split(rotate_with)
        except ValueError as exc:
            raise UsageError(f"--rotate-with is not a command line: {exc}") from None
        if not program:
            raise UsageError("--rotate-with needs a program", hint="e.g. --rotate-with '/usr/local/bin/new-db-password app'")
    tags = ctx.parse_map(tag, "tag") if tag else None
    prompted = not from_file and sys.stdin.isatty()
    value = None if prompted else _read_value(ctx, from_file)
    with ctx.vault() as vault:
        if prompted:  # unlocked first: a wrong passphrase does not throw away a typed value
            value = _read_value(ctx, from_file)
        info = secrets.put(vault, name, value, seconds, tags, rotate_every=every, rotate_with=program)
    ctx.emit(info, lambda i: ctx.info(f"stored {i['name']} version {i['version']}"))
    return 0


def get(ctx, name, version, op: str = "secret.get") -> int:
    from kms_cli.vault import secrets

    ctx.need_stdout()
    with ctx.vault() as vault:
        got_version, value = secrets.get(vault, name, version, op=op)
    raw = value.reveal()
    if ctx.json:
        doc = {"name": name, "version": got_version}
        try:
            doc["value"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            doc["value_b64"] = base64.b64encode(raw).decode()
        ctx.emit_json(doc)
    else:
        ctx.stdout.write(raw)
    return 0


def list_(ctx, tag) -> int:
    from kms_cli.vault import secrets

    tags = ctx.parse_map(tag, "tag")
    with ctx.vault() as vault:
        items = secrets.list_secrets(vault, tags)
    ctx.emit(items, lambda items: output.table(
        ctx, ["NAME", "VERSION", "UPDATED", "EXPIRES", "TAGS"],
        [[s["name"], s["version"], s["updated"], (s["expires"] or "") + (" (expired)" if s["expired"] else ""),
          ",".join(f"{k}={v}" for k, v in s["tags"].items())] for s in items],
        empty="no secrets"))
    return 0


def history(ctx, name) -> int:
    from kms_cli.vault import secrets

    with ctx.vault() as vault:
        items = secrets.history(vault, name)
    ctx.emit(items, lambda items: output.table(
        ctx, ["VERSION", "CREATED", "EXPIRES", "CURRENT"],
        [[h["version"], h["created"], (h["expires"] or "") + (" (expired)" if h["expired"] else ""),
          "*" if h["current"] else ""] for h in items]))
    return 0


def rm(ctx, name) -> int:
    from kms_cli.vault import secrets

    with ctx.vault() as vault:
        info = secrets.remove(vault, name)
    ctx.emit(info, lambda i: ctx.info(f"removed {i['name']} ({output.plural(i['versions_removed'], 'version')})"))
    return 0


def import_(ctx, file) -> int:
    from kms_cli import dotenv
    from kms_cli.vault import secrets

    from kms_cli.cli.data import announce_terminal_input

    announce_terminal_input(ctx, file, "dotenv lines")
    # As python-dotenv reads a file: UTF-8, CRLF and CR turned to LF (inside quoted values too);
    # unlike its default loader, ${...} is NOT expanded: a value is what the file says.
    items = [(k, v.encode()) for k, v in dotenv.load(fileio.read_input(file))]
    for k, v in items:  # the same limit as `secret put`, before anything is opened or stored
        if len(v) > secrets.MAX_VALUE:
            raise UsageError(f"the value of {k[:256]} is larger than {secrets.MAX_VALUE} bytes",
                             hint="store files with `kms-cli encrypt`")
    from kms_cli.cli.progress import progress

    with ctx.vault() as vault, progress(ctx, len(items), "importing", unit="secrets") as p:
        done = secrets.import_items(vault, items, progress=p.update)
    ctx.emit(done, lambda d: ctx.info(f"imported {output.plural(len(d), 'secret')}"))
    return 0


def export(ctx, format, output) -> int:  # noqa: A002
    import json

    from kms_cli import dotenv
    from kms_cli.vault import secrets

    out: dict[str, bytes] = {}

    def render(items) -> None:  # inside the audited read: a value the format cannot carry is its result
        if format == "json" or ctx.json:
            doc = {}
            for name, value in items:
                raw = value.reveal()
                try:
                    doc[name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise UsageError(f"secret {name!r} is not UTF-8 text; JSON export needs text values") from None
            out["data"] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        else:  # python-dotenv's default loader and `set -a; . FILE` read back exactly what is written
            out["data"] = dotenv.serialize(
                items, subject="secret",
                hint="use --format json, or `kms-cli env --all --format sh` "
                     "(variable names a shell accepts, any byte but NUL)",
            ).encode()

    # The output is opened (directory checked, temporary file made) before the audited read.
    with fileio.atomic_output(output) as dst:
        with ctx.vault() as vault:
            secrets.export_all(vault, check=render)
        dst.write(out["data"])
    return 0
