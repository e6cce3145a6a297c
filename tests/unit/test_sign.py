"""Signatures: round trips for every algorithm, encodings, streaming, errors, openssl interop."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest

from kms_cli.crypto import asym, keygen, pubkey, sign
from kms_cli.errors import IntegrityError, StateError, UsageError

SIGNING = asym.names("sign")
MSG = b"the quick brown fox jumps over the lazy dog" * 50


@functools.cache
def keypair(name: str) -> tuple[bytes, bytes]:
    """One key pair per algorithm per module (RSA-4096 keygen is slow)."""
    return keygen.generate(name)


def chunks(data: bytes, size: int = 37):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def stream_sign(name, priv, data, **kw) -> bytes:
    signer = sign.begin_sign(name, priv, **kw)
    for c in chunks(data):
        signer.update(c)
    return signer.finalize()


def stream_verify(name, pub, data, sig, **kw) -> bool:
    verifier = sign.begin_verify(name, pub, sig, **kw)
    for c in chunks(data):
        verifier.update(c)
    return verifier.finalize()


def flip(data: bytes, i: int = -1) -> bytes:
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


def test_registry_lists_the_spec_signing_algorithms():
    assert SIGNING == ["ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048", "rsa-4096",
                       "ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "slh-dsa-sha2-128s",
                       "ed25519-ml-dsa-65"]
    assert asym.algorithm("slh-dsa-sha2-128s").provider == "pqcrypto"
    assert {asym.algorithm(n).provider for n in SIGNING if n != "slh-dsa-sha2-128s"} == {
        "cryptography"}


@pytest.mark.parametrize("name", SIGNING)
def test_generate_sign_verify_tamper(name):
    priv, pub = keypair(name)
    alg = asym.algorithm(name)
    assert keygen.public_key(name, priv) == pub
    if alg.public_size:
        assert len(pub) == alg.public_size
    sig = sign.sign(name, priv, MSG)
    assert len(sig) <= alg.output_size
    assert sign.verify(name, pub, MSG, sig) is True
    assert sign.verify(name, pub, MSG + b"!", sig) is False
    assert sign.verify(name, pub, MSG, flip(sig)) is False
    assert sign.verify(name, pub, MSG, flip(sig, 0)) is False
    assert sign.verify(name, pub, MSG, sig[:-1]) is False
    assert sign.verify(name, pub, MSG, b"") is False
    assert sign.verify(name, pub, MSG, sig + b"\x00") is False


@pytest.mark.parametrize("name", SIGNING)
def test_statement_signatures_stream_and_bind(name):
    priv, pub = keypair(name)
    sig = stream_sign(name, priv, MSG, binding=b"key-a\x00v1", context=b"ctx")
    assert stream_verify(name, pub, MSG, sig, binding=b"key-a\x00v1", context=b"ctx")
    assert not stream_verify(name, pub, MSG, sig, binding=b"key-a\x00v2", context=b"ctx")
    assert not stream_verify(name, pub, MSG, sig, binding=b"key-a\x00v1", context=b"")
    assert not stream_verify(name, pub, MSG[:-1], sig, binding=b"key-a\x00v1", context=b"ctx")
    # what is signed is exactly the documented statement, with a bare signature
    from cryptography.hazmat.primitives import hashes

    h = hashes.Hash(hashes.SHA512())
    h.update(MSG)
    statement = sign.signed_statement(name, h.finalize(), binding=b"key-a\x00v1", context=b"ctx")
    assert sign.verify(name, pub, statement, sig)
    # a statement signature is not a raw signature of the message
    assert not sign.verify(name, pub, MSG, sig)


@pytest.mark.parametrize("name", SIGNING)
def test_raw_stream_equals_bare_signature(name):
    priv, pub = keypair(name)
    sig = stream_sign(name, priv, MSG, raw=True)
    assert sign.verify(name, pub, MSG, sig)
    assert stream_verify(name, pub, MSG, sig, raw=True)
    assert not stream_verify(name, pub, MSG + b"x", sig, raw=True)
    assert not stream_verify(name, pub, MSG, sig, raw=False)
    bare = sign.sign(name, priv, MSG)
    assert stream_verify(name, pub, MSG, bare, raw=True)


def test_statement_encoding_is_pinned():
    digest = bytes(range(64))
    st = sign.signed_statement("ed25519", digest, binding=b"kb", context=b"c")
    assert st == (b"kms-cli signed statement v1\x00" + b"\x07ed25519" + b"\x00\x02kb"
                  + b"\x01c" + digest)
    with pytest.raises(ValueError):
        sign.signed_statement("ed25519", digest[:32])
    with pytest.raises(UsageError):
        sign.signed_statement("ed25519", digest, context=b"x" * 256)


def test_empty_input_streams():
    priv, pub = keypair("ecdsa-p256")
    for raw in (False, True):
        sig = sign.begin_sign("ecdsa-p256", priv, raw=raw).finalize()
        assert sign.begin_verify("ecdsa-p256", pub, sig, raw=raw).finalize()


@pytest.mark.parametrize("name", ["ecdsa-p256", "ecdsa-secp256k1"])
def test_ecdsa_low_s_produced_high_s_accepted(name):
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )

    priv, pub = keypair(name)
    n = sign._ORDERS[name]
    for i in range(12):
        for sig in (sign.sign(name, priv, MSG + bytes([i])),
                    stream_sign(name, priv, MSG + bytes([i]), raw=True)):
            r, s = decode_dss_signature(sig)
            assert s <= n // 2
            high = encode_dss_signature(r, n - s)
            assert sign.verify(name, pub, MSG + bytes([i]), sig)
            assert sign.verify(name, pub, MSG + bytes([i]), high)
            assert stream_verify(name, pub, MSG + bytes([i]), high, raw=True)


def test_rsa_pss_parameters():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    priv, pub = keypair("rsa-2048")
    key = serialization.load_der_public_key(pub)
    sig = stream_sign("rsa-2048", priv, MSG, raw=True)
    key.verify(sig, MSG, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(Exception):
        key.verify(sig, MSG, padding.PSS(padding.MGF1(hashes.SHA256()), 20), hashes.SHA256())
    assert len(sign.sign("rsa-4096", keypair("rsa-4096")[0], MSG)) == 512


def test_ed25519_raw_is_pure_ed25519():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    priv, pub = keypair("ed25519")
    Ed25519PublicKey.from_public_bytes(pub).verify(stream_sign("ed25519", priv, MSG, raw=True), MSG)


@pytest.mark.parametrize("name", ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"])
def test_ml_dsa_context_and_streaming_is_pure(name):
    from cryptography.hazmat.primitives.asymmetric import mldsa

    priv, pub = keypair(name)
    cls = {"ml-dsa-44": mldsa.MLDSA44PublicKey, "ml-dsa-65": mldsa.MLDSA65PublicKey,
           "ml-dsa-87": mldsa.MLDSA87PublicKey}[name]
    sig = stream_sign(name, priv, MSG, raw=True, context=b"app")
    cls.from_public_bytes(pub).verify(sig, MSG, b"app")
    assert sign.verify(name, pub, MSG, sig, context=b"app")
    assert not sign.verify(name, pub, MSG, sig)
    assert not sign.verify(name, pub, MSG, sig, context=b"x" * 256)
    assert not stream_verify(name, pub, MSG, sig, raw=True, context=b"x" * 256)
    sig255 = sign.sign(name, priv, MSG, context=b"c" * 255)
    assert sign.verify(name, pub, MSG, sig255, context=b"c" * 255)
    with pytest.raises(UsageError):
        sign.sign(name, priv, MSG, context=b"c" * 256)


def test_slh_dsa_context():
    priv, pub = keypair("slh-dsa-sha2-128s")
    sig = sign.sign("slh-dsa-sha2-128s", priv, b"m", context=b"app")
    assert len(sig) == 7856
    assert sign.verify("slh-dsa-sha2-128s", pub, b"m", sig, context=b"app")
    assert not sign.verify("slh-dsa-sha2-128s", pub, b"m", sig)


def test_hybrid_encoding_and_both_halves():
    from cryptography.hazmat.primitives.asymmetric import mldsa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name = "ed25519-ml-dsa-65"
    priv, pub = keypair(name)
    assert len(priv) == 64 and len(pub) == 32 + 1952
    assert keygen.public_key("ed25519", priv[:32]) == pub[:32]
    assert keygen.public_key("ml-dsa-65", priv[32:]) == pub[32:]
    sig = sign.sign(name, priv, MSG, context=b"ctx")
    assert len(sig) == 3373
    m2 = sign.HYBRID_LABEL + b"\x03ctx" + MSG
    Ed25519PublicKey.from_public_bytes(pub[:32]).verify(sig[:64], m2)
    mldsa.MLDSA65PublicKey.from_public_bytes(pub[32:]).verify(sig[64:], m2, sign.HYBRID_LABEL)
    assert sign.verify(name, pub, MSG, sig, context=b"ctx")
    # each half alone is worthless
    assert not sign.verify(name, pub, MSG, flip(sig, 3), context=b"ctx")
    assert not sign.verify(name, pub, MSG, flip(sig, 100), context=b"ctx")
    ed_only = sign.sign("ed25519", priv[:32], m2)
    assert not sign.verify(name, pub, MSG, ed_only + bytes(3309), context=b"ctx")
    # stripping: a half does not verify as a plain signature of the message
    assert not sign.verify("ed25519", pub[:32], MSG, sig[:64])
    assert not sign.verify("ml-dsa-65", pub[32:], MSG, sig[64:])
    assert not sign.verify(name, pub, MSG, sig)


def test_wrong_purpose_and_unknown_algorithm():
    with pytest.raises(StateError) as e:
        sign.sign("ml-kem-768", bytes(64), b"m")
    assert e.value.exit_code == 6
    with pytest.raises(StateError):
        sign.begin_verify("rsa-oaep-3072", b"", b"")
    with pytest.raises(UsageError) as e:
        sign.sign("dsa-1024", b"", b"m")
    assert e.value.exit_code == 2 and "ed25519" in e.value.hint


@pytest.mark.parametrize("name", SIGNING)
def test_bad_key_bytes_are_integrity_errors(name):
    priv, pub = keypair(name)
    for bad in (b"", priv[:-1], priv + b"\x00"):
        with pytest.raises(IntegrityError) as e:
            sign.sign(name, bad, b"m")
        assert e.value.message == "invalid private key" and e.value.exit_code == 5
    for bad in (b"", pub[:-1], pub + b"\x00"):
        with pytest.raises(IntegrityError) as e:
            sign.verify(name, bad, b"m", b"sig")
        assert e.value.message == "invalid public key"


def test_bad_scalar_and_point():
    with pytest.raises(IntegrityError):
        sign.sign("ecdsa-p256", bytes(32), b"m")
    with pytest.raises(IntegrityError):
        sign.sign("ecdsa-p256", b"\xff" * 32, b"m")
    with pytest.raises(IntegrityError):
        sign.verify("ecdsa-p256", b"\x04" + b"\x01" * 64, b"m", b"")
    _, pub = keypair("ecdsa-p256")
    with pytest.raises(IntegrityError):  # a valid secp256k1 point is not a P-256 point
        sign.verify("ecdsa-p256", keypair("ecdsa-secp256k1")[1], b"m", b"")
    with pytest.raises(IntegrityError):  # RSA key of the wrong size
        sign.sign("rsa-4096", keypair("rsa-2048")[0], b"m")


def test_context_rules():
    priv, pub = keypair("ed25519")
    with pytest.raises(UsageError):
        sign.sign("ed25519", priv, b"m", context=b"c")
    with pytest.raises(UsageError):
        sign.begin_sign("ed25519", priv, raw=True, context=b"c")
    with pytest.raises(UsageError):
        sign.begin_sign("ed25519", priv, context=b"c" * 256)
    with pytest.raises(ValueError):
        sign.begin_sign("ed25519", priv, raw=True, binding=b"k")
    signer = sign.begin_sign("ed25519", priv)
    signer.finalize()
    with pytest.raises(ValueError):
        signer.finalize()
    with pytest.raises(ValueError):
        signer.update(b"x")


def test_modules_import_no_crypto_backend():
    code = ("import sys, kms_cli.crypto.asym, kms_cli.crypto.sign, kms_cli.crypto.kem, kms_cli.crypto.keygen, "
            "kms_cli.crypto.pubkey; "
            "print([m for m in sys.modules if m.startswith(('cryptography', 'pqcrypto'))])")
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- openssl interop

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def _openssl_verify(tmp_path, name, pub, data, sig) -> subprocess.CompletedProcess:
    (tmp_path / "pub.pem").write_bytes(pubkey.to_pem(name, pub))
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(sig)
    if name == "ed25519":
        cmd = [OPENSSL, "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin",
               "-in", "data", "-sigfile", "sig"]
    elif name.startswith("rsa"):
        cmd = [OPENSSL, "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
               "rsa_pss_saltlen:32", "-verify", "pub.pem", "-signature", "sig", "data"]
    else:
        cmd = [OPENSSL, "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "data"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=30)


@needs_openssl
@pytest.mark.parametrize("name", ["ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048",
                                  "rsa-4096"])
def test_openssl_verifies_raw_signatures(tmp_path, name):
    priv, pub = keypair(name)
    data = bytes(range(256)) * 300
    sig = stream_sign(name, priv, data, raw=True)
    r = _openssl_verify(tmp_path, name, pub, data, sig)
    assert r.returncode == 0, r.stderr
    r = _openssl_verify(tmp_path, name, pub, data + b"x", sig)
    assert r.returncode != 0


@needs_openssl
@pytest.mark.parametrize("name", ["ecdsa-p256", "rsa-2048"])
def test_openssl_signatures_verify_here(tmp_path, name):
    from cryptography.hazmat.primitives import serialization

    priv, pub = keypair(name)
    if name == "rsa-2048":
        key = serialization.load_der_private_key(priv, None)
        opts = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
    else:
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.derive_private_key(int.from_bytes(priv, "big"), ec.SECP256R1())
        opts = []
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "data").write_bytes(MSG)
    subprocess.run([OPENSSL, "dgst", "-sha256", *opts, "-sign", "key.pem", "-out", "sig",
                    "data"], cwd=tmp_path, check=True, capture_output=True, timeout=30)
    sig = (tmp_path / "sig").read_bytes()
    assert sign.verify(name, pub, MSG, sig)
    assert stream_verify(name, pub, MSG, sig, raw=True)
