"""The key algorithms kms-cli accepts, with each one's purpose (encrypt or sign)."""

from __future__ import annotations

from dataclasses import dataclass

from kms_cli.errors import UsageError


@dataclass(frozen=True)
class Algorithm:
    name: str
    purpose: str  # "encrypt" or "sign"
    symmetric: bool


_ALL = [
    Algorithm("aes-256-gcm", "encrypt", True),
    Algorithm("chacha20-poly1305", "encrypt", True),
]
ALGORITHMS = {a.name: a for a in _ALL}
DEFAULT = "aes-256-gcm"


def get(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UsageError(
            f"unknown algorithm {name!r}",
            hint="accepted algorithms: " + ", ".join(ALGORITHMS),
        ) from None


def generate(alg: Algorithm) -> tuple[bytes, bytes | None]:
    """Fresh key material: (private or secret bytes, public bytes or None)."""
    from kms_cli.crypto.primitives import random_bytes

    if alg.symmetric:
        return random_bytes(32), None
    raise UsageError(f"algorithm {alg.name} is not supported yet")
