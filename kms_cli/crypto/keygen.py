"""Key pairs of every asymmetric algorithm: generate one, derive the public bytes of a private key.

The operations of each purpose live in `kms_cli.crypto.sign` and `kms_cli.crypto.kem`,
both over the registry in `kms_cli.crypto.asym`; this module dispatches to them by the
algorithm's purpose. Imports point one way: keygen -> sign/kem -> asym.
"""

from __future__ import annotations

from kms_cli.crypto import asym


def generate(name: str) -> tuple[bytes, bytes]:
    """Generate a key pair from the operating system's CSPRNG.

    Args:
        name: an algorithm name of the registry (`asym.names()`).

    Returns:
        (private_bytes, public_bytes) in the forms of the table in `asym`'s docstring;
        `public_key(name, private_bytes) == public_bytes`.

    Raises:
        UsageError: unknown algorithm.
    """
    alg = asym.algorithm(name)
    if alg.purpose == asym.SIGN:
        from kms_cli.crypto import sign

        return sign.generate(alg)
    from kms_cli.crypto import kem

    return kem.generate(alg)


def public_key(name: str, private: bytes) -> bytes:
    """Derive the public bytes from the private bytes (validates the private bytes).

    Raises:
        UsageError: unknown algorithm.
        IntegrityError: the private bytes are not a valid key of this algorithm.
    """
    alg = asym.algorithm(name)
    if alg.purpose == asym.SIGN:
        from kms_cli.crypto import sign

        return sign.public_from_private(alg, private)
    from kms_cli.crypto import kem

    return kem.public_from_private(alg, private)
