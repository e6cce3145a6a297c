"""One-shot AEAD "wraps" of small values (key material, secret values, data keys) under long-lived keys.

Every wrap derives a fresh key from the long-lived key and a random salt, so there
is no birthday limit from random 96-bit nonces however many values a key wraps,
and every wrap is key-committing (a blob opens under one key and AAD only).

``aes-256-gcm``
    Exactly Cobblestone-256 (`kms_cli.crypto.chunked.seal` / `open`) with the AAD
    as the context::

        blob = salt (24) || commitment (32) || AES-256-GCM chunk(s)

``chacha20-poly1305``
    ::

        salt = 32 random bytes
        k (32) || commitment (32) = HKDF-SHA-256(ikm = key, salt = salt,
            info = "kms-cli/wrap/chacha20-poly1305/v1" || 0x00 || aad, length = 64)
        blob = salt (32) || commitment (32) || ChaCha20-Poly1305(k, nonce = 12 zero bytes,
            plaintext, associated data = empty)

    k is used for exactly one message, so the all-zero nonce is safe; the AAD is
    bound through the key derivation (like Cobblestone's context) and the
    commitment is compared in constant time before anything is decrypted.

`seal` raises ValueError for an unknown algorithm or a key that is not 32 bytes;
`open` raises `IntegrityError` for anything wrong (unknown algorithm, key size,
truncated or altered blob, wrong key or AAD).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from kms_cli.crypto import chunked, primitives
from kms_cli.crypto.primitives import ChaCha20Poly1305
from kms_cli.errors import IntegrityError

__all__ = ["ALGORITHMS", "KEY_SIZE", "seal", "open"]

ALGORITHMS = ("aes-256-gcm", "chacha20-poly1305")
KEY_SIZE = 32

_CHACHA_INFO = b"kms-cli/wrap/chacha20-poly1305/v1\x00"
_CHACHA_SALT = 32
_CHACHA_COMMITMENT = 32
_CHACHA_HEADER = _CHACHA_SALT + _CHACHA_COMMITMENT
_ZERO_NONCE = bytes(12)


def _chacha_keys(key: bytes, salt: bytes, aad: bytes) -> tuple[bytes, bytes]:
    okm = primitives.hkdf_sha256(bytes(key), salt=bytes(salt), info=_CHACHA_INFO + bytes(aad), length=64)
    return okm[:32], okm[32:]


def _key_ok(key) -> bool:
    return isinstance(key, (bytes, bytearray, memoryview)) and len(key) == KEY_SIZE


def seal(algorithm: str, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Wrap `plaintext` under `key`, bound to `aad`; a fresh random salt every call."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown wrap algorithm: {algorithm!r}")
    if not _key_ok(key):
        raise ValueError(f"key must be {KEY_SIZE} bytes")
    if algorithm == "aes-256-gcm":
        return chunked.seal(key, plaintext, aad)
    salt = primitives.random_bytes(_CHACHA_SALT)
    k, commitment = _chacha_keys(key, salt, aad)
    return salt + commitment + ChaCha20Poly1305(k).encrypt(_ZERO_NONCE, bytes(plaintext), None)


def open(algorithm: str, key: bytes, blob: bytes, aad: bytes) -> bytes:  # noqa: A001 - module API
    """Unwrap a blob made by `seal`; IntegrityError on any failure."""
    if algorithm not in ALGORITHMS:
        raise IntegrityError("unknown wrap algorithm")
    if not _key_ok(key):
        raise IntegrityError("wrong key size")
    if algorithm == "aes-256-gcm":
        return chunked.open(key, blob, aad)
    blob = bytes(blob)
    if len(blob) < _CHACHA_HEADER + chunked.TAG:
        raise IntegrityError("wrapped value is truncated")
    k, commitment = _chacha_keys(key, blob[:_CHACHA_SALT], aad)
    if not primitives.equal(commitment, blob[_CHACHA_SALT:_CHACHA_HEADER]):
        raise IntegrityError("key commitment mismatch: wrong key or context")
    try:
        return ChaCha20Poly1305(k).decrypt(_ZERO_NONCE, blob[_CHACHA_HEADER:], None)
    except InvalidTag:
        raise IntegrityError("wrapped value failed authentication") from None
