"""encrypt, decrypt, rewrap, datakey through the real CLI: round trips, armor, tampering, failures."""

import base64
import os

import pytest

SIZES = [0, 1, 16383, 16384, 16385, 65536, 65537, 1_000_003]


@pytest.fixture
def keyed(vault):
    vault.ok("key", "create", "k")
    vault.ok("key", "create", "c", "--algorithm", "chacha20-poly1305")
    return vault


@pytest.mark.parametrize("key", ["k", "c"])
@pytest.mark.sqlite_only("sizes around the chunk boundaries: the stream, the same on both engines")
def test_round_trip_files(keyed, tmp_path, key):
    for n in SIZES:
        data = os.urandom(n)
        (tmp_path / "p").write_bytes(data)
        keyed.ok("encrypt", "--key", key, "-i", "p", "-o", "ct")
        assert (tmp_path / "ct").read_bytes() != data or n == 0
        keyed.ok("decrypt", "-i", "ct", "-o", "out")
        assert (tmp_path / "out").read_bytes() == data, n


def test_stdin_stdout(keyed):
    ct = keyed.ok("encrypt", "--key", "k", input=b"hello world").out
    assert b"hello world" not in ct
    assert keyed.ok("decrypt", input=ct).out == b"hello world"


@pytest.mark.parametrize("key", ["k", "c"])
def test_armor(keyed, key):
    ct = keyed.ok("encrypt", "--key", key, "--armor", input=b"x" * 100000).out
    assert ct.startswith(b"-----BEGIN KMS-CLI ENCRYPTED FILE-----\n")
    assert ct.rstrip().endswith(b"-----END KMS-CLI ENCRYPTED FILE-----")
    assert all(len(l) <= 64 for l in ct.splitlines())
    assert keyed.ok("decrypt", input=ct).out == b"x" * 100000
    bad = ct.replace(ct.splitlines()[3], ct.splitlines()[3][:-1] + (b"A" if ct.splitlines()[3][-1:] != b"A" else b"B"))
    assert keyed("decrypt", input=bad).code == 5


def test_context_binding(keyed):
    ct = keyed.ok("encrypt", "--key", "k", "--context", "app=web", "--context", "env=prod", input=b"s").out
    assert keyed.ok("decrypt", "--context", "env=prod", "--context", "app=web", input=ct).out == b"s"
    for ctx in ([], ["--context", "app=web"], ["--context", "app=web", "--context", "env=dev"]):
        assert keyed("decrypt", *ctx, input=ct).code == 5


@pytest.mark.parametrize("key", ["k", "c"])
@pytest.mark.sqlite_only("~40 decrypts of flipped header bytes: the envelope, the same on both engines (a minute on PostgreSQL)")
def test_every_header_byte_is_authenticated(keyed, key):
    ct = keyed.ok("encrypt", "--key", key, input=b"payload").out
    # the header is magic(7) fmt suite vault(16) namelen name extlen version(4) wraplen wrap
    name_len = int.from_bytes(ct[25:27], "big")
    header_len = 27 + name_len + 2 + 4
    header_len += 2 + int.from_bytes(ct[header_len:header_len + 2], "big")
    for i in range(header_len):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        r = keyed("decrypt", input=bytes(bad))
        assert r.code == 5, (i, r.code, r.err)
        assert "Traceback" not in r.err


@pytest.mark.sqlite_only("cut and garbled ciphertexts: the stream, the same on both engines")
def test_truncation_and_garbage(keyed, tmp_path):
    ct = keyed.ok("encrypt", "--key", "k", input=os.urandom(40000)).out
    for cut in (0, 5, 30, len(ct) - 1, len(ct) - 17, len(ct) - 16400):
        r = keyed("decrypt", "-i", "-", "-o", "out", input=ct[:cut])
        assert r.code == 5, cut
        assert not (tmp_path / "out").exists()
    assert keyed("decrypt", input=ct + b"\x00").code == 5
    assert keyed("decrypt", input=os.urandom(1000)).code == 5
    assert keyed("decrypt", input=b"").code == 5


@pytest.mark.sqlite_only("the output file's fate: the same on both engines")
def test_failed_decrypt_leaves_nothing_at_out(keyed, tmp_path):
    ct = bytearray(keyed.ok("encrypt", "--key", "k", input=os.urandom(100000)).out)
    ct[-100] ^= 1
    r = keyed("decrypt", "-o", "out.bin", input=bytes(ct))
    assert r.code == 5
    assert not (tmp_path / "out.bin").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".kms-cli-")] == []


@pytest.mark.sqlite_only("the stream's chunks: the same on both engines")
def test_stdout_decrypt_fails_at_first_bad_chunk(keyed):
    data = os.urandom(16384 * 4)
    ct = bytearray(keyed.ok("encrypt", "--key", "k", input=data).out)
    ct[-200] ^= 1  # inside the last full chunk area
    r = keyed("decrypt", input=bytes(ct))
    assert r.code == 5
    assert data.startswith(r.out) and len(r.out) < len(data)


def test_other_vault_ciphertext_is_integrity_error(keyed, tmp_path):
    ct = keyed.ok("encrypt", "--key", "k", input=b"s").out
    other = dict(keyed.env, KMS_CLI_VAULT=str(tmp_path / "other.db"))
    keyed.ok("init", env=other)
    keyed.ok("key", "create", "k", env=other)
    r = keyed("decrypt", input=ct, env=other)
    assert r.code == 5 and "another vault" in r.err


@pytest.mark.sqlite_only("the output file's mode: the same on both engines")
def test_output_file_is_private(keyed, tmp_path):
    keyed.ok("encrypt", "--key", "k", "-o", "ct", input=b"x")
    keyed.ok("decrypt", "-i", "ct", "-o", "pt")
    for f in ("ct", "pt"):
        assert os.stat(tmp_path / f).st_mode & 0o777 == 0o600


def test_purpose_and_missing_key(keyed):
    assert keyed("encrypt", "--key", "nope", input=b"x").code == 3
    r = keyed("encrypt", input=b"x")
    assert r.code == 2 and "--key" in r.err


def test_datakey(keyed):
    d = keyed.ok("datakey", "--key", "k").json()
    assert set(d) == {"plaintext", "ciphertext", "key", "version"}
    assert d["key"] == "k" and d["version"] == 1
    pt = base64.b64decode(d["plaintext"])
    assert len(pt) == 32
    assert keyed.ok("decrypt", input=base64.b64decode(d["ciphertext"])).out == pt


def test_rewrap_is_header_only(keyed, tmp_path):
    data = os.urandom(300000)
    (tmp_path / "p").write_bytes(data)
    keyed.ok("encrypt", "--key", "k", "-i", "p", "-o", "c1")
    keyed.ok("key", "rotate", "k")
    keyed.ok("rewrap", "-i", "c1", "-o", "c2")
    c1, c2 = (tmp_path / "c1").read_bytes(), (tmp_path / "c2").read_bytes()
    assert len(c1) == len(c2)
    assert c1[-290000:] == c2[-290000:]  # payload copied unchanged
    assert c1[:60] != c2[:60] or c1 != c2
    assert keyed.ok("decrypt", "-i", "c2").out == data
    armored = keyed.ok("encrypt", "--key", "k", "--armor", input=b"a").out
    re_armored = keyed.ok("rewrap", input=armored).out
    assert re_armored.startswith(b"-----BEGIN KMS-CLI")
    assert keyed.ok("decrypt", input=re_armored).out == b"a"


@pytest.mark.sqlite_only("devices and fifos as outputs: the same on both engines")
def test_output_to_a_device_or_fifo_writes_through(keyed, tmp_path):
    """-o /dev/null must write to the device, never rename a temporary file over it."""
    import stat as stat_mod

    ct = keyed.ok("encrypt", "--key", "k", "-o", "/dev/null", input=b"x" * 1000)
    assert ct.out == b""
    keyed.ok("decrypt", "-o", "/dev/null", input=keyed.ok("encrypt", "--key", "k", input=b"y").out)
    assert stat_mod.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    keyed.ok("decrypt", "-o", str(fifo), input=keyed.ok("encrypt", "--key", "k", input=b"through a fifo").out)
    reader.join(10)
    assert got == [b"through a fifo"] and stat_mod.S_ISFIFO(os.stat(fifo).st_mode)
    assert keyed("decrypt", "-o", str(tmp_path), input=b"x").code in (2, 5)


@pytest.mark.parametrize("key", ["k", "c"])
@pytest.mark.sqlite_only("the parallel block engine: the same on both engines")
def test_large_files_round_trip_through_worker_processes(keyed, tmp_path, key):
    """24 MiB: past the size where worker processes read and seal blocks of the file themselves."""
    import subprocess
    import sys

    data = os.urandom(24 * 2**20 + 12345)
    (tmp_path / "big").write_bytes(data)
    keyed.ok("encrypt", "--key", key, "-i", "big", "-o", "big.ct")
    keyed.ok("decrypt", "-i", "big.ct", "-o", "big.out")
    assert (tmp_path / "big.out").read_bytes() == data
    # stdin redirected from a regular file takes the same path
    with open(tmp_path / "big.ct", "rb") as f:
        p = subprocess.run([sys.executable, "-m", "kms_cli", "decrypt"], stdin=f, capture_output=True,
                           env=keyed.env, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout == data
    # a flipped bit in the middle: exit 5, nothing at OUT
    ct = bytearray((tmp_path / "big.ct").read_bytes())
    ct[len(ct) // 2] ^= 4
    (tmp_path / "bad.ct").write_bytes(bytes(ct))
    r = keyed("decrypt", "-i", "bad.ct", "-o", "bad.out")
    assert r.code == 5 and "failed authentication" in r.err
    assert not (tmp_path / "bad.out").exists()
