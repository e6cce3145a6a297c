"""Handlers for encrypt, decrypt, rewrap and datakey: streams in, streams out.

On a terminal: binary ciphertext is never written to a terminal (exit 2, as age does), a
ciphertext (or plaintext) read from a terminal is announced ("waiting for ...") after the vault
is unlocked, so the passphrase prompt and the pasted input do not interleave, and a long stream
shows a progress bar on stderr (`kms_cli.cli.progress`).
"""

from __future__ import annotations


from kms_cli import armor, fileio

_BINARY_HINT = "write it to a file with -o FILE, or as text with --armor"


def _from_terminal(src) -> bool:
    try:
        return bool(src.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _waiting(ctx, what: str) -> None:
    ctx.info(f"waiting for the {what} on standard input (a terminal): paste or type it, then press Ctrl-D "
             f"(or pass -i FILE)")


def announce_terminal_input(ctx, path: str | None, what: str) -> None:
    """Before a command reads `what` whole from `-i -`/stdin: say so when stdin is a terminal."""
    import sys

    if path in (None, "-") and _from_terminal(sys.stdin):
        _waiting(ctx, what)


def terminal_input(ctx, src, what: str):
    """`src`, or when it is a terminal: say that the command waits for `what` (call it once
    unlocked) and read it to the first end of file (one Ctrl-D: a terminal's end of file holds
    for one read only, and a reader that reads on after a short read would wait for a second)."""
    if not _from_terminal(src):
        return src
    import io

    _waiting(ctx, what)
    return io.BytesIO(src.read())


def _armored_size(total: int | None) -> int | None:
    """The binary size an armored input of `total` bytes decodes to (64 characters and a newline
    per 48 bytes), for the bar's total."""
    return None if total is None else total * 48 // 65


def _is_armored(src, raw) -> bool:
    return src is not raw and isinstance(getattr(src, "raw", None), armor.ArmorReader)


def encrypt(ctx, key, context, input, output, armor, public_key) -> int:  # noqa: A002 - names from the table
    from kms_cli import armor as armor_mod
    from kms_cli.cli.output import refuse_binary_to_terminal
    from kms_cli.cli.progress import input_size, progress
    from kms_cli.errors import UsageError
    from kms_cli.vault import data

    if bool(key) == bool(public_key):
        raise UsageError("give exactly one of --key NAME and --public-key FILE")
    pairs = ctx.parse_pairs(context, "context")
    if not armor:
        refuse_binary_to_terminal(ctx, output, "binary ciphertext", _BINARY_HINT)
    src = fileio.open_input(input)

    def run(dst):
        if public_key:
            return data.encrypt_to_public_key(fileio.read_input(public_key), pairs,
                                              terminal_input(ctx, src, "plaintext"), dst)
        with ctx.vault() as vault:
            return data.encrypt(vault, key, pairs, terminal_input(ctx, src, "plaintext"), dst)

    if public_key:
        fileio.read_input(public_key)  # a missing key file fails before OUT is created
    with fileio.atomic_output(output) as dst, \
            progress(ctx, input_size(src), "encrypting", to_stdout=output in (None, "-")) as p:
        if armor:
            w = armor_mod.ArmorWriter(dst)
            run(p.writer(w))
            w.finish()
        else:
            run(p.writer(dst))
    return 0


def decrypt(ctx, context, input, output) -> int:  # noqa: A002
    from kms_cli.cli.progress import input_size, progress
    from kms_cli.vault import data

    pairs = ctx.parse_pairs(context, "context")
    raw = fileio.open_input(input)
    total = input_size(raw)
    from_terminal = _from_terminal(raw)
    src = None if from_terminal else armor.open_input(raw)
    with ctx.vault() as vault:
        if from_terminal:  # unlocked (any passphrase asked) before waiting for the pasted ciphertext
            src = armor.open_input(terminal_input(ctx, raw, "ciphertext"))
        if _is_armored(src, raw):
            total = _armored_size(total)
        with fileio.atomic_output(output) as dst, \
                progress(ctx, total, "decrypting", to_stdout=output in (None, "-")) as p:
            data.decrypt(vault, pairs, src, p.writer(dst))
    return 0


def rewrap(ctx, input, output, paths=None, in_place=False, recursive=False, dry_run=False) -> int:  # noqa: A002
    if in_place:
        from kms_cli.cli.bulk_rewrap import rewrap_in_place

        return rewrap_in_place(ctx, paths or [], recursive=recursive, dry_run=dry_run, input=input, output=output)
    if paths or recursive or dry_run:
        from kms_cli.errors import UsageError

        raise UsageError("PATH arguments, --recursive and --dry-run go with --in-place",
                         hint="kms-cli rewrap --in-place [-r] PATH...  (or rewrap -i IN -o OUT for one stream)")
    from kms_cli.cli.output import refuse_binary_to_terminal
    from kms_cli.cli.progress import input_size, progress
    from kms_cli.vault import data

    raw = fileio.open_input(input)
    total = input_size(raw)
    from_terminal = _from_terminal(raw)
    src = None if from_terminal else armor.open_input(raw)
    if src is not None and not _is_armored(src, raw):
        refuse_binary_to_terminal(ctx, output, "binary ciphertext", "write it to a file with -o FILE")
    with ctx.vault() as vault:
        if from_terminal:
            raw = terminal_input(ctx, raw, "ciphertext")
            src = armor.open_input(raw)
        armored = _is_armored(src, raw)
        if armored:
            total = _armored_size(total)
        else:
            refuse_binary_to_terminal(ctx, output, "binary ciphertext", "write it to a file with -o FILE")
        with fileio.atomic_output(output) as dst, \
                progress(ctx, total, "rewrapping", to_stdout=output in (None, "-")) as p:
            if armored:
                w = armor.ArmorWriter(dst)
                info = data.rewrap(vault, src, p.writer(w))
                w.finish()
            else:
                info = data.rewrap(vault, src, p.writer(dst))
    ctx.info(f"rewrapped to {info['key']} version {info['version']}")
    return 0


def datakey(ctx, key) -> int:
    from kms_cli.vault import data

    ctx.need_stdout()
    with ctx.vault() as vault:
        ctx.emit_json(data.datakey(vault, key))
    return 0
