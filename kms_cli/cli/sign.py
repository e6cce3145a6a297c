"""Handlers for sign, verify and key public."""

from __future__ import annotations

from kms_cli import fileio


def sign(ctx, key, input, output, raw, context) -> int:  # noqa: A002
    from kms_cli.cli.output import refuse_binary_to_terminal
    from kms_cli.cli.progress import input_size, progress
    from kms_cli.vault import signing

    refuse_binary_to_terminal(ctx, output, "a binary signature", "write it to a file with -o SIG")
    from kms_cli.cli.data import terminal_input

    src = fileio.open_input(input)
    with ctx.vault() as vault, progress(ctx, input_size(src), "signing") as p:
        src = terminal_input(ctx, src, "data to sign")
        sig = signing.sign(vault, key, p.reader(src), raw=raw, context=(context or "").encode())
    with fileio.atomic_output(output) as dst:
        dst.write(sig)
    return 0


def verify(ctx, key, signature, input, context) -> int:  # noqa: A002
    from kms_cli.vault import signing

    from kms_cli.cli.progress import input_size, progress

    from kms_cli.cli.data import terminal_input

    sig = fileio.read_input(signature)
    src = fileio.open_input(input)
    with ctx.vault() as vault, progress(ctx, input_size(src), "verifying") as p:
        src = terminal_input(ctx, src, "signed data")
        info = signing.verify(vault, key, sig, p.reader(src), context=(context or "").encode())
    ctx.emit(info, lambda i: ctx.info(f"valid signature by {i['key']} version {i['version']} ({i['algorithm']})"))
    return 0


def public(ctx, name, version, format, output) -> int:  # noqa: A002
    from kms_cli.cli.output import refuse_binary_to_terminal
    from kms_cli.vault import signing

    if format == "raw" and not ctx.json:
        refuse_binary_to_terminal(ctx, output, "a raw public key", "write it to a file with -o FILE, "
                                                                    "or as text with --format pem")
    with ctx.vault() as vault:
        data, info = signing.public_key(vault, name, version, format)
    if ctx.json and format != "jwk":
        import base64

        info["public_key"] = data.decode() if format == "pem" else base64.b64encode(data).decode()
        ctx.emit_json(info)
        return 0
    with fileio.atomic_output(output) as dst:
        dst.write(data if data.endswith(b"\n") or format == "raw" else data + b"\n")
    return 0
