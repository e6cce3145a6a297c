"""Small primitives shared by the recipes: randomness, HKDF, HMAC, constant-time compare."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand


def random_bytes(n: int) -> bytes:
    """n bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA-256 (RFC 5869), extract and expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_expand(prk: bytes, *, info: bytes, length: int, hash_name: str = "sha512") -> bytes:
    """HKDF-Expand only (RFC 5869 section 2.3) with SHA-256 or SHA-512."""
    algo = hashes.SHA512() if hash_name == "sha512" else hashes.SHA256()
    return HKDFExpand(algorithm=algo, length=length, info=info).derive(prk)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104)."""
    from cryptography.hazmat.primitives import hmac

    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


class KeyedHmacSha256:
    """HMAC-SHA-256 under one key, keyed once: each message then costs a copy of the keyed
    state (for verifying a million audit entries). Never prints its key."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives import hmac

        self._base = hmac.HMAC(key, hashes.SHA256())

    def digest(self, data: bytes) -> bytes:
        h = self._base.copy()
        h.update(data)
        return h.finalize()

    def hex(self, data: bytes) -> str:
        return self.digest(data).hex()

    def __repr__(self) -> str:
        return "KeyedHmacSha256(***)"


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison."""
    from cryptography.hazmat.primitives import constant_time

    return constant_time.bytes_eq(bytes(a), bytes(b))
