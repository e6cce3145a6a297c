"""Handlers for `master ...`: slots and root key rotation."""

from __future__ import annotations

from kms_cli.cli import output


def list_(ctx) -> int:
    from kms_cli.vault import slots

    with ctx.vault() as vault:
        items = slots.list_slots(vault)
    ctx.emit(items, lambda items: output.table(
        ctx, ["SLOT", "SOURCE", "LABEL", "CREATED", "LAST USED"],
        [[s["slot"], s["source"] + (" (unlocked now)" if s["current"] else ""), s["label"] or "-", s["created"],
          s["last_used"]] for s in items]))
    return 0


def _added(ctx, i) -> None:
    ctx.info(f"added slot {i['slot']} ({i['source']})" + (f", label {i['label']!r}" if i["label"] else ""))


def add(ctx, source, create_key, allow_weak_passphrase, recipients_file=None, label=None) -> int:
    from kms_cli.errors import UsageError
    from kms_cli.vault import slots

    label = slots.check_label(label)
    if (source is None) == (recipients_file is None):
        raise UsageError("give a SOURCE or --recipients-file F (not both)", hint="kms-cli master add SOURCE")
    if recipients_file is not None:
        from kms_cli import fileio

        lines = slots.recipient_lines(fileio.read_input(recipients_file), recipients_file)
        with ctx.vault() as vault:
            added = slots.add_recipients(vault, lines, ctx.source_options(), label)
        ctx.emit(added, lambda a: [_added(ctx, i) for i in a])
        return 0
    with ctx.vault() as vault:
        info = slots.add(vault, source, ctx.source_options(create_key=create_key, allow_weak_passphrase=allow_weak_passphrase),
                         label)
    ctx.emit(info, lambda i: _added(ctx, i))
    return 0


def remove(ctx, slot, rotate=False) -> int:
    from kms_cli.vault import slots

    with ctx.vault() as vault:
        info = slots.remove(vault, slot, rotate_root=rotate)
    if ctx.json:
        ctx.emit_json(info)
        return 0
    if rotate:
        from kms_cli.cli.output import plural

        r = info["rotated"]
        ctx.info(f"removed slot {info['slot']} ({info['source']}) and rotated the root key: re-sealed "
                 f"{plural(r['key_versions'], 'key version')}, {plural(r['secret_versions'], 'secret version')} "
                 f"and {plural(r['slots'], 'slot')}")
    else:
        ctx.info(f"removed slot {info['slot']} ({info['source']})")
        if info["source"].startswith(("age1", "ssh-")):
            ctx.info("hint: the removed recipient may have kept the root key; run `kms-cli master rotate` (or "
                     "remove with --rotate) so it opens nothing written from now on")
    return 0


def rotate(ctx, allow_weak_passphrase) -> int:
    from kms_cli.cli.output import plural
    from kms_cli.cli.progress import progress
    from kms_cli.vault import slots

    with ctx.vault(allow_weak_passphrase=allow_weak_passphrase) as vault:
        with progress(ctx, None, "re-sealing keys and secrets", unit="items") as p:
            info = slots.rotate(vault, progress=p.update if p else None)
    ctx.emit(info, lambda i: ctx.info(
        f"new root key: re-sealed {plural(i['key_versions'], 'key version')}, "
        f"{plural(i['secret_versions'], 'secret version')} and {plural(i['slots'], 'slot')}"))
    return 0
