"""Wycheproof conformance of the asymmetric layer: signatures, RSA-OAEP, X25519, ML-KEM, ML-DSA.

Every `valid` verdict must be accepted and every `invalid` one rejected through
kms_cli.crypto's own functions; `acceptable` may go either way without crashing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kms_cli.crypto import asym, kem, keygen, pubkey, sign
from kms_cli.errors import IntegrityError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for vectorutil
from vectorutil import cases  # noqa: E402


def judge(test: dict, accepted: bool) -> None:
    if test["result"] == "valid":
        assert accepted, f"tcId {test['tcId']} ({test.get('comment')}) rejected"
    elif test["result"] == "invalid":
        assert not accepted, f"tcId {test['tcId']} ({test.get('comment')}) accepted"


def chunked_verify(alg, pub, msg, sig, **kw) -> bool:
    verifier = sign.begin_verify(alg, pub, sig, raw=True, **kw)
    for i in range(0, len(msg), 7):
        verifier.update(msg[i:i + 7])
    return verifier.finalize()


def test_ed25519():
    n = 0
    for group, test in cases("ed25519_test"):
        pk = bytes.fromhex(group["publicKey"]["pk"])
        assert pubkey.load_public(group["publicKeyPem"].encode()) == ("ed25519", pk)
        assert pubkey.load_public(json.dumps(group["publicKeyJwk"]).encode()) == ("ed25519", pk)
        msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        ok = sign.verify("ed25519", pk, msg, sig)
        assert chunked_verify("ed25519", pk, msg, sig) == ok
        judge(test, ok)
        n += 1
    assert n == 151


@pytest.mark.parametrize("file,alg,count", [
    ("ecdsa_secp256r1_sha256_test", "ecdsa-p256", 484),
    ("ecdsa_secp256k1_sha256_test", "ecdsa-secp256k1", 476),
    ("rsa_pss_2048_sha256_mgf1_32_test", "rsa-2048", 108),
])
def test_ecdsa_and_rsa_pss(file, alg, count):
    n = 0
    for group, test in cases(file):
        found, pub = pubkey.load_public(bytes.fromhex(group["publicKeyDer"]))
        assert found == alg
        assert pubkey.load_public(group["publicKeyPem"].encode()) == (alg, pub)
        if "publicKeyJwk" in group:
            assert pubkey.load_public(json.dumps(group["publicKeyJwk"]).encode()) == (alg, pub)
        msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        ok = sign.verify(alg, pub, msg, sig)
        assert chunked_verify(alg, pub, msg, sig) == ok  # Prehashed(SHA-256) path
        judge(test, ok)
        n += 1
    assert n == count


def test_rsa_oaep_3072():
    n = 0
    for group, test in cases("rsa_oaep_3072_sha256_mgf1sha256_test"):
        priv = bytes.fromhex(group["privateKeyPkcs8"])
        ct, label = bytes.fromhex(test["ct"]), bytes.fromhex(test["label"])
        msg = bytes.fromhex(test["msg"])
        try:
            ok = kem.oaep_decrypt(priv, ct, label=label) == msg
        except IntegrityError as e:
            assert e.message == "invalid key encapsulation"
            ok = False
        judge(test, ok)
        if test["result"] == "valid" and not label and len(msg) == 32:
            assert kem.decapsulate("rsa-oaep-3072", priv, ct) == msg
        n += 1
    assert n == 37


def test_x25519():
    n = accepted = 0
    for _, test in cases("x25519_test"):
        priv, pub = bytes.fromhex(test["private"]), bytes.fromhex(test["public"])
        try:
            shared = kem.x25519(priv, pub)
        except IntegrityError:
            ok = False
        else:
            ok = shared.hex() == test["shared"]
            assert ok, f"tcId {test['tcId']}: wrong shared secret"
            accepted += 1
        judge(test, ok)
        n += 1
    assert n == 518 and accepted >= 264


@pytest.mark.parametrize("size", [768, 1024])
def test_ml_kem_seeded(size):
    """keygen from the 64-byte seed (our private form), public key and decapsulation."""
    alg = f"ml-kem-{size}"
    n = 0
    for _, test in cases(f"mlkem_{size}_test"):
        seed, c = bytes.fromhex(test["seed"]), bytes.fromhex(test["c"])
        try:
            public = keygen.public_key(alg, seed)
            if "ek" in test:
                assert public.hex() == test["ek"]
            shared = kem.decapsulate(alg, seed, c)
            assert shared.hex() == test["K"]
            ok = True
        except IntegrityError:
            ok = False
        judge(test, ok)
        n += 1
    assert n == 193


def test_ml_kem_512_through_pqcrypto():
    """pqcrypto has no seeded keygen and our ML-KEM-512 private form is the expanded
    dk, so the vectors' seeds cannot become keys here: every `ek` must be accepted
    by encapsulation, every ciphertext of the right length decapsulates (with a key
    of ours), wrong-length ciphertexts and the vectors' malformed seeds (as private
    keys) are rejected. The shared secrets are not compared."""
    own_priv, _ = keygen.generate("ml-kem-512")
    n = 0
    for _, test in cases("mlkem_512_test"):
        seed, c = bytes.fromhex(test["seed"]), bytes.fromhex(test["c"])
        try:
            if "ek" in test:
                ct, ss = kem.encapsulate("ml-kem-512", bytes.fromhex(test["ek"]))
                assert len(ct) == 768 and len(ss) == 32
            if len(seed) != 64:
                kem.decapsulate("ml-kem-512", seed, c)
            assert len(kem.decapsulate("ml-kem-512", own_priv, c)) == 32
            ok = True
        except IntegrityError:
            ok = False
        judge(test, ok)
        n += 1
    assert n == 193


@pytest.mark.parametrize("level,count", [(44, 180), (65, 210), (87, 241)])
def test_ml_dsa_verify(level, count):
    alg = f"ml-dsa-{level}"
    n = 0
    for group, test in cases(f"mldsa_{level}_verify_test"):
        pk = bytes.fromhex(group["publicKey"])
        if len(pk) == asym.algorithm(alg).public_size:
            assert pubkey.load_public(bytes.fromhex(group["publicKeyDer"])) == (alg, pk)
        msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        ctx = bytes.fromhex(test.get("ctx", ""))
        try:
            ok = sign.verify(alg, pk, msg, sig, context=ctx)
            assert chunked_verify(alg, pk, msg, sig, context=ctx) == ok  # mu path
        except IntegrityError:
            ok = False
        judge(test, ok)
        n += 1
    assert n == count
