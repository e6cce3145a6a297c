"""Wycheproof conformance of the symmetric layer.

- Cobblestone-256 (c2sp_chunked_encryption_aes_256_gcm_test.json) through chunked.open,
  chunked.decrypt_stream and, with the salt injected, chunked.seal / encrypt_stream;
- AES-256-GCM and ChaCha20-Poly1305 through the one-call helpers the chunk loops use;
- HKDF-SHA-256 through kms_cli.crypto.primitives.hkdf_sha256.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vectorutil  # noqa: E402

from kms_cli.crypto import chunked, primitives  # noqa: E402
from kms_cli.errors import IntegrityError  # noqa: E402

COBBLESTONE = list(vectorutil.cases("c2sp_chunked_encryption_aes_256_gcm_test"))


def test_cobblestone_file_shape():
    data = vectorutil.load("c2sp_chunked_encryption_aes_256_gcm_test")
    assert data["algorithm"] == "Cobblestone-256"
    assert len(COBBLESTONE) == data["numberOfTests"] == 35
    for group, _ in COBBLESTONE:
        assert (group["aead"], group["sha"]) == ("AEAD_AES_256_GCM", "SHA-512")


def _params(test):
    return bytes.fromhex(test["key"]), bytes.fromhex(test["ctx"]), zlib.decompress(bytes.fromhex(test["ct"]))


def _digest_ok(test, msg: bytes) -> bool:
    return len(msg) == test["msgLength"] and hashlib.sha512(msg).hexdigest() == test["msgSha512"]


@pytest.mark.parametrize("case", COBBLESTONE, ids=vectorutil.case_id)
def test_cobblestone_open(case):
    _, test = case
    key, ctx, ct = _params(test)
    if test["result"] == "valid":
        assert _digest_ok(test, chunked.open(key, ct, ctx))
    else:
        with pytest.raises(IntegrityError):
            chunked.open(key, ct, ctx)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("case", COBBLESTONE, ids=vectorutil.case_id)
def test_cobblestone_decrypt_stream(case, threads):
    _, test = case
    key, ctx, ct = _params(test)
    src = io.BytesIO(b"ignored prefix" + ct)
    src.seek(len(b"ignored prefix"))  # decryption starts at the current position
    out = io.BytesIO()
    if test["result"] == "valid":
        assert chunked.decrypt_stream(key, ctx, src, out, threads=threads) == test["msgLength"]
        assert _digest_ok(test, out.getvalue())
        return
    with pytest.raises(IntegrityError):
        chunked.decrypt_stream(key, ctx, src, out, threads=threads)
    written = out.getvalue()
    if "PartialPlaintext" in test["flags"]:
        # Never more than the valid prefix; this implementation releases all of it.
        assert _digest_ok(test, written)
    else:
        assert written == b""


RAW_MODE = [c for c in COBBLESTONE if "HeaderFailure" not in c[1]["flags"]]


@pytest.mark.parametrize("case", RAW_MODE, ids=vectorutil.case_id)
def test_cobblestone_key_schedule(case):
    """Raw-mode parameters: the derived AEAD key and base nonce match the vectors."""
    _, test = case
    key, ctx, ct = _params(test)
    aead_key, base_nonce, commitment = chunked._derive(key, ct[:24], ctx)
    assert aead_key.hex() == test["aeadKey"]
    assert base_nonce.hex() == test["baseNonce"]
    assert commitment == ct[24:56]


VALID_COBBLESTONE = [c for c in COBBLESTONE if c[1]["result"] == "valid"]


@pytest.mark.parametrize("case", VALID_COBBLESTONE, ids=vectorutil.case_id)
def test_cobblestone_encrypt_with_injected_salt(case):
    _, test = case
    key, ctx, ct = _params(test)
    msg = chunked.open(key, ct, ctx)
    salt = ct[:24]
    assert chunked.seal(key, msg, ctx, salt=salt) == ct
    for threads in (1, 4):
        out = io.BytesIO()
        assert chunked.encrypt_stream(key, ctx, io.BytesIO(msg), out, salt=salt, threads=threads) == len(ct)
        assert out.getvalue() == ct


@pytest.mark.parametrize("case", VALID_COBBLESTONE, ids=vectorutil.case_id)
def test_cobblestone_raw_encrypt(case):
    """Raw mode: sealing chunk i with aeadKey and baseNonce XOR i reproduces the body."""
    _, test = case
    key, ctx, ct = _params(test)
    msg = chunked.open(key, ct, ctx)
    aead = AESGCM(bytes.fromhex(test["aeadKey"]))
    base = int.from_bytes(bytes.fromhex(test["baseNonce"]), "big")
    body = b"".join(
        aead.encrypt((base ^ i).to_bytes(12, "big"), msg[i * 16384 : (i + 1) * 16384], None)
        for i in range(len(msg) // 16384 + 1)
    )
    assert body == ct[56:]


def test_cobblestone_wrong_key_size_at_encryption():
    for size in (16, 31, 33, 64):
        with pytest.raises(ValueError):
            chunked.seal(bytes(size), b"x", b"")
        with pytest.raises(ValueError):
            chunked.encrypt_stream(bytes(size), b"", io.BytesIO(b"x"), io.BytesIO())


# --------------------------------------------------------------------------
# AEADs, called the way the chunk loops call them (into slices of larger buffers).


def _aead_cases(name: str):
    return [c for c in vectorutil.cases(name) if c[0]["keySize"] == 256 and c[0]["ivSize"] == 96]


def _check_aead(aead, test):
    iv, aad = bytes.fromhex(test["iv"]), bytes.fromhex(test["aad"])
    msg, ct, tag = (bytes.fromhex(test[k]) for k in ("msg", "ct", "tag"))
    sealed = ct + tag
    if test["result"] == "valid":
        out = bytearray(len(msg) + chunked.TAG + 8)
        chunked._seal_into(aead, iv, memoryview(msg), aad, memoryview(out)[3 : 3 + len(sealed)])
        assert bytes(out[3 : 3 + len(sealed)]) == sealed
    buf = bytearray(len(msg) + 8)
    ok = chunked._open_into(aead, iv, memoryview(b"??" + sealed)[2:], aad, memoryview(buf)[5 : 5 + len(msg)])
    if test["result"] == "valid":
        assert ok and bytes(buf[5 : 5 + len(msg)]) == msg
    else:
        assert not ok


AES_GCM = _aead_cases("aes_gcm_test")


@pytest.mark.parametrize("case", AES_GCM, ids=vectorutil.case_id)
def test_aes_256_gcm(case):
    _, test = case
    _check_aead(AESGCM(bytes.fromhex(test["key"])), test)


CHACHA = _aead_cases("chacha20_poly1305_test")


@pytest.mark.parametrize("case", CHACHA, ids=vectorutil.case_id)
def test_chacha20_poly1305(case):
    _, test = case
    _check_aead(ChaCha20Poly1305(bytes.fromhex(test["key"])), test)


def test_aead_vector_selection_is_not_empty():
    assert len(AES_GCM) > 40 and len(CHACHA) > 250
    assert {t["result"] for _, t in AES_GCM} >= {"valid", "invalid"}


def test_chacha20_poly1305_other_nonce_sizes_rejected():
    others = [c for c in vectorutil.cases("chacha20_poly1305_test") if c[0]["ivSize"] != 96]
    assert others
    for _, test in others:
        assert test["result"] == "invalid"
        aead = ChaCha20Poly1305(bytes.fromhex(test["key"]))
        with pytest.raises(ValueError):
            aead.decrypt(bytes.fromhex(test["iv"]), bytes.fromhex(test["ct"] + test["tag"]), None)


# --------------------------------------------------------------------------
# HKDF-SHA-256.

HKDF = list(vectorutil.cases("hkdf_sha256_test"))


@pytest.mark.parametrize("case", HKDF, ids=vectorutil.case_id)
def test_hkdf_sha256(case):
    _, test = case
    ikm, salt, info = (bytes.fromhex(test[k]) for k in ("ikm", "salt", "info"))
    if test["result"] == "valid":
        okm = primitives.hkdf_sha256(ikm, salt=salt, info=info, length=test["size"])
        assert okm.hex() == test["okm"]
        if not salt:  # an empty salt is the same as no salt (HashLen zero bytes)
            assert primitives.hkdf_sha256(ikm, salt=None, info=info, length=test["size"]) == okm
    else:
        with pytest.raises(ValueError):
            primitives.hkdf_sha256(ikm, salt=salt, info=info, length=test["size"])
