"""HPKE base mode (RFC 9180) for one suite: MLKEM768-X25519 / HKDF-SHA256 / ChaCha20Poly1305.

A recipe over primitives the project already has, for age's `mlkem768x25519` stanza
(c2sp.org/age): the KEM is the project's X-Wing (`kem.encapsulate("x25519-ml-kem-768", ...)`),
which is exactly draft-ietf-hpke-pq's MLKEM768-X25519 (KEM id 0x647a: its Encap's shared secret
is X-Wing's, no extra labeled extract as DHKEM has; enc = ct_M || ct_X, 1120 bytes; the private
key is the 32-byte seed, the public key ek_M || pk_X, 1216 bytes); HKDF-Extract is HMAC-SHA-256
keyed with the salt (RFC 5869 section 2.2; an empty salt is HashLen zeros, which HMAC pads to
anyway) and HKDF-Expand and ChaCha20-Poly1305 are `cryptography`'s, through primitives.py.

Base mode, single shot (RFC 9180 sections 5.1, 6.1), one message so sequence number 0:

    suite_id      = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)
    LabeledExtract(salt, label, ikm)   = Extract(salt, "HPKE-v1" || suite_id || label || ikm)
    LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id
                                                 || label || info, L)
    context  = 0x00 || LabeledExtract("", "psk_id_hash", "") || LabeledExtract("", "info_hash", info)
    secret   = LabeledExtract(shared_secret, "secret", "")
    key      = LabeledExpand(secret, "key", context, 32)
    nonce    = LabeledExpand(secret, "base_nonce", context, 12)
    ct       = ChaCha20-Poly1305(key, nonce, aad, plaintext)

`cryptography` 50 also ships `hazmat.primitives.hpke` with this suite;
tests/unit/test_age_hpke.py checks this recipe against it (both directions) where its API allows.

Raises: IntegrityError("invalid public key") for a malformed recipient key,
IntegrityError("invalid key encapsulation") for an `enc` that does not decapsulate (wrong length,
low-order X25519 share) and IntegrityError("hpke open failed") when the AEAD rejects.
"""

from __future__ import annotations

KEM_ID = 0x647A  # MLKEM768-X25519 (draft-ietf-hpke-pq)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0003  # ChaCha20Poly1305
SUITE_ID = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
ENC_SIZE = 1120
PUBLIC_SIZE = 1216
PRIVATE_SIZE = 32
_KEM = "x25519-ml-kem-768"


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    from kms_cli.crypto.primitives import hmac_sha256

    return hmac_sha256(salt, b"HPKE-v1" + SUITE_ID + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    from kms_cli.crypto.primitives import hkdf_expand

    return hkdf_expand(prk, info=length.to_bytes(2, "big") + b"HPKE-v1" + SUITE_ID + label + info,
                       length=length, hash_name="sha256")


def key_schedule_base(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """(key, base_nonce) of base mode (mode 0x00, empty psk and psk_id)."""
    context = (b"\x00" + _labeled_extract(b"", b"psk_id_hash", b"")
               + _labeled_extract(b"", b"info_hash", bytes(info)))
    secret = _labeled_extract(bytes(shared_secret), b"secret", b"")
    return (_labeled_expand(secret, b"key", context, 32),
            _labeled_expand(secret, b"base_nonce", context, 12))


def seal_base(public: bytes, info: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """SealBase(pkR, info, aad, pt) -> (enc, ct)."""
    from kms_cli.crypto import kem
    from kms_cli.crypto.primitives import ChaCha20Poly1305

    enc, shared = kem.encapsulate(_KEM, bytes(public))
    key, nonce = key_schedule_base(shared, info)
    return enc, ChaCha20Poly1305(key).encrypt(nonce, bytes(plaintext), bytes(aad))


def open_base(private: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    """OpenBase(enc, skR, info, aad, ct) -> pt."""
    from cryptography.exceptions import InvalidTag

    from kms_cli.crypto import kem
    from kms_cli.crypto.primitives import ChaCha20Poly1305
    from kms_cli.errors import IntegrityError

    if len(enc) != ENC_SIZE:
        raise IntegrityError("invalid key encapsulation")
    shared = kem.decapsulate(_KEM, bytes(private), bytes(enc))
    key, nonce = key_schedule_base(shared, info)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, bytes(ciphertext), bytes(aad))
    except InvalidTag:
        raise IntegrityError("hpke open failed") from None
