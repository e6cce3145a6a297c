"""Handlers for encrypt, decrypt, rewrap and datakey: streams in, streams out."""

from __future__ import annotations


from kms_cli import armor, fileio


def encrypt(ctx, key, context, input, output, armor, public_key) -> int:  # noqa: A002 - names from the table
    from kms_cli import armor as armor_mod
    from kms_cli.errors import UsageError
    from kms_cli.vault import data

    if bool(key) == bool(public_key):
        raise UsageError("give exactly one of --key NAME and --public-key FILE")
    pairs = ctx.parse_pairs(context, "context")
    src = fileio.open_input(input)

    def run(dst):
        if public_key:
            return data.encrypt_to_public_key(fileio.read_input(public_key), pairs, src, dst)
        with ctx.vault() as vault:
            return data.encrypt(vault, key, pairs, src, dst)

    if public_key:
        fileio.read_input(public_key)  # a missing key file fails before OUT is created
    with fileio.atomic_output(output) as dst:
        if armor:
            w = armor_mod.ArmorWriter(dst)
            run(w)
            w.finish()
        else:
            run(dst)
    return 0


def decrypt(ctx, context, input, output) -> int:  # noqa: A002
    from kms_cli.vault import data

    pairs = ctx.parse_pairs(context, "context")
    src = armor.open_input(fileio.open_input(input))
    with ctx.vault() as vault, fileio.atomic_output(output) as dst:
        data.decrypt(vault, pairs, src, dst)
    return 0


def rewrap(ctx, input, output) -> int:  # noqa: A002
    from kms_cli.vault import data

    raw = fileio.open_input(input)
    src = armor.open_input(raw)
    armored = src is not raw and isinstance(getattr(src, "raw", None), armor.ArmorReader)
    with ctx.vault() as vault, fileio.atomic_output(output) as dst:
        if armored:
            w = armor.ArmorWriter(dst)
            info = data.rewrap(vault, src, w)
            w.finish()
        else:
            info = data.rewrap(vault, src, dst)
    ctx.info(f"rewrapped to {info['key']} version {info['version']}")
    return 0


def datakey(ctx, key) -> int:
    from kms_cli.vault import data

    ctx.need_stdout()
    with ctx.vault() as vault:
        ctx.emit_json(data.datakey(vault, key))
    return 0
