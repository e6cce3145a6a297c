"""Handlers for `audit ...`: log, follow, verify, export and prune over kms_cli.vault.audit; render only."""

from __future__ import annotations

import json
import sys

from kms_cli import fileio
from kms_cli.durations import parse_duration

_COLUMNS = ("SEQ", "TIME", "ACTOR", "OP", "TARGET", "VERSION", "RESULT")
_WIDTHS = (7, 20, 24, 18, 32, 7, 0)


def _json_line(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _cells(entry: dict) -> list[str]:
    actor = entry.get("actor") or {}
    who = f"{actor.get('user')}@{actor.get('host')}" + (f" ({actor['ci']})" if actor.get("ci") else "")
    result = entry["result"] + (f" ({entry['error']})" if entry.get("error") else "")
    return [str(entry["seq"]), entry["time"], who, entry["op"], entry.get("target") or "-",
            "" if entry.get("version") is None else str(entry["version"]), result]


class _Printer:
    """One entry per line: JSON lines with --json; else a header and rows (tab-separated in pipes)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.tty = sys.stdout.isatty()
        self.count = 0

    def _line(self, cells) -> str:
        if not self.tty:
            return "\t".join(cells)
        return "  ".join(c.ljust(w) if w else c for c, w in zip(cells, _WIDTHS)).rstrip()

    def __call__(self, entry: dict) -> None:
        out = self.ctx.stdout
        if self.ctx.json:
            out.write(_json_line(entry))
        else:
            if not self.count:
                out.write(self._line(_COLUMNS).encode() + b"\n")
            out.write(self._line(_cells(entry)).encode() + b"\n")
        self.count += 1

    def flush(self) -> None:
        self.ctx.stdout.flush()


def log(ctx, since, target, op, follow) -> int:
    from kms_cli.vault import audit

    window = parse_duration(since) if since else None
    emit = _Printer(ctx)
    with ctx.vault() as vault:
        top = audit.log(vault, since=window, target=target, op=op, emit=emit)
        emit.flush()
        if not follow:
            if not emit.count:
                ctx.info("no audit entries match")
            return 0
        try:
            for entry in audit.follow(vault, after=top, since=window, target=target, op=op):
                emit(entry)
                emit.flush()
        except KeyboardInterrupt:  # the way to stop following
            return 0
    return 0


def verify(ctx) -> int:
    from kms_cli.vault import audit

    from kms_cli.cli.progress import progress

    with ctx.vault() as vault:
        with progress(ctx, None, "verifying the audit log", unit="entries") as p:
            result = audit.verify(vault, progress=p.update if p else None)
    if ctx.json:
        ctx.emit_json({"ok": True, "entries": result.entries, "first_seq": result.first_seq,
                       "last_seq": result.last_seq})
    else:
        since = f" (from the checkpoint at seq {result.first_seq})" if result.first_seq > 1 else ""
        from kms_cli.cli.output import plural

        ctx.stdout.write(f"ok: {plural(result.entries, 'entry', 'entries')}, chain and head intact{since}\n".encode())
    return 0


def export(ctx, output) -> int:
    from kms_cli.vault import audit

    with ctx.vault() as vault:
        with fileio.atomic_output(output) as out:
            audit.log(vault, emit=lambda entry: out.write(_json_line(entry)), op_name="audit.export")
    if output not in (None, "-"):
        ctx.info(f"exported the audit log to {output}")
    return 0


def prune(ctx, before) -> int:
    from kms_cli.vault import audit

    seconds = parse_duration(before)
    with ctx.vault() as vault:
        info = audit.prune(vault, seconds)
    if ctx.json:
        ctx.emit_json(info)
    elif info["pruned"]:
        from kms_cli.cli.output import plural

        ctx.info(f"pruned {plural(info['pruned'], 'entry', 'entries')} older than {info['before']}; "
                 f"the chain now starts at the checkpoint at seq {info['checkpoint']}")
    else:
        ctx.info(f"no entries older than {info['before']}")
    return 0
