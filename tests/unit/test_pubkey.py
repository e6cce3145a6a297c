"""Public key export and import: SPKI PEM/DER with the standard OIDs, JWK, raw, fingerprints."""

from __future__ import annotations

import base64
import functools
import json
import shutil
import subprocess

import pytest

from kms_cli.crypto import asym, keygen, pubkey
from kms_cli.errors import IntegrityError, UsageError

ALL = asym.names()
SPKI = [n for n in ALL if n != "ed25519-ml-dsa-65"]
CLASSICAL = ["ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048", "rsa-4096", "rsa-oaep-3072"]

# DER of each algorithm's AlgorithmIdentifier OID (RFC 8410, RFC 5480, NIST CSOR, X-Wing draft)
OID_DER = {
    "ed25519": "06032b6570",
    "ecdsa-p256": "06082a8648ce3d030107",
    "ecdsa-secp256k1": "06052b8104000a",
    "rsa-2048": "06092a864886f70d010101",
    "rsa-4096": "06092a864886f70d010101",
    "rsa-oaep-3072": "06092a864886f70d010101",
    "ml-dsa-44": "0609608648016503040311",
    "ml-dsa-65": "0609608648016503040312",
    "ml-dsa-87": "0609608648016503040313",
    "slh-dsa-sha2-128s": "0609608648016503040314",
    "ml-kem-512": "0609608648016503040401",
    "ml-kem-768": "0609608648016503040402",
    "ml-kem-1024": "0609608648016503040403",
    "x25519-ml-kem-768": "060b2b0601040183e62d81c87a",
}


@functools.cache
def keypair(name: str) -> tuple[bytes, bytes]:
    return keygen.generate(name)


@pytest.mark.parametrize("name", ALL)
def test_pem_round_trip_and_fingerprint(name):
    _, pub = keypair(name)
    pem = pubkey.to_pem(name, pub)
    assert pem.endswith(b"-----\n") and all(len(line) <= 64 for line in pem.splitlines())
    assert pubkey.load_public(pem) == (name, pub)
    assert pubkey.load_public(b"\n  " + pem + b"\n\n", name) == (name, pub)
    assert pubkey.to_raw(name, pub) == pub
    assert pubkey.load_public(pub, name) == (name, pub)
    assert pubkey.export(name, pub, "raw") == pub
    assert pubkey.export(name, pub, "pem") == pem
    fp = pubkey.fingerprint(name, pub)
    assert len(fp) == 32 and fp == pubkey.fingerprint(name, bytes(pub))
    if name != "rsa-4096":  # keygen is slow
        assert fp != pubkey.fingerprint(name, keygen.generate(name)[1])


@pytest.mark.parametrize("name", SPKI)
def test_spki_der_carries_the_standard_oid(name):
    from cryptography.hazmat.primitives import hashes

    _, pub = keypair(name)
    der = pubkey.to_der(name, pub)
    oid = bytes.fromhex(OID_DER[name])
    assert oid in der[:40]
    assert pubkey.load_public(der) == (name, pub)
    assert pubkey.load_public(der, name) == (name, pub)
    h = hashes.Hash(hashes.SHA256())
    h.update(der)
    assert pubkey.fingerprint(name, pub) == h.finalize()
    if name in ("ml-kem-512", "slh-dsa-sha2-128s", "x25519-ml-kem-768"):
        # built here: SEQUENCE { SEQUENCE { OID } , BIT STRING { 0 unused bits, raw key } }
        n = len(pub) + 1
        bitstring = b"\x03" + _der_len(n) + b"\x00" + pub
        algid = b"\x30" + _der_len(len(oid)) + oid
        assert der == b"\x30" + _der_len(len(algid) + len(bitstring)) + algid + bitstring
    else:
        from cryptography.hazmat.primitives import serialization

        serialization.load_der_public_key(der)


def _der_len(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def test_hybrid_signature_key_has_a_custom_pem_label():
    _, pub = keypair("ed25519-ml-dsa-65")
    pem = pubkey.to_pem("ed25519-ml-dsa-65", pub)
    assert pem.startswith(b"-----BEGIN KMS-CLI ED25519-ML-DSA-65 PUBLIC KEY-----\n")
    body = b"".join(pem.splitlines()[1:-1])
    assert base64.b64decode(body) == pub
    with pytest.raises(UsageError):
        pubkey.to_der("ed25519-ml-dsa-65", pub)


@pytest.mark.parametrize("name", CLASSICAL)
def test_jwk_shape_and_round_trip(name):
    _, pub = keypair(name)
    jwk = pubkey.to_jwk(name, pub)
    assert jwk["use"] == ("enc" if name == "rsa-oaep-3072" else "sig")
    for value in jwk.values():
        assert "=" not in value
    if name == "ed25519":
        assert set(jwk) == {"kty", "crv", "x", "use"}
        assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
        assert base64.urlsafe_b64decode(jwk["x"] + "=") == pub
    elif name.startswith("ecdsa"):
        assert set(jwk) == {"kty", "crv", "x", "y", "use"}
        assert jwk["kty"] == "EC"
        assert jwk["crv"] == ("P-256" if name == "ecdsa-p256" else "secp256k1")
        assert len(jwk["x"]) == len(jwk["y"]) == 43
    else:
        assert set(jwk) == {"kty", "n", "e", "use"}
        assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
        bits = int(name.split("-")[-1])
        n = base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4))
        assert len(n) == bits // 8 and n[0] != 0
    text = pubkey.export(name, pub, "jwk")
    assert json.loads(text) == jwk
    assert pubkey.load_public(text) == (name, pub)


@pytest.mark.parametrize("name", ["ml-dsa-65", "ml-kem-768", "slh-dsa-sha2-128s",
                                  "x25519-ml-kem-768", "ed25519-ml-dsa-65"])
def test_no_jwk_for_post_quantum(name):
    with pytest.raises(UsageError):
        pubkey.to_jwk(name, keypair(name)[1])


def test_load_public_errors():
    _, ed = keypair("ed25519")
    with pytest.raises(UsageError):  # raw bytes are ambiguous
        pubkey.load_public(ed)
    with pytest.raises(UsageError):  # not the expected algorithm
        pubkey.load_public(pubkey.to_pem("ed25519", ed), "ml-kem-768")
    with pytest.raises(IntegrityError):
        pubkey.load_public(ed[:-1], "ed25519")
    with pytest.raises(IntegrityError):
        pubkey.load_public(b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(IntegrityError):
        pubkey.load_public(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(IntegrityError):
        pubkey.load_public(b"{not json")
    with pytest.raises(IntegrityError):
        pubkey.load_public(b'{"kty": "OKP", "crv": "Ed25519", "x": "AAAA="}')
    with pytest.raises(UsageError):
        pubkey.load_public(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError):
        pubkey.export("ed25519", ed, "ssh")
    with pytest.raises(IntegrityError):  # truncated hand-built SPKI
        pubkey.load_public(pubkey.to_der("ml-kem-512", keypair("ml-kem-512")[1])[:-1])


def test_unsupported_algorithms_are_usage_errors():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519

    for key in (ec.generate_private_key(ec.SECP384R1()).public_key(),
                x25519.X25519PrivateKey.generate().public_key()):
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(UsageError):
            pubkey.load_public(pem)
    # a well-formed SPKI with an OID nobody here knows (1.2.3.4)
    spki = bytes.fromhex("300d300506032a0304030400010203")
    with pytest.raises(UsageError):
        pubkey.load_public(spki)


def test_encrypt_side_detection():
    for name in ("rsa-oaep-3072", "ml-kem-512", "ml-kem-768", "ml-kem-1024",
                 "x25519-ml-kem-768"):
        alg, pub = pubkey.load_public(pubkey.to_pem(name, keypair(name)[1]))
        assert alg == name and asym.algorithm(alg).purpose == "encrypt"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("name", ["ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048"])
def test_fingerprint_matches_openssl(tmp_path, name):
    _, pub = keypair(name)
    (tmp_path / "pub.pem").write_bytes(pubkey.to_pem(name, pub))
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"],
                         cwd=tmp_path, capture_output=True, check=True, timeout=30).stdout
    assert der == pubkey.to_der(name, pub)


@pytest.mark.parametrize("name", ["ed25519", "ml-dsa-44"])
def test_raw_key_bytes_that_begin_like_json_or_pem_whitespace_are_raw(name):
    """Raw public keys are random bytes: 1 in 256 begins with "{" (or blanks then "{"); given the
    algorithm they are raw, not a JWK that fails to parse (an intermittent failure before)."""
    _, pub = keypair(name)
    for prefix in (b"{", b" {", b"\n{"):
        raw = prefix + pub[len(prefix):]
        assert pubkey.load_public(raw, name) == (name, raw)
