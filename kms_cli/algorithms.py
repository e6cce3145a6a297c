"""The key algorithms kms-cli accepts (spec section 4, Keys), each with its purpose.

Symmetric algorithms are defined here; asymmetric and post-quantum ones come
from the crypto layer's registry (`kms_cli.crypto.asym`), in spec order.
"""

from __future__ import annotations

from collections import namedtuple

from kms_cli.errors import UsageError

Algorithm = namedtuple("Algorithm", ("name", "purpose", "symmetric"))
Algorithm.__doc__ = """A key algorithm: name; purpose: "encrypt" or "sign"; symmetric: bool."""


SYMMETRIC = ("aes-256-gcm", "chacha20-poly1305")
DEFAULT = "aes-256-gcm"


def _build() -> dict[str, Algorithm]:
    from kms_cli.crypto import asym

    out = {name: Algorithm(name, "encrypt", True) for name in SYMMETRIC}
    for name in asym.names():
        out[name] = Algorithm(name, asym.ALGORITHMS[name].purpose, False)
    return out


ALGORITHMS = _build()


def describe() -> str:
    """The accepted algorithms grouped by purpose, in spec order (help and man page text)."""
    by_purpose: dict[str, list[str]] = {}
    for alg in ALGORITHMS.values():
        by_purpose.setdefault(alg.purpose, []).append(alg.name)
    return "; ".join(f"{purpose}: {', '.join(names)}" for purpose, names in by_purpose.items())


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
    if alg.symmetric:
        from kms_cli.crypto.primitives import random_bytes

        return random_bytes(32), None
    from kms_cli.crypto import keygen

    return keygen.generate(alg.name)


def fingerprint(alg: Algorithm, public: bytes) -> str:
    """Hex SHA-256 of the public key's SubjectPublicKeyInfo (what `openssl pkey` prints a hash of)."""
    from kms_cli.crypto import pubkey

    return pubkey.fingerprint(alg.name, public).hex()
