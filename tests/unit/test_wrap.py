"""kms_cli.crypto.wrap: one-shot key-committing wraps."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kms_cli.crypto import chunked, wrap
from kms_cli.errors import IntegrityError

KEY = bytes(range(32))
AAD = b"kms-cli/test/key-version=3"


@pytest.mark.parametrize("algorithm", wrap.ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1, 32, 64, 1000, 16383, 16384, 100_000])
def test_round_trip(algorithm, size):
    pt = bytes(i % 251 for i in range(size))
    blob = wrap.seal(algorithm, KEY, pt, AAD)
    assert wrap.open(algorithm, KEY, blob, AAD) == pt
    assert wrap.open(algorithm, bytearray(KEY), memoryview(blob), bytearray(AAD)) == pt


@pytest.mark.parametrize("algorithm", wrap.ALGORITHMS)
def test_fresh_every_time(algorithm):
    blobs = {wrap.seal(algorithm, KEY, b"same secret", AAD) for _ in range(20)}
    assert len(blobs) == 20
    assert len({b[:24] for b in blobs}) == 20


def test_sizes_and_layout():
    assert len(wrap.seal("aes-256-gcm", KEY, b"x" * 32, AAD)) == 24 + 32 + 32 + 16
    assert len(wrap.seal("chacha20-poly1305", KEY, b"x" * 32, AAD)) == 32 + 32 + 32 + 16


def test_aes_is_cobblestone_with_aad_as_context():
    blob = wrap.seal("aes-256-gcm", KEY, b"data key", AAD)
    assert chunked.open(KEY, blob, AAD) == b"data key"
    assert wrap.open("aes-256-gcm", KEY, chunked.seal(KEY, b"v", AAD), AAD) == b"v"


def test_chacha_construction_by_hand():
    blob = wrap.seal("chacha20-poly1305", KEY, b"secret value", AAD)
    salt, commitment, body = blob[:32], blob[32:64], blob[64:]
    okm = HKDF(hashes.SHA256(), 64, salt=salt, info=b"kms-cli/wrap/chacha20-poly1305/v1\x00" + AAD).derive(KEY)
    assert commitment == okm[32:]
    assert ChaCha20Poly1305(okm[:32]).decrypt(bytes(12), body, None) == b"secret value"
    # And a blob built by hand opens.
    hand = salt + okm[32:] + ChaCha20Poly1305(okm[:32]).encrypt(bytes(12), b"other", None)
    assert wrap.open("chacha20-poly1305", KEY, hand, AAD) == b"other"


@pytest.mark.parametrize("algorithm", wrap.ALGORITHMS)
def test_wrong_key_aad_algorithm(algorithm):
    blob = wrap.seal(algorithm, KEY, b"secret", AAD)
    other = "chacha20-poly1305" if algorithm == "aes-256-gcm" else "aes-256-gcm"
    for key, aad, alg in (
        (bytes(32), AAD, algorithm),
        (KEY, AAD + b"x", algorithm),
        (KEY, b"", algorithm),
        (KEY, AAD, other),
    ):
        with pytest.raises(IntegrityError) as info:
            wrap.open(alg, key, blob, aad)
        assert "secret" not in str(info.value)
    with pytest.raises(IntegrityError, match="key commitment mismatch"):
        wrap.open(algorithm, KEY, blob, AAD + b"x")


@pytest.mark.parametrize("algorithm", wrap.ALGORITHMS)
def test_every_flipped_bit_and_truncation(algorithm):
    blob = wrap.seal(algorithm, KEY, b"0123456789abcdef", AAD)
    for pos in range(len(blob)):
        for bit in (0, 7):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                wrap.open(algorithm, KEY, bytes(bad), AAD)
    for cut in range(len(blob)):
        with pytest.raises(IntegrityError):
            wrap.open(algorithm, KEY, blob[:cut], AAD)
    with pytest.raises(IntegrityError):
        wrap.open(algorithm, KEY, blob + b"\x00", AAD)


def test_bad_arguments():
    with pytest.raises(ValueError):
        wrap.seal("aes-128-gcm", KEY, b"x", AAD)
    for size in (0, 16, 31, 33):
        for algorithm in wrap.ALGORITHMS:
            with pytest.raises(ValueError):
                wrap.seal(algorithm, bytes(size), b"x", AAD)
            with pytest.raises(IntegrityError):
                wrap.open(algorithm, bytes(size), wrap.seal(algorithm, KEY, b"x", AAD), AAD)
    with pytest.raises(IntegrityError):
        wrap.open("aes-128-gcm", KEY, wrap.seal("aes-256-gcm", KEY, b"x", AAD), AAD)
