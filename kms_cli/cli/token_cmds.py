"""Handlers for `token create|list|revoke`: the policy lives in kms_cli.vault.tokens."""

from __future__ import annotations


def create(ctx, name, allow, token_namespace, ttl) -> int:
    from kms_cli.durations import parse_duration
    from kms_cli.vault import tokens

    ops = tokens.parse_ops(allow)
    seconds = parse_duration(ttl) if ttl else None
    with ctx.vault() as vault:
        namespace = vault.ns.full(token_namespace) if token_namespace else vault.ns.prefix
        token, info = tokens.create(vault, name, ops, namespace, seconds)
    if ctx.json:
        ctx.emit_json({**info, "token": token})
    else:
        ctx.stdout.write(token.encode() + b"\n")
        ctx.info(f"created token {info['name']} ({', '.join(info['allow'])}"
                 + (f" in {info['namespace']}" if info["namespace"] else "") + f", expires {info['expires']}): "
                 "shown once, keep it now")
    return 0


def list_(ctx) -> int:
    from kms_cli.cli import output
    from kms_cli.vault import tokens

    with ctx.vault() as vault:
        items = tokens.list_(vault)
    ctx.emit(items, lambda items: output.table(
        ctx, ["NAME", "ALLOW", "NAMESPACE", "EXPIRES", "LAST USED", "STATE"],
        [[t["name"], ",".join(t["allow"]), t["namespace"] or "-", t["expires"] or "never", t["last_used"] or "-",
          t["state"]] for t in items]))
    return 0


def revoke(ctx, name) -> int:
    from kms_cli.vault import tokens

    with ctx.vault() as vault:
        info = tokens.revoke(vault, name)
    ctx.emit(info, lambda i: ctx.info(f"revoked token {i['name']}: refused from its next request"))
    return 0
