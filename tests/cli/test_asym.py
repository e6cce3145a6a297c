"""Signing, public-key encryption and post-quantum keys through the real CLI (issue 6)."""

import json
import os
import shutil
import subprocess

import pytest

SIGN_ALGS = ["ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048", "rsa-4096", "ml-dsa-44", "ml-dsa-65",
             "ml-dsa-87", "slh-dsa-sha2-128s", "ed25519-ml-dsa-65"]
ENC_ALGS = ["rsa-oaep-3072", "ml-kem-512", "ml-kem-768", "ml-kem-1024", "x25519-ml-kem-768"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory, backend, request):
    """One vault holding a key of every asymmetric algorithm (RSA-4096 generation is slow)."""
    from kmshelp import backend_runner

    tmp = tmp_path_factory.mktemp("pki")
    kms = backend_runner(tmp, backend, request)
    kms.ok("init")
    for alg in SIGN_ALGS + ENC_ALGS:
        kms.ok("key", "create", alg, "--algorithm", alg)
    (tmp / "msg").write_bytes(os.urandom(200_000))
    return kms


@pytest.mark.parametrize("alg", SIGN_ALGS)
@pytest.mark.sqlite_only("every signature algorithm: the crypto, the same on both engines")
def test_sign_verify_and_tamper(pki, alg):
    pki.ok("sign", "--key", alg, "-i", "msg", "-o", f"{alg}.sig")
    r = pki.ok("--json", "verify", "--key", alg, "--signature", f"{alg}.sig", "-i", "msg")
    assert r.json()["valid"] is True and r.json()["version"] == 1
    r = pki("verify", "--key", alg, "--signature", f"{alg}.sig", input=b"other message")
    assert r.code == 5
    sig = bytearray((pki.tmp / f"{alg}.sig").read_bytes())
    sig[-5] ^= 1
    (pki.tmp / f"{alg}.bad").write_bytes(bytes(sig))
    assert pki("verify", "--key", alg, "--signature", f"{alg}.bad", "-i", "msg").code == 5
    # raw signatures verify too
    pki.ok("sign", "--key", alg, "--raw", "-i", "msg", "-o", f"{alg}.raw")
    pki.ok("verify", "--key", alg, "--signature", f"{alg}.raw", "-i", "msg")


@pytest.mark.parametrize("alg", ENC_ALGS)
@pytest.mark.sqlite_only("every KEM algorithm: the crypto, the same on both engines")
def test_encrypt_decrypt_and_public_key_only(pki, alg):
    ct = pki.ok("encrypt", "--key", alg, input=b"kem payload").out
    assert pki.ok("decrypt", input=ct).out == b"kem payload"
    pki.ok("key", "public", alg, "-o", f"{alg}.pem")
    pem = (pki.tmp / f"{alg}.pem").read_text()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    # without any vault at all
    nov = {"KMS_CLI_VAULT": str(pki.tmp / "does-not-exist.db"), "KMS_CLI_MASTER_KEY": None}
    ct2 = pki.ok("encrypt", "--public-key", f"{alg}.pem", "--context", "a=b", input=b"to the key holder",
                 env=nov).out
    assert pki.ok("decrypt", "--context", "a=b", input=ct2).out == b"to the key holder"
    assert pki("decrypt", input=ct2).code == 5


def test_purpose_follows_algorithm(pki):
    r = pki("encrypt", "--key", "ed25519", input=b"x")
    assert r.code == 6 and "sign" in r.err
    r = pki("sign", "--key", "ml-kem-768", input=b"x")
    assert r.code == 6
    pki.ok("key", "create", "sym")
    assert pki("sign", "--key", "sym", input=b"x").code == 6
    assert pki("key", "public", "sym").code == 6
    pki.ok("key", "public", "ed25519", "-o", "ed25519.pem")
    assert pki("encrypt", "--public-key", "ed25519.pem", input=b"x").code == 6


def test_unknown_algorithm_lists_all(pki):
    r = pki("key", "create", "x", "--algorithm", "dilithium2")
    assert r.code == 2
    for alg in SIGN_ALGS + ENC_ALGS + ["aes-256-gcm"]:
        assert alg in r.err


def test_rotation_verify_old_signature_and_revoke(vault, tmp_path):
    vault.ok("key", "create", "signer", "--algorithm", "ml-dsa-65")
    (tmp_path / "m").write_bytes(b"release v1")
    vault.ok("sign", "--key", "signer", "-i", "m", "-o", "v1.sig")
    vault.ok("key", "rotate", "signer")
    vault.ok("sign", "--key", "signer", "-i", "m", "-o", "v2.sig")
    assert vault.ok("--json", "verify", "--key", "signer", "--signature", "v1.sig", "-i", "m").json()["version"] == 1
    assert vault.ok("--json", "verify", "--key", "signer", "--signature", "v2.sig", "-i", "m").json()["version"] == 2
    vault.ok("key", "revoke", "signer", "--version", "1", "--reason", "retired")
    assert vault("verify", "--key", "signer", "--signature", "v1.sig", "-i", "m").code == 6
    vault.ok("verify", "--key", "signer", "--signature", "v2.sig", "-i", "m")
    vault.ok("key", "disable", "signer")
    assert vault("sign", "--key", "signer", "-i", "m").code == 6


@pytest.mark.parametrize("alg", ["ml-kem-768", "x25519-ml-kem-768", "rsa-oaep-3072"])
@pytest.mark.sqlite_only("rotation of KEM keys: test_rotation_verify_old_signature_and_revoke covers versions on both engines")
def test_kem_ciphertext_decrypts_after_rotation_and_rewrap(vault, alg):
    vault.ok("key", "create", "kem", "--algorithm", alg)
    ct = vault.ok("encrypt", "--key", "kem", input=b"before rotation").out
    vault.ok("key", "public", "kem", "-o", "pub.pem")
    pub_ct = vault.ok("encrypt", "--public-key", "pub.pem", input=b"public mode").out
    vault.ok("key", "rotate", "kem")
    assert vault.ok("decrypt", input=ct).out == b"before rotation"
    assert vault.ok("decrypt", input=pub_ct).out == b"public mode"
    re = vault.ok("rewrap", input=ct).out
    re_pub = vault.ok("rewrap", input=pub_ct).out
    vault.ok("key", "revoke", "kem", "--version", "1", "--reason", "old")
    assert vault("decrypt", input=ct).code == 6
    assert vault.ok("decrypt", input=re).out == b"before rotation"
    assert vault.ok("decrypt", input=re_pub).out == b"public mode"


def test_key_public_formats(pki):
    jwk = json.loads(pki.ok("key", "public", "ed25519", "--format", "jwk").out)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    jwk = json.loads(pki.ok("key", "public", "ecdsa-p256", "--format", "jwk").out)
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    jwk = json.loads(pki.ok("key", "public", "rsa-2048", "--format", "jwk").out)
    assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB"
    assert len(pki.ok("key", "public", "ed25519", "--format", "raw").out) == 32
    assert len(pki.ok("key", "public", "ml-kem-768", "--format", "raw").out) == 1184
    assert pki("key", "public", "ed25519", "--version", "9").code == 3


OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(not OPENSSL, reason="openssl not installed")
@pytest.mark.parametrize("alg", ["ed25519", "ecdsa-p256", "rsa-2048"])
@pytest.mark.sqlite_only("openssl reads our signatures: the same on both engines")
def test_openssl_verifies_raw_signatures(pki, alg):
    pki.ok("key", "public", alg, "-o", f"{alg}.pub.pem")
    pki.ok("sign", "--key", alg, "--raw", "-i", "msg", "-o", f"{alg}.ossl.sig")
    if alg == "ed25519":
        cmd = [OPENSSL, "pkeyutl", "-verify", "-pubin", "-inkey", f"{alg}.pub.pem", "-rawin", "-in", "msg",
               "-sigfile", f"{alg}.ossl.sig"]
    elif alg == "rsa-2048":
        cmd = [OPENSSL, "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
               "-verify", f"{alg}.pub.pem", "-signature", f"{alg}.ossl.sig", "msg"]
    else:
        cmd = [OPENSSL, "dgst", "-sha256", "-verify", f"{alg}.pub.pem", "-signature", f"{alg}.ossl.sig", "msg"]
    p = subprocess.run(cmd, cwd=pki.tmp, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Verified OK" in p.stdout or "Signature Verified Successfully" in p.stdout
