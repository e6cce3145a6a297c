"""Handlers for sign, verify and key public."""

from __future__ import annotations

from kms_cli import fileio


def sign(ctx, key, input, output, raw, context) -> int:  # noqa: A002
    from kms_cli.vault import signing

    src = fileio.open_input(input)
    with ctx.vault() as vault:
        sig = signing.sign(vault, key, src, raw=raw, context=(context or "").encode())
    with fileio.atomic_output(output) as dst:
        dst.write(sig)
    return 0


def verify(ctx, key, signature, input, context) -> int:  # noqa: A002
    from kms_cli.vault import signing

    sig = fileio.read_input(signature)
    src = fileio.open_input(input)
    with ctx.vault() as vault:
        info = signing.verify(vault, key, sig, src, context=(context or "").encode())
    ctx.emit(info, lambda i: ctx.info(f"valid signature by {i['key']} version {i['version']} ({i['algorithm']})"))
    return 0


def public(ctx, name, version, format, output) -> int:  # noqa: A002
    from kms_cli.vault import signing

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
