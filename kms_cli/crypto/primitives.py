"""Small primitives shared by the recipes: randomness, HKDF, HMAC, constant-time compare."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

try:
    # Constant-time comparison: the C function behind hmac.compare_digest when hashlib is absent
    # (and what cryptography's constant_time.bytes_eq ends up calling). Importing `hmac` instead
    # loads _hashlib, a second copy of OpenSSL, for nothing: about 8 ms of every cold start here.
    from _operator import _compare_digest as _constant_time_eq
except ImportError:  # pragma: no cover - other Pythons
    from hmac import compare_digest as _constant_time_eq


def _aead_classes():
    """cryptography's AESGCM and ChaCha20Poly1305 classes, without importing its `ciphers` package.

    The public module `cryptography.hazmat.primitives.ciphers.aead` only re-exports these
    classes from cryptography's compiled core, but importing it first runs the `ciphers`
    package (modes, algorithms, the decrepit ciphers): about 7 ms of a 70 ms cold start.
    The core's classes are the very same objects (tests/unit/test_primitives.py checks it);
    should a release move them, the public module is used.
    """
    try:
        from cryptography.hazmat.bindings._rust import openssl as core

        return core.aead.AESGCM, core.aead.ChaCha20Poly1305
    except (ImportError, AttributeError):  # pragma: no cover - another cryptography layout
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

        return AESGCM, ChaCha20Poly1305


AESGCM, ChaCha20Poly1305 = _aead_classes()


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
    return _constant_time_eq(bytes(a), bytes(b))


def sha256(data: bytes) -> bytes:
    """SHA-256 of public data (names, identifiers); never a way to derive or compare keys."""
    import hashlib

    return hashlib.sha256(data).digest()


CHARSETS = {
    "alnum": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "hex": "0123456789abcdef",
    "ascii": "".join(chr(c) for c in range(0x21, 0x7F)),  # printable, no space
}


def random_text(length: int, charset: str) -> str:
    """`length` characters drawn uniformly from CHARSETS[charset] with the OS CSPRNG (rejection
    sampling: no modulo bias); for "base64", the standard base64 of `length` random bytes."""
    if charset == "base64":
        import base64

        return base64.b64encode(random_bytes(length)).decode()
    alphabet = CHARSETS[charset]
    n = len(alphabet)
    limit = 256 - 256 % n  # bytes at or above it would favour the first characters
    out: list[str] = []
    while len(out) < length:
        for b in random_bytes(length * 2):
            if b < limit:
                out.append(alphabet[b % n])
                if len(out) == length:
                    break
    return "".join(out)
