"""Associated data and MAC inputs: a label, then every part length-prefixed (unambiguous)."""

from __future__ import annotations

import struct


def bind(kind: str, *parts) -> bytes:
    out = [b"kms-cli/v1/" + kind.encode() + b"\x00"]
    for p in parts:
        if isinstance(p, int):
            p = str(p)
        if isinstance(p, str):
            p = p.encode()
        out.append(struct.pack(">I", len(p)) + p)
    return b"".join(out)
