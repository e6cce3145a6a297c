"""Handlers for `key ...`: parse options, call the vault's key policy, render."""

from __future__ import annotations

from kms_cli.cli import output
from kms_cli.durations import parse_duration
from kms_cli.errors import UsageError


def _render_key(ctx, k: dict) -> None:
    pairs = [("name", k["name"]), ("algorithm", k["algorithm"]), ("purpose", k["purpose"]), ("state", k["state"]),
             ("primary version", k["primary_version"]), ("created", k["created"])]
    if k.get("description"):
        pairs.append(("description", k["description"]))
    if k.get("labels"):
        pairs.append(("labels", ", ".join(f"{a}={b}" for a, b in k["labels"].items())))
    if k.get("rotate_every"):
        pairs += [("rotate every", k["rotate_every"]), ("next rotation", k["next_rotation"])]
    if k.get("destroy_at"):
        pairs.append(("destroy at", k["destroy_at"]))
    output.fields(ctx, pairs)
    if "versions" in k:
        print()
        output.table(ctx, ["VERSION", "STATE", "CREATED", "GRACE UNTIL", "REVOKED", "REASON"],
                     [[v["version"], v["state"], v["created"], v["grace_until"], v["revoked"], v["revoke_reason"]]
                      for v in k["versions"]])


def create(ctx, name, algorithm, rotate_every, description, label) -> int:
    from kms_cli.vault import keys

    every = parse_duration(rotate_every) if rotate_every else None
    if every == 0:
        raise UsageError("option --rotate-every must be longer than 0s")
    labels = ctx.parse_map(label, "label")
    with ctx.vault() as vault:
        k = keys.create(vault, name, algorithm, every, description, labels)
    ctx.emit(k, lambda k: ctx.info(f"created key {k['name']} ({k['algorithm']}, version 1)"))
    return 0


def list_(ctx) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        items = keys.list_keys(vault)
    ctx.emit(items, lambda items: output.table(
        ctx, ["NAME", "ALGORITHM", "STATE", "PRIMARY", "NEXT ROTATION"],
        [[k["name"], k["algorithm"], k["state"], k["primary_version"], k["next_rotation"]] for k in items],
        empty="no keys"))
    return 0


def show(ctx, name) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        k = keys.show(vault, name)
    ctx.emit(k, lambda k: _render_key(ctx, k))
    return 0


def _action_line(a: dict, dry_run: bool) -> str:
    if a["action"] == "destroy":
        return f"{'would destroy' if dry_run else 'destroyed'} {a['name']} (its destroy window has passed)"
    why = f" (policy {a['policy']}" + (f", old versions decrypt for {a['grace']}" if a["grace"] else "") + ")" \
        if a.get("policy") else ""
    return f"{'would rotate' if dry_run else 'rotated'} {a['name']} to version {a['version']}{why}"


def rotate(ctx, name, reason, grace, due, dry_run=False) -> int:
    from kms_cli.vault import keys

    if dry_run and not due:
        raise UsageError("--dry-run goes with --due", hint="kms-cli key rotate --due --dry-run")
    if due:
        if name:
            raise UsageError("give either a key name or --due, not both")
        with ctx.vault() as vault:
            done = keys.rotate_due(vault, dry_run=dry_run)
        if ctx.json:
            ctx.emit_json(done)
        else:
            for d in done:
                ctx.stdout.write((_action_line(d, dry_run) + "\n").encode())
            if not done:
                ctx.info("no key is due for rotation")
        return 0
    if not name:
        raise UsageError("missing argument NAME for `key rotate`", hint="or pass --due to rotate every due key")
    g = parse_duration(grace) if grace else None
    with ctx.vault() as vault:
        k = keys.rotate(vault, name, reason, g)
    ctx.emit(k, lambda k: ctx.info(f"rotated {k['name']} to version {k['primary_version']}"))
    return 0


def revoke(ctx, name, version, reason) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        k = keys.revoke(vault, name, version, reason)
    what = f"version {version}" if version else "every version"
    ctx.emit(k, lambda k: ctx.info(f"revoked {what} of {k['name']}"))
    return 0


def disable(ctx, name) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        k = keys.set_enabled(vault, name, False)
    ctx.emit(k, lambda k: ctx.info(f"disabled {k['name']}"))
    return 0


def enable(ctx, name) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        k = keys.set_enabled(vault, name, True)
    ctx.emit(k, lambda k: ctx.info(f"enabled {k['name']}"))
    return 0


def destroy(ctx, name, after) -> int:
    from kms_cli.vault import keys

    window = parse_duration(after) if after else None
    with ctx.vault() as vault:
        k = keys.destroy(vault, name, window)
    ctx.emit(k, lambda k: ctx.info(
        f"{k['name']} is destroyed" if k["state"] == "destroyed"
        else f"{k['name']} will be destroyed at {k['destroy_at']}; undo with `kms-cli key cancel-destroy {k['name']}`"))
    return 0


def cancel_destroy(ctx, name) -> int:
    from kms_cli.vault import keys

    with ctx.vault() as vault:
        k = keys.cancel_destroy(vault, name)
    ctx.emit(k, lambda k: ctx.info(f"cancelled the destruction of {k['name']}"))
    return 0
