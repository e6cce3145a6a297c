"""The asymmetric algorithm registry: names, purposes, sizes, and helpers shared by its operations.

Every asymmetric algorithm of the spec (section 4, Keys) is one `Algorithm`
entry keyed by its spec name. The operations live beside this module, above it
(they import it; it imports none of them):

- `kms_cli.crypto.sign`: `sign`, `verify`, streaming `begin_sign`/`begin_verify`.
- `kms_cli.crypto.kem`: `encapsulate`, `decapsulate` (RSA-OAEP, ML-KEM, X-Wing).
- `kms_cli.crypto.keygen`: `generate`, `public_key` for any algorithm (by purpose).
- `kms_cli.crypto.pubkey`: PEM/JWK/raw export, `load_public`, `fingerprint`.

Keys cross this layer as bytes only. Private forms (what the vault seals):

=====================  ===========================================================
algorithm              private bytes                  public bytes
=====================  ===========================================================
ed25519                32-byte RFC 8032 seed          32-byte point
ecdsa-p256/secp256k1   32-byte big-endian scalar      65-byte uncompressed SEC1 point
rsa-2048/4096,         PKCS#8 DER (unencrypted)       PKCS#1 RSAPublicKey DER
rsa-oaep-3072
ml-dsa-44/65/87        32-byte FIPS 204 seed (xi)     FIPS 204 pk (1312/1952/2592)
slh-dsa-sha2-128s      64-byte FIPS 205 sk            32-byte FIPS 205 pk
ed25519-ml-dsa-65      ed25519 seed || ml-dsa seed    ed25519 pk || ml-dsa-65 pk
                       (32 + 32)                      (32 + 1952)
ml-kem-768/1024        64-byte FIPS 203 seed (d||z)   FIPS 203 ek (1184/1568)
ml-kem-512             1632-byte FIPS 203 dk          800-byte FIPS 203 ek
                       (pqcrypto has no seeded keygen)
x25519-ml-kem-768      32-byte X-Wing seed            X-Wing pk: ek_M || pk_X (1216)
=====================  ===========================================================

Implementations: ML-KEM-512 and SLH-DSA-SHA2-128s come from `pqcrypto`; all
others (ML-KEM-768/1024, ML-DSA-44/65/87, Ed25519, X25519, ECDSA, RSA, SHA-2,
SHA-3/SHAKE) from `cryptography` (OpenSSL). Nothing here is imported at module
load: `cryptography`'s asymmetric modules and `pqcrypto` load on first use.

Errors: an unknown name is `UsageError` (exit 2, hint lists the names); an
algorithm used for the wrong purpose is `StateError` (exit 6); malformed key
bytes are `IntegrityError` (exit 5) with a message that says nothing about
the key.
"""

from __future__ import annotations

from collections import namedtuple

from kms_cli.errors import IntegrityError, StateError, UsageError

SIGN = "sign"
ENCRYPT = "encrypt"


class Algorithm(namedtuple("Algorithm", ("name", "purpose", "family", "provider", "public_size", "output_size",
                                        "raw_streams", "native_context"), defaults=(False, False))):
    """One asymmetric algorithm.

    Attributes:
        name: the spec's name, e.g. "ml-kem-768".
        purpose: "sign" or "encrypt".
        family: implementation family ("ed25519", "ecdsa", "rsa-pss", "ml-dsa",
            "slh-dsa", "ed25519-ml-dsa", "rsa-oaep", "ml-kem", "x-wing").
        provider: "cryptography" or "pqcrypto".
        public_size: length of the public bytes (None for RSA: DER).
        output_size: signature length (maximum for ECDSA's DER) or KEM
            ciphertext length.
        raw_streams: `begin_sign(raw=True)` hashes the input in constant memory
            (otherwise the raw mode buffers the whole input).
        native_context: the algorithm itself takes a context string (FIPS 204/205);
            only these accept a context in raw mode.
    """

    __slots__ = ()


_ALL = (
    Algorithm("ed25519", SIGN, "ed25519", "cryptography", 32, 64),
    Algorithm("ecdsa-p256", SIGN, "ecdsa", "cryptography", 65, 72, raw_streams=True),
    Algorithm("ecdsa-secp256k1", SIGN, "ecdsa", "cryptography", 65, 72, raw_streams=True),
    Algorithm("rsa-2048", SIGN, "rsa-pss", "cryptography", None, 256, raw_streams=True),
    Algorithm("rsa-4096", SIGN, "rsa-pss", "cryptography", None, 512, raw_streams=True),
    Algorithm("ml-dsa-44", SIGN, "ml-dsa", "cryptography", 1312, 2420, True, True),
    Algorithm("ml-dsa-65", SIGN, "ml-dsa", "cryptography", 1952, 3309, True, True),
    Algorithm("ml-dsa-87", SIGN, "ml-dsa", "cryptography", 2592, 4627, True, True),
    Algorithm("slh-dsa-sha2-128s", SIGN, "slh-dsa", "pqcrypto", 32, 7856, native_context=True),
    Algorithm("ed25519-ml-dsa-65", SIGN, "ed25519-ml-dsa", "cryptography", 32 + 1952,
              64 + 3309, native_context=True),
    Algorithm("rsa-oaep-3072", ENCRYPT, "rsa-oaep", "cryptography", None, 384),
    Algorithm("ml-kem-512", ENCRYPT, "ml-kem", "pqcrypto", 800, 768),
    Algorithm("ml-kem-768", ENCRYPT, "ml-kem", "cryptography", 1184, 1088),
    Algorithm("ml-kem-1024", ENCRYPT, "ml-kem", "cryptography", 1568, 1568),
    Algorithm("x25519-ml-kem-768", ENCRYPT, "x-wing", "cryptography", 1216, 1120),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in _ALL}


def names(purpose: str | None = None) -> list[str]:
    """The registry's names in spec order, optionally only those of one purpose."""
    return [a.name for a in _ALL if purpose is None or a.purpose == purpose]


def algorithm(name: str, purpose: str | None = None) -> Algorithm:
    """Look an algorithm up by its spec name.

    Args:
        name: e.g. "ed25519".
        purpose: when given ("sign" or "encrypt"), the algorithm must have it.

    Returns:
        The registry entry.

    Raises:
        UsageError: the name is unknown (hint lists the known names).
        StateError: the algorithm exists but is for the other purpose.
    """
    alg = ALGORITHMS.get(name)
    if alg is None:
        raise UsageError(f"unknown algorithm: {name}", hint="one of: " + ", ".join(names()))
    if purpose is not None and alg.purpose != purpose:
        if purpose == SIGN:
            raise StateError(f"{name} is an encryption algorithm: it cannot sign")
        raise StateError(f"{name} is a signing algorithm: it cannot encrypt")
    return alg


# ---- helpers shared by sign.py, kem.py and pubkey.py (not part of the API) ----

def bad_private() -> IntegrityError:
    return IntegrityError("invalid private key")


def bad_public() -> IntegrityError:
    return IntegrityError("invalid public key")


def pq_module(kind: str, name: str):
    """Import one pqcrypto algorithm module lazily ("kem"/"sign", "ml_kem_512")."""
    import importlib

    try:
        return importlib.import_module(f"pqcrypto.{kind}.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StateError(
            "this algorithm needs the pqcrypto package",
            hint="install kms-cli[pqc] (pip install pqcrypto)",
        ) from exc


def sha3_256(data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    h = hashes.Hash(hashes.SHA3_256())
    h.update(data)
    return h.finalize()


def sha256(data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def rsa_private(private: bytes, bits: int):
    """Load PKCS#8 DER as an RSA private key of exactly `bits` bits (IntegrityError otherwise).

    The structure and size are checked, but not the primality of p and q: that
    check costs 40-300 ms per load, and private bytes reach this layer only from
    the vault's authenticated storage, holding keys kms-cli generated itself.
    (OpenSSL also re-verifies every CRT result, so even a corrupted key could
    not leak its factors through a faulty signature.)
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_der_private_key(
            bytes(private), password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise bad_private() from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != bits:
        raise bad_private()
    return key


def rsa_public(public: bytes, bits: int):
    """Load canonical PKCS#1 RSAPublicKey DER of exactly `bits` bits (IntegrityError otherwise)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_der_public_key(bytes(public))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise bad_public() from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != bits:
        raise bad_public()
    if rsa_public_bytes(key) != bytes(public):
        raise bad_public()
    return key


def rsa_public_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def rsa_private_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
