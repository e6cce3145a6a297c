"""Handlers for `policy set|show|rm`: rotation policies per namespace (spec section 9); render only."""

from __future__ import annotations


def _line(p: dict) -> str:
    every = ", ".join(f"{k} every {v}" for k, v in p["rotate_every"].items()) or "no schedule"
    grace = f"; old versions decrypt for {p['grace']} after a rotation" if p["grace"] else ""
    return f"{p['namespace'] or '(root)'}: {every}{grace}"


def set_(ctx, namespace, rotate_every, grace) -> int:
    from kms_cli.durations import parse_duration
    from kms_cli.vault import policy

    schedules = policy.parse_schedules(rotate_every or [])
    g = parse_duration(grace) if grace is not None else None
    with ctx.vault() as vault:
        p = policy.set_(vault, namespace, schedules, g)
    ctx.emit(p, lambda p: ctx.info(f"policy set: {_line(p)}"))
    return 0


def show(ctx, namespace) -> int:
    from kms_cli.vault import policy

    with ctx.vault() as vault:
        shown = policy.show(vault, namespace)
    if ctx.json:
        ctx.emit_json(shown)
    elif isinstance(shown, dict):
        ctx.stdout.write((_line(shown) + "\n").encode())
    elif shown:
        ctx.stdout.write(("\n".join(_line(p) for p in shown) + "\n").encode())
    else:
        ctx.info("no policy is set")
    return 0


def rm(ctx, namespace) -> int:
    from kms_cli.vault import policy

    with ctx.vault() as vault:
        p = policy.rm(vault, namespace)
    ctx.emit({"removed": p}, lambda _: ctx.info(f"policy removed: {p['namespace'] or '(root)'}"))
    return 0
