"""Handler for `identity generate`: a new age identity for a person or a CI runner."""

from __future__ import annotations

import os

from kms_cli.errors import AlreadyExistsError, UsageError


def generate(ctx, pq, output) -> int:
    from kms_cli.vault.identities import generate as make

    text, recipient = make(pq)
    if output in (None, "-"):  # as age-keygen: the identity on stdout, the recipient on stderr
        ctx.stdout.write(text.encode())
        ctx.stdout.flush()
        ctx.info(f"recipient: {recipient}")
        return 0
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AlreadyExistsError(f"{output} already exists", hint="choose another file; an identity is never overwritten") from None
    except OSError as exc:
        raise UsageError(f"cannot create {output}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if ctx.json:
        ctx.emit_json({"file": output, "recipient": recipient})
    else:
        ctx.stdout.write(recipient.encode() + b"\n")
    return 0
