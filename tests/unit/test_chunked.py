"""kms_cli.crypto.chunked: Cobblestone-256 in memory and streaming, and age's payload STREAM."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import shutil
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from kms_cli.crypto import blocks, chunked, streaming
from kms_cli.errors import IntegrityError

KEY = bytes(range(32))
CTX = b"kms-cli test context"
SALT = bytes(range(100, 124))
C = 16384
CT = C + 16
BLOCK = C * chunked._COB_BLOCK_CHUNKS  # plaintext bytes per streaming block

SIZES = [0, 1, C - 1, C, C + 1, 65535, 65536, 65537, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * 2**20 + 12345]


def message(size: int, seed: int = 0) -> bytes:
    """Deterministic, cheap, non-repeating-looking data."""
    stream = hashlib.shake_256(seed.to_bytes(4, "big")).digest(min(size, 1 << 16))
    reps = size // max(len(stream), 1) + 1
    return (stream * reps)[:size]


def enc(pt: bytes, *, threads=1, salt=SALT, key=KEY, ctx=CTX) -> bytes:
    out = io.BytesIO()
    n = chunked.encrypt_stream(key, ctx, io.BytesIO(pt), out, salt=salt, threads=threads)
    assert n == len(out.getvalue())
    return out.getvalue()


def dec(ct: bytes, *, threads=1, key=KEY, ctx=CTX) -> bytes:
    out = io.BytesIO()
    n = chunked.decrypt_stream(key, ctx, io.BytesIO(ct), out, threads=threads)
    assert n == len(out.getvalue())
    return out.getvalue()


def reference_seal(pt: bytes, salt: bytes = SALT, key: bytes = KEY, ctx: bytes = CTX) -> bytes:
    """Cobblestone-256 written independently from the specification, with cryptography only."""
    okm = HKDFExpand(
        hashes.SHA512(), 76, b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00" + salt + ctx
    ).derive(key)
    aead, base = AESGCM(okm[:32]), int.from_bytes(okm[32:44], "big")
    chunks = [pt[i : i + C] for i in range(0, len(pt) - len(pt) % C, C)] + [pt[len(pt) - len(pt) % C :]]
    body = b"".join(aead.encrypt((base ^ i).to_bytes(12, "big"), c, None) for i, c in enumerate(chunks))
    return salt + okm[44:] + body


# --------------------------------------------------------------------------
# Cobblestone-256 round trips.


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_all_paths_agree(size):
    pt = message(size, size)
    expected = reference_seal(pt)
    assert len(expected) == chunked.ciphertext_size(size)
    assert chunked.seal(KEY, pt, CTX, salt=SALT) == expected
    assert enc(pt, threads=1) == expected
    assert enc(pt, threads=4) == expected
    assert chunked.open(KEY, expected, CTX) == pt
    assert dec(expected, threads=1) == pt
    assert dec(expected, threads=4) == pt


def test_random_salt_and_default_threads():
    pt = message(100_000)
    a, b = chunked.seal(KEY, pt, CTX), chunked.seal(KEY, pt, CTX)
    assert a != b and a[:24] != b[:24]
    assert chunked.open(KEY, a, CTX) == chunked.open(KEY, b, CTX) == pt
    out = io.BytesIO()
    chunked.encrypt_stream(KEY, CTX, io.BytesIO(pt), out)
    assert dec(out.getvalue(), threads=None) == pt


def test_accepts_buffers_and_streams_from_current_position(tmp_path):
    pt = message(2 * BLOCK + 5)
    assert chunked.open(bytearray(KEY), memoryview(chunked.seal(KEY, bytearray(pt), CTX)), CTX) == pt
    path = tmp_path / "f"
    path.write_bytes(b"HEADER" + pt)
    with path.open("rb") as src, (tmp_path / "c").open("wb") as dst:
        src.seek(6)
        dst.write(b"xyz")  # output goes after whatever dst already holds
        n = chunked.encrypt_stream(KEY, CTX, src, dst, salt=SALT, threads=2)
    data = (tmp_path / "c").read_bytes()
    assert data[:3] == b"xyz" and data[3:] == reference_seal(pt) and n == len(data) - 3
    with (tmp_path / "c").open("rb", buffering=0) as src, (tmp_path / "p").open("wb", buffering=0) as dst:
        src.seek(3)
        assert chunked.decrypt_stream(KEY, CTX, src, dst, threads=2) == len(pt)
    assert (tmp_path / "p").read_bytes() == pt


class Trickle(io.RawIOBase):
    """A reader that returns at most `step` bytes per call (like a pipe)."""

    def __init__(self, data: bytes, step: int):
        self._data, self._pos, self._step = data, 0, step

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class ReadOnly:
    """Not an io object: only read()."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)

    def read(self, n=-1):
        return self._f.read(n)


class Collector:
    """Not an io object: keeps whatever write() is given (a buffer reused later would corrupt it)."""

    def __init__(self):
        self.parts = []

    def write(self, b):
        self.parts.append(b)
        return len(b)

    def value(self) -> bytes:
        return b"".join(bytes(p) for p in self.parts)


class Dribble(io.RawIOBase):
    """A raw writer that accepts at most 1000 bytes per call."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        n = min(len(b), 1000)
        self.buf += bytes(b[:n])
        return n


@pytest.mark.parametrize("threads", [1, 3])
def test_unusual_sources_and_sinks(threads):
    pt = message(3 * BLOCK + 777)
    ct = reference_seal(pt)
    for src in (Trickle(pt, 5000), ReadOnly(pt)):
        sink = Collector()
        chunked.encrypt_stream(KEY, CTX, src, sink, salt=SALT, threads=threads)
        assert sink.value() == ct
    sink = Dribble()
    chunked.encrypt_stream(KEY, CTX, Trickle(pt, 70_001), sink, salt=SALT, threads=threads)
    assert bytes(sink.buf) == ct
    for src in (Trickle(ct, 3001), ReadOnly(ct)):
        sink = Collector()
        assert chunked.decrypt_stream(KEY, CTX, src, sink, threads=threads) == len(pt)
        assert sink.value() == pt


def test_small_inputs_do_not_start_threads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("thread pool started")

    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", boom)
    for size in (0, 1, C, 5 * C + 3, BLOCK - C):
        pt = message(size)
        ct = enc(pt, threads=4)
        assert dec(ct, threads=4) == pt
        assert chunked.open(KEY, chunked.seal(KEY, pt, CTX), CTX) == pt
    a = io.BytesIO()
    chunked.age_encrypt_stream(bytes(16), io.BytesIO(message(100_000)), a, threads=4)
    chunked.age_decrypt_stream(bytes(16), io.BytesIO(a.getvalue()), io.BytesIO(), threads=4)


def test_memory_is_bounded(monkeypatch):
    """However long the stream, only a fixed number of block buffers is ever allocated."""
    made = []
    real = streaming._Slot

    class Counting(real):
        __slots__ = ()

        def __init__(self, *a):
            made.append(1)
            super().__init__(*a)

    monkeypatch.setattr(streaming, "_Slot", Counting)
    pt = message(24 * BLOCK + 1)
    for threads in (1, 2, 4):
        made.clear()
        ct = enc(pt, threads=threads)
        assert len(made) <= (2 if threads == 1 else threads * streaming._DEPTH_PER_THREAD + 2)
        made.clear()
        assert dec(ct, threads=threads) == pt
        assert len(made) <= (2 if threads == 1 else threads * streaming._DEPTH_PER_THREAD + 2)


def test_concurrent_streams_in_threads_leave_the_switch_interval_alone():
    # (earlier versions lowered it while worker threads ran: measured, it no longer paid)
    before = sys.getswitchinterval()
    pt = message(3 * BLOCK)
    dec(enc(pt, threads=2), threads=2)
    assert sys.getswitchinterval() == before
    results = []

    def job(seed):
        data = message(4 * BLOCK + seed, seed)
        results.append(dec(enc(data, threads=2), threads=3) == data)

    workers = [threading.Thread(target=job, args=(k,)) for k in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [True, True, True]
    assert sys.getswitchinterval() == before


def test_default_threads(monkeypatch):
    assert 1 <= chunked.default_threads() <= 4
    monkeypatch.setattr(blocks, "_AEAD_RELEASES_GIL", False)
    assert chunked.default_threads() == 1


# --------------------------------------------------------------------------
# Cobblestone-256 failures.


def _must_fail(ct: bytes, *, key=KEY, ctx=CTX, prefix: bytes | None = b"") -> None:
    """ct is rejected by open and by decrypt_stream; the stream released only a prefix of `prefix`."""
    with pytest.raises(IntegrityError):
        chunked.open(key, ct, ctx)
    for threads in (1, 4):
        out = io.BytesIO()
        with pytest.raises(IntegrityError):
            chunked.decrypt_stream(key, ctx, io.BytesIO(ct), out, threads=threads)
        if prefix is not None:
            assert prefix.startswith(out.getvalue())
            assert len(out.getvalue()) % C == 0


def test_truncation_at_every_boundary():
    pt = message(3 * C + 100)
    ct = reference_seal(pt)
    cuts = {0, 1, 23, 24, 25, 55, 56, 57, 56 + 15, 56 + 16, len(ct) - 1, len(ct) - 16, len(ct) - 17}
    for k in range(1, 4):
        end = 56 + k * CT
        cuts |= {end - 17, end - 16, end - 1, end, end + 1, end + 15, end + 16}
    for cut in sorted(c for c in cuts if 0 <= c < len(ct)):
        _must_fail(ct[:cut], prefix=pt)


def test_truncation_messages_are_short_and_safe():
    ct = reference_seal(message(2 * C))
    for cut in (10, 56, 56 + CT, 56 + 2 * CT, 56 + 2 * CT + 5):
        with pytest.raises(IntegrityError) as info:
            chunked.open(KEY, ct[:cut], CTX)
        assert str(info.value) == "ciphertext is truncated"
        assert info.value.exit_code == 5


def test_trailing_data():
    for size in (0, 5, C, 2 * C + 9):
        pt = message(size)
        ct = reference_seal(pt)
        _must_fail(ct + b"\x00", prefix=pt)
        _must_fail(ct + ct[56:], prefix=pt)  # a second, validly encrypted stream body


def test_flipped_bit_in_every_region():
    pt = message(2 * C + 100)
    ct = reference_seal(pt)
    positions = [0, 23, 24, 55]  # salt, commitment
    for k in range(3):
        start = 56 + k * CT
        body_len = C if k < 2 else 100
        positions += [start, start + body_len // 2, start + body_len - 1, start + body_len, start + body_len + 15]
    for pos in positions:
        bad = bytearray(ct)
        bad[pos] ^= 0x04
        _must_fail(bytes(bad), prefix=pt)


def test_reordered_and_duplicated_chunks():
    pt = message(3 * C + 1)
    ct = reference_seal(pt)
    head, chunks = ct[:56], [ct[56 + i * CT : 56 + (i + 1) * CT] for i in range(4)]
    _must_fail(head + chunks[1] + chunks[0] + chunks[2] + chunks[3], prefix=pt)
    _must_fail(head + chunks[0] + chunks[0] + chunks[2] + chunks[3], prefix=pt)
    _must_fail(head + chunks[0] + chunks[2] + chunks[3], prefix=pt)


def test_wrong_key_context_and_key_size():
    ct = reference_seal(message(1000))
    for key, ctx in ((bytes(32), CTX), (KEY, CTX + b"!"), (KEY, b"")):
        with pytest.raises(IntegrityError, match="^key commitment mismatch: wrong key or context$"):
            chunked.open(key, ct, ctx)
        _must_fail(ct, key=key, ctx=ctx)
    for size in (0, 16, 31, 33):
        _must_fail(ct, key=bytes(size))
    with pytest.raises(ValueError):
        chunked.seal(KEY, b"", CTX, salt=bytes(23))


def test_streaming_decrypt_writes_only_authenticated_chunks():
    """A bad chunk deep inside a multi-block stream: exactly the chunks before it come out."""
    pt = message(6 * BLOCK + 5)
    ct = reference_seal(pt)
    for bad_chunk in (0, 1, 63, 64, 65, 200, 6 * 64):
        bad = bytearray(ct)
        bad[56 + bad_chunk * CT + 7] ^= 1
        for threads in (1, 2, 4):
            out = io.BytesIO()
            with pytest.raises(IntegrityError, match=f"^chunk {bad_chunk} failed authentication$"):
                chunked.decrypt_stream(KEY, CTX, io.BytesIO(bytes(bad)), out, threads=threads)
            assert out.getvalue() == pt[: bad_chunk * C]


def test_chunk_limit(monkeypatch):
    monkeypatch.setattr(chunked, "MAX_CHUNKS", 3)
    ok = message(2 * C + 1)  # 3 chunks: allowed
    ct = chunked.seal(KEY, ok, CTX)
    assert chunked.open(KEY, ct, CTX) == ok
    for threads in (1, 4):
        with pytest.raises(ValueError):
            enc(message(3 * C), threads=threads)  # 4 chunks
    monkeypatch.setattr(chunked, "MAX_CHUNKS", 1 << 38)
    long_ct = chunked.seal(KEY, message(3 * C), CTX)
    monkeypatch.setattr(chunked, "MAX_CHUNKS", 3)
    with pytest.raises(ValueError):
        chunked.seal(KEY, message(3 * C), CTX)
    _must_fail(long_ct, prefix=None)


# --------------------------------------------------------------------------
# age payload STREAM.

FILE_KEY = bytes(range(200, 216))
NONCE = bytes(range(16))
AC = 65536
ACT = AC + 16
ABLOCK = AC * chunked._AGE_BLOCK_CHUNKS


def age_reference(pt: bytes, file_key: bytes = FILE_KEY, nonce: bytes = NONCE) -> bytes:
    """age's payload, written by hand from age.md with cryptography's primitives only."""
    key = HKDF(hashes.SHA256(), 32, salt=nonce, info=b"payload").derive(file_key)
    aead = ChaCha20Poly1305(key)
    chunks = [pt[i : i + AC] for i in range(0, len(pt), AC)] or [b""]
    out = [nonce]
    for i, chunk in enumerate(chunks):
        final = 1 if i == len(chunks) - 1 else 0
        out.append(aead.encrypt(i.to_bytes(11, "big") + bytes([final]), chunk, None))
    return b"".join(out)


def age_chunk(i: int, data: bytes, final: bool, file_key: bytes = FILE_KEY, nonce: bytes = NONCE) -> bytes:
    key = HKDF(hashes.SHA256(), 32, salt=nonce, info=b"payload").derive(file_key)
    return ChaCha20Poly1305(key).encrypt(i.to_bytes(11, "big") + bytes([1 if final else 0]), data, None)


def age_enc(pt: bytes, threads=1, nonce=NONCE) -> bytes:
    out = io.BytesIO()
    n = chunked.age_encrypt_stream(FILE_KEY, io.BytesIO(pt), out, nonce=nonce, threads=threads)
    assert n == len(out.getvalue())
    return out.getvalue()


def age_dec(ct: bytes, threads=1) -> bytes:
    out = io.BytesIO()
    n = chunked.age_decrypt_stream(FILE_KEY, io.BytesIO(ct), out, threads=threads)
    assert n == len(out.getvalue())
    return out.getvalue()


def age_must_fail(ct: bytes, prefix: bytes = b"") -> None:
    for threads in (1, 4):
        out = io.BytesIO()
        with pytest.raises(IntegrityError):
            chunked.age_decrypt_stream(FILE_KEY, io.BytesIO(ct), out, threads=threads)
        assert prefix.startswith(out.getvalue())


AGE_SIZES = [0, 1, AC - 1, AC, AC + 1, 2 * AC, ABLOCK - 1, ABLOCK, ABLOCK + 1, 3 * ABLOCK + 17]


@pytest.mark.parametrize("size", AGE_SIZES)
def test_age_round_trip_matches_hand_built_reference(size):
    pt = message(size, 7)
    expected = age_reference(pt)
    assert age_enc(pt, threads=1) == expected
    assert age_enc(pt, threads=4) == expected
    assert age_dec(expected, threads=1) == pt
    assert age_dec(expected, threads=4) == pt


def test_age_known_answer():
    """Each chunk checked against ChaCha20-Poly1305 under the hand-derived payload key."""
    ct = age_enc(b"hello, age\n")
    assert ct[:16] == NONCE and len(ct) == 16 + 11 + 16
    assert ct[16:] == age_chunk(0, b"hello, age\n", True)
    assert age_enc(b"")[16:] == age_chunk(0, b"", True)
    assert age_enc(message(AC))[16:] == age_chunk(0, message(AC), True)  # a full final chunk
    two = age_enc(message(AC + 1))[16:]
    assert two == age_chunk(0, message(AC), False) + age_chunk(1, message(AC + 1)[AC:], True)


def test_age_random_nonce_and_key_sizes():
    a, b = io.BytesIO(), io.BytesIO()
    chunked.age_encrypt_stream(FILE_KEY, io.BytesIO(b"x"), a)
    chunked.age_encrypt_stream(FILE_KEY, io.BytesIO(b"x"), b)
    assert a.getvalue()[:16] != b.getvalue()[:16]
    assert age_dec(a.getvalue()) == age_dec(b.getvalue()) == b"x"
    for bad in (bytes(15), bytes(24), bytes(33)):
        with pytest.raises(ValueError):
            chunked.age_encrypt_stream(bad, io.BytesIO(b"x"), io.BytesIO())
        with pytest.raises(IntegrityError):
            chunked.age_decrypt_stream(bad, io.BytesIO(a.getvalue()), io.BytesIO())
    with pytest.raises(ValueError):
        chunked.age_encrypt_stream(FILE_KEY, io.BytesIO(b"x"), io.BytesIO(), nonce=bytes(12))
    # kms-cli's 256-bit file keys: accepted, and a different key does not open the payload
    c = io.BytesIO()
    chunked.age_encrypt_stream(bytes(range(32)), io.BytesIO(b"x"), c)
    out = io.BytesIO()
    chunked.age_decrypt_stream(bytes(range(32)), io.BytesIO(c.getvalue()), out)
    assert out.getvalue() == b"x"
    with pytest.raises(IntegrityError):
        chunked.age_decrypt_stream(bytes(32), io.BytesIO(c.getvalue()), io.BytesIO())
    with pytest.raises(IntegrityError):
        chunked.age_decrypt_stream(bytes(16), io.BytesIO(a.getvalue()), io.BytesIO())


def test_age_final_chunk_rules():
    full = message(AC, 1)
    tail = message(10, 2)
    # A full-size final chunk is fine.
    assert age_dec(NONCE + age_chunk(0, full, True)) == full
    assert age_dec(NONCE + age_chunk(0, full, False) + age_chunk(1, full, True)) == full + full
    # An empty final chunk is only valid for an empty payload.
    assert age_dec(NONCE + age_chunk(0, b"", True)) == b""
    age_must_fail(NONCE + age_chunk(0, full, False) + age_chunk(1, b"", True), prefix=full)
    # The last chunk is an empty chunk without the final flag.
    age_must_fail(NONCE + age_chunk(0, full, False) + age_chunk(1, b"", False), prefix=full)
    age_must_fail(NONCE + age_chunk(0, b"", False))
    # An extra empty chunk after a full final chunk.
    age_must_fail(NONCE + age_chunk(0, full, True) + age_chunk(1, b"", True))
    age_must_fail(NONCE + age_chunk(0, full, True) + age_chunk(1, b"", False))
    # No final flag at all: the stream is truncated.
    age_must_fail(NONCE + age_chunk(0, full, False), prefix=full)
    age_must_fail(NONCE + age_chunk(0, full, False) + age_chunk(1, tail, False), prefix=full)
    # Data after the final chunk.
    age_must_fail(NONCE + age_chunk(0, tail, True) + age_chunk(1, tail, True))
    age_must_fail(NONCE + age_chunk(0, full, True) + age_chunk(1, tail, True))
    age_must_fail(NONCE + age_chunk(0, full, True) + age_chunk(1, full, True))
    # Nothing at all, or a partial nonce.
    for ct in (b"", NONCE[:5], NONCE):
        age_must_fail(ct)


def test_age_tampering_and_truncation():
    pt = message(2 * ABLOCK + 3 * AC + 100, 3)
    ct = age_reference(pt)
    for pos in (0, 15, 16, 16 + AC, 16 + ACT, 16 + 34 * ACT + 5, len(ct) - 1, len(ct) - 17):
        bad = bytearray(ct)
        bad[pos] ^= 0x80
        age_must_fail(bytes(bad), prefix=pt)
    for cut in (16 + ACT, 16 + ACT + 10, 16 + ACT + 16, 16 + 16 * ACT, 16 + 32 * ACT, len(ct) - 1, len(ct) - 16):
        age_must_fail(ct[:cut], prefix=pt)
    age_must_fail(ct + b"\x00", prefix=pt)
    # Reordered chunks.
    chunks = [ct[16 + i * ACT : 16 + (i + 1) * ACT] for i in range(3)]
    age_must_fail(NONCE + chunks[1] + chunks[0] + chunks[2] + ct[16 + 3 * ACT :])


def test_age_streaming_writes_only_authenticated_chunks():
    pt = message(3 * ABLOCK + 5, 4)
    ct = age_reference(pt)
    for bad_chunk in (0, 15, 16, 17, 40):
        bad = bytearray(ct)
        bad[16 + bad_chunk * ACT + 3] ^= 1
        for threads in (1, 4):
            out = io.BytesIO()
            with pytest.raises(IntegrityError, match=f"^chunk {bad_chunk} failed authentication$"):
                chunked.age_decrypt_stream(FILE_KEY, io.BytesIO(bytes(bad)), out, threads=threads)
            assert out.getvalue() == pt[: bad_chunk * AC]


# Interoperability with the age binary, through a minimal X25519 header built here.

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_payload(text: str) -> bytes:
    """The data of a Bech32 string (checksum not verified: the strings come from age-keygen)."""
    data = text.lower().rsplit("1", 1)[1][:-6]
    acc, bits, out = 0, 0, bytearray()
    for ch in data:
        acc, bits = (acc << 5) | _BECH32.index(ch), bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def unb64(text: bytes) -> bytes:
    return base64.b64decode(text + b"=" * (-len(text) % 4))


@pytest.fixture
def age_identity(tmp_path):
    if not (AGE and AGE_KEYGEN):
        pytest.skip("age is not installed")
    path = tmp_path / "identity.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    secret = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    identity = X25519PrivateKey.from_private_bytes(bech32_payload(secret))
    return path, identity


def _x25519_wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=share + recipient, info=b"age-encryption.org/v1/X25519").derive(shared)


def test_age_binary_decrypts_our_payload(tmp_path, age_identity):
    identity_path, identity = age_identity
    recipient = identity.public_key().public_bytes_raw()
    file_key = os.urandom(16)
    eph = X25519PrivateKey.generate()
    share = eph.public_key().public_bytes_raw()
    wrap_key = _x25519_wrap_key(eph.exchange(identity.public_key()), share, recipient)
    body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
    header = b"age-encryption.org/v1\n-> X25519 " + b64(share) + b"\n" + b64(body) + b"\n---"
    mac_key = HKDF(hashes.SHA256(), 32, salt=b"", info=b"header").derive(file_key)
    mac = hmac.new(mac_key, header, "sha256").digest()
    for size in (0, 100, AC, 3 * ABLOCK + 5):
        pt = message(size, 9)
        payload = io.BytesIO()
        chunked.age_encrypt_stream(file_key, io.BytesIO(pt), payload, threads=2)
        path = tmp_path / "f.age"
        path.write_bytes(header + b" " + b64(mac) + b"\n" + payload.getvalue())
        out = subprocess.run([AGE, "-d", "-i", str(identity_path), str(path)], capture_output=True, check=True)
        assert out.stdout == pt


def test_we_decrypt_the_age_binary_payload(tmp_path, age_identity):
    identity_path, identity = age_identity
    recipient = identity.public_key().public_bytes_raw()
    for size in (0, 100, AC, 3 * ABLOCK + 5):
        pt = message(size, 10)
        (tmp_path / "p").write_bytes(pt)
        data = subprocess.run(
            [AGE, "-e", "-i", str(identity_path), str(tmp_path / "p")], capture_output=True, check=True
        ).stdout
        lines = data.split(b"\n")
        assert lines[0] == b"age-encryption.org/v1"
        args = lines[1].split(b" ")
        assert args[:2] == [b"->", b"X25519"]
        share, body = unb64(args[2]), unb64(lines[2])
        wrap_key = _x25519_wrap_key(identity.exchange(X25519PublicKey.from_public_bytes(share)), share, recipient)
        file_key = ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        assert lines[3].startswith(b"--- ")
        src = io.BytesIO(data)
        src.seek(len(b"\n".join(lines[:4])) + 1)
        out = io.BytesIO()
        assert chunked.age_decrypt_stream(file_key, src, out, threads=2) == size
        assert out.getvalue() == pt


# --------------------------------------------------------------------------
# Worker processes (large streams on POSIX).

needs_fork = pytest.mark.skipif(not streaming._fork_usable(), reason="needs os.fork in a single-threaded process")
BIG = 40 * 2**20 + 12345  # ~40 blocks


def _children() -> list[int]:
    """Pids of this process's children (zombies included), from /proc."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == me:
            kids.append(int(entry))
    return kids


@pytest.fixture
def forks(monkeypatch):
    """Fork after 2 inline blocks; yields the list of fork() results seen by the parent."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc")
    if not streaming._fork_usable():
        # Session fixtures of other test modules (local servers) run threads in this process, so
        # kms-cli rightly refuses to fork here: test_process_path_in_a_clean_interpreter reruns these.
        pytest.skip("other threads run in this test process; rerun in a clean interpreter")
    before = set(_children())  # session fixtures may keep servers as children
    monkeypatch.setattr(streaming, "_FORK_AFTER_BLOCKS", 2)
    seen = []
    real_fork = os.fork

    def counting_fork():
        pid = real_fork()
        if pid:
            seen.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    yield seen
    assert set(_children()) - before == set()
    for pid in seen:  # every worker was reaped
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@needs_fork
def test_processes_round_trip_and_match_inline(forks):
    pt = message(BIG, 7)
    expected = enc(pt, threads=1)
    assert forks == []
    assert enc(pt, threads=2) == expected
    assert len(forks) == 2
    assert _children() == []
    assert enc(pt, threads=3) == expected
    assert len(forks) == 5
    assert dec(expected, threads=2) == pt
    assert len(forks) == 7
    assert expected[:56] + expected[-200:] == reference_seal(pt)[:56] + reference_seal(pt)[-200:]


@needs_fork
def test_processes_round_trip_at_block_boundaries(forks):
    for size in (3 * BLOCK, 3 * BLOCK + 1, 9 * BLOCK - 1, 9 * BLOCK):
        pt = message(size, size)
        ct = reference_seal(pt)
        assert enc(pt, threads=2) == ct
        assert dec(ct, threads=2) == pt
    assert forks


@needs_fork
def test_processes_tamper_writes_exactly_the_authenticated_prefix(forks):
    pt = message(BIG, 3)
    ct = enc(pt, threads=1)
    nchunks = BIG // C + 1
    for bad_chunk, threads in ((2 * 64 + 1, 2), (2000, 4), (nchunks - 2, 2), (nchunks - 1, 3)):
        bad = bytearray(ct)
        bad[56 + bad_chunk * CT + 3] ^= 0x80
        out = io.BytesIO()
        with pytest.raises(IntegrityError, match=f"^chunk {bad_chunk} failed authentication$"):
            chunked.decrypt_stream(KEY, CTX, io.BytesIO(bytes(bad)), out, threads=threads)
        assert out.getvalue() == pt[: bad_chunk * C]
        assert _children() == []
    assert forks


@needs_fork
def test_processes_truncation_and_trailing_data(forks):
    pt = message(BIG - 12345 + C - 1, 5)  # ends with a 16383-byte final chunk
    ct = enc(pt, threads=1)
    last_full = 56 + (len(pt) // C) * CT  # the final chunk starts here
    for cut in (ct[:-1], ct[: len(ct) - 17], ct[:last_full], ct[: last_full - CT], ct[:last_full + 15]):
        out = io.BytesIO()
        with pytest.raises(IntegrityError):
            chunked.decrypt_stream(KEY, CTX, io.BytesIO(cut), out, threads=2)
        assert pt.startswith(out.getvalue()) and len(out.getvalue()) % C == 0
    for extra in (b"\0", bytes(CT)):
        out = io.BytesIO()
        with pytest.raises(IntegrityError):
            chunked.decrypt_stream(KEY, CTX, io.BytesIO(ct + extra), out, threads=2)
        assert pt.startswith(out.getvalue())
    assert forks


@needs_fork
def test_processes_age_round_trip_and_tamper(forks):
    pt = message(20 * 2**20 + 3, 9)
    ct = age_enc(pt, threads=1)
    assert age_enc(pt, threads=2) == ct
    assert age_dec(ct, threads=2) == pt
    bad = bytearray(ct)
    bad[16 + 250 * (65536 + 16) + 1] ^= 1
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match="^chunk 250 failed authentication$"):
        chunked.age_decrypt_stream(FILE_KEY, io.BytesIO(bytes(bad)), out, threads=2)
    assert out.getvalue() == pt[: 250 * 65536]
    assert forks


@needs_fork
def test_processes_propagate_worker_exceptions(forks, monkeypatch):
    monkeypatch.setattr(chunked, "MAX_CHUNKS", 64 * 5 + 10)
    with pytest.raises(ValueError, match="too long"):
        enc(message(10 * BLOCK), threads=2)
    assert forks


@needs_fork
def test_processes_dead_worker_raises_instead_of_hanging(forks, monkeypatch):
    parent = os.getpid()
    real = chunked._cob_seal_block

    def dying(st, v, n, first, at_eof):
        if os.getpid() != parent and first >= 6 * 64:
            os._exit(3)
        return real(st, v, n, first, at_eof)

    monkeypatch.setattr(chunked, "_cob_seal_block", dying)
    out = io.BytesIO()
    with pytest.raises(chunked.WorkerError):
        chunked.encrypt_stream(KEY, CTX, io.BytesIO(message(BIG)), out, salt=SALT, threads=2)
    assert forks
    assert len(out.getvalue()) <= 56 + 6 * 64 * CT


# Large regular files: the workers read their blocks of the input file themselves.


@pytest.fixture
def plans(monkeypatch):
    """Records each read plan the engine makes (None: the parent reads every block)."""
    plans = []
    real = streaming._read_plan

    def recording(src, block, threads):
        plan = real(src, block, threads)
        plans.append(plan)
        return plan

    monkeypatch.setattr(streaming, "_read_plan", recording)
    return plans


def _file(tmp_path, data: bytes, prefix: bytes = b"") -> str:
    path = str(tmp_path / "in.bin")
    with open(path, "wb") as f:
        f.write(prefix + data)
    return path


def _run(fn, path: str, skip: int, *args, **kw) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as src:
        src.read(skip)  # start mid-file, at a position that is not page aligned
        fn(*args, src, out, **kw)
    return out.getvalue()


@needs_fork
def test_processes_worker_read_files_round_trip_at_block_boundaries(forks, plans, tmp_path):
    m = streaming._FORK_AFTER_BLOCKS + 3
    for size in (m * BLOCK - 1, m * BLOCK, m * BLOCK + 1, (m + 1) * BLOCK + C - 1, (m + 1) * BLOCK + C):
        pt = message(size, size)
        ct = reference_seal(pt)
        assert _run(chunked.encrypt_stream, _file(tmp_path, pt, b"hdr"), 3, KEY, CTX, salt=SALT, threads=2) == ct
        assert plans.pop() is not None
        assert _run(chunked.decrypt_stream, _file(tmp_path, ct, b"xy"), 2, KEY, CTX, threads=2) == pt
        assert plans.pop() is not None
    assert forks


@needs_fork
def test_processes_worker_read_age_files_round_trip(forks, plans, tmp_path):
    for size in (20 * 2**20, 20 * 2**20 + 1, 20 * 2**20 + 65536):  # the final chunk may be full
        pt = message(size, 3)
        ct = age_enc(pt)
        assert _run(chunked.age_encrypt_stream, _file(tmp_path, pt), 0, FILE_KEY, nonce=NONCE, threads=2) == ct
        assert _run(chunked.age_decrypt_stream, _file(tmp_path, ct, b"1234567"), 7, FILE_KEY, threads=3) == pt
    assert sum(plan is not None for plan in plans) == 6  # the two file runs of each size
    assert forks


@needs_fork
def test_processes_worker_read_tamper_writes_exactly_the_authenticated_prefix(forks, plans, tmp_path):
    pt = message(BIG, 4)
    ct = bytearray(enc(pt))
    bad_chunk = 20 * 64 + 5  # inside a block a worker read
    ct[56 + bad_chunk * CT + 9] ^= 1
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match=f"^chunk {bad_chunk} failed authentication$"):
        with open(_file(tmp_path, bytes(ct)), "rb") as src:
            chunked.decrypt_stream(KEY, CTX, src, out, threads=2)
    assert out.getvalue() == pt[: bad_chunk * C]
    assert plans[-1] is not None
    assert forks


@needs_fork
def test_processes_worker_read_file_that_grows_is_read_to_its_new_end(forks, monkeypatch, tmp_path):
    pt = message(BIG, 5)
    path = _file(tmp_path, pt[: 30 * BLOCK + 7])
    real = streaming._read_plan

    def then_grow(src, block, threads):
        plan = real(src, block, threads)
        with open(path, "ab") as f:
            f.write(pt[30 * BLOCK + 7 :])
        return plan

    monkeypatch.setattr(streaming, "_read_plan", then_grow)
    assert _run(chunked.encrypt_stream, path, 0, KEY, CTX, salt=SALT, threads=2) == reference_seal(pt)
    assert forks


@needs_fork
def test_processes_worker_read_file_that_shrinks_fails_without_hanging(forks, monkeypatch, tmp_path):
    path = _file(tmp_path, message(BIG, 6))
    real = streaming._read_plan

    def then_truncate(src, block, threads):
        plan = real(src, block, threads)
        os.truncate(path, 12 * BLOCK)
        return plan

    monkeypatch.setattr(streaming, "_read_plan", then_truncate)
    out = io.BytesIO()
    with pytest.raises(chunked.InputChangedError, match="shrank"):
        with open(path, "rb") as src:
            chunked.encrypt_stream(KEY, CTX, src, out, salt=SALT, threads=2)
    assert len(out.getvalue()) <= 56 + 12 * 64 * CT
    assert forks


@needs_fork
def test_processes_worker_read_memory_stays_bounded(tmp_path):
    """A 256 MiB file: no process of the run (the parent or a worker) grows with the file."""
    path = _file(tmp_path, message(256 * 2**20, 8))
    script = (
        "import io, resource, sys\n"
        "from kms_cli.crypto import chunked\n"
        "with open(sys.argv[1], 'rb') as src:\n"
        "    chunked.encrypt_stream(bytes(32), b'', src, open('/dev/null', 'wb'), threads=2)\n"
        # this process's own peak (VmHWM: ru_maxrss would carry the pytest process's over exec)
        "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, check=True).stdout
    parent_kib, worker_kib = map(int, out.split())
    assert worker_kib > 0, "no worker process ran"
    assert parent_kib < 64 * 1024 and worker_kib < 64 * 1024, out


def test_small_streams_never_fork(monkeypatch):
    def boom():
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", boom)
    pt = message(streaming._FORK_AFTER_BLOCKS * BLOCK)  # the last block is found at end of file: inline
    assert dec(enc(pt, threads=4), threads=4) == pt
    a = io.BytesIO()
    chunked.age_encrypt_stream(bytes(16), io.BytesIO(message(8 * 2**20)), a, threads=4)
    chunked.age_decrypt_stream(bytes(16), io.BytesIO(a.getvalue()), io.BytesIO(), threads=4)


def test_multithreaded_callers_use_threads_not_fork(monkeypatch):
    def boom():
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", boom)
    monkeypatch.setattr(streaming, "_FORK_AFTER_BLOCKS", 1)
    pt = message(6 * BLOCK + 1)
    ev = threading.Event()
    t = threading.Thread(target=ev.wait)
    t.start()
    try:
        assert dec(enc(pt, threads=2), threads=2) == pt
    finally:
        ev.set()
        t.join()


def test_process_path_in_a_clean_interpreter():
    """When this test process runs other threads (so the fork tests above skip), run them in a fresh one."""
    if streaming._fork_usable():
        pytest.skip("the process-path tests ran directly in this process")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "processes"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and " skipped" not in p.stdout.splitlines()[-1]


def test_buffered_destinations_get_every_byte_in_order():
    """Blocks bypass a buffered writer's buffer (no copy), after whatever it already holds."""

    class Recorder(io.RawIOBase):
        def __init__(self):
            self.parts = []

        def writable(self):
            return True

        def write(self, b):
            self.parts.append(bytes(b))
            return len(b)

    pt = message(3 * BLOCK + 5, 11)
    ct = enc(pt)
    raw = Recorder()
    dst = io.BufferedWriter(raw, buffer_size=BLOCK)  # a decrypted block fills it exactly
    dst.write(b"already buffered:")
    chunked.decrypt_stream(KEY, CTX, io.BytesIO(ct), dst, threads=1)
    dst.flush()
    assert b"".join(raw.parts) == b"already buffered:" + pt
    assert raw.parts[0] == b"already buffered:"  # flushed before the first block, not after
    assert max(map(len, raw.parts)) == BLOCK  # whole blocks, written straight through
