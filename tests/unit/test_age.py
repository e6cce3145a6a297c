"""The age layer (kms_cli.crypto.age, age_recipients, bech32, hpke): round trips, bad input,
the header parser under hypothesis, HPKE against cryptography's, interop with `age`/`ssh-keygen`.
The published vectors are in tests/vectors/test_age_testkit.py."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_cli.crypto import age, bech32, hpke
from kms_cli.crypto import age_recipients as ar
from kms_cli.errors import IntegrityError, KmsError, UnlockError, UsageError

X = ar.X25519Identity.generate()
PQ = ar.HybridIdentity.generate()
SIZES = [0, 1, age.CHUNK_SIZE - 1, age.CHUNK_SIZE, age.CHUNK_SIZE + 1, 2 * age.CHUNK_SIZE, 150_000]


# ---------------------------------------------------------------- bech32

def test_bech32_bip173_valid_strings():
    for s in ["A12UEL5L", "a12uel5l", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
              "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
              "?1ezyfcl"]:
        hrp, data = bech32.decode(s)
        assert hrp == s.lower()[:s.lower().rfind("1")]


@pytest.mark.parametrize("s", ["A1G7SGD8", "a12UEL5L", "1nwldj5", "pzry9x0s0muk", "x1b4n0q5v",
                               "li1dgmt3", "de1lg7wt\xff", "A12uEL5L",
                               # bech32m checksum of the same data is not bech32
                               "a1lqfn3a"])
def test_bech32_invalid_strings(s):
    with pytest.raises(ValueError):
        bech32.decode(s)


@given(st.binary(max_size=1300), st.booleans())
def test_bech32_round_trip_without_length_limit(data, upper):
    text = bech32.encode("age", data, upper=upper)
    assert bech32.decode(text) == ("age", data)


@given(st.text(alphabet=bech32.CHARSET, max_size=40))
def test_bech32_fast_five_to_eight_matches_the_bit_loop(chars):
    """decode's integer conversion accepts and refuses exactly what BIP 173's bit loop does."""
    try:
        slow = bytes(bech32._convert([bech32.CHARSET.index(c) for c in chars], 5, 8, False))
    except ValueError:
        slow = None
    try:
        fast = bech32._five_to_eight(chars)
    except ValueError:
        fast = None
    assert fast == slow


def test_bech32_spec_examples():
    r = ar.parse_recipient("age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj")
    assert isinstance(r, ar.X25519Recipient)
    i = ar.parse_identity("AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX")
    assert i.text == "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
    pq = ar.parse_identity("AGE-SECRET-KEY-PQ-1XX76JRALNLXDMEW0CRK45QMCCH4X06SE84UN3VPM33W6HWDX0H3SK3ZQFR")
    assert pq.recipient().text.startswith("age1pq1") and len(pq.recipient().text) == 1959


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("size", SIZES)
def test_round_trip_x25519_and_hybrid(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for ident in (X, PQ):
        ct = age.encrypt(data, [ar.parse_recipient(ident.recipient().text)])
        assert age.decrypt(ct, [ident]) == data
    streamed = io.BytesIO()
    age.encrypt_stream(io.BytesIO(data), streamed, [X.recipient()])
    out = io.BytesIO()
    age.decrypt_stream(io.BytesIO(streamed.getvalue()), out, [X])
    assert out.getvalue() == data


def test_payload_chunking_matches_the_spec():
    ct = age.encrypt(b"x" * (2 * age.CHUNK_SIZE), [X.recipient()])
    header, offset = age.parse_header(ct)
    assert len(ct) - offset == age.NONCE_SIZE + 2 * age.ENC_CHUNK_SIZE  # full final chunk, no empty one
    assert len(age.encrypt(b"", [X.recipient()])) - age.parse_header(age.encrypt(b"", [X.recipient()]))[1] == 32


def test_several_recipients_and_identities():
    other = ar.X25519Identity.generate()
    ct = age.encrypt(b"team", [X.recipient(), PQ.recipient()])
    assert age.decrypt(ct, [other, PQ]) == b"team"
    assert age.decrypt(ct, [X]) == b"team"
    header, _ = age.parse_header(ct)
    assert [s.type for s in header.stanzas] == ["X25519", "mlkem768x25519"]


def test_no_matching_identity_is_an_unlock_error():
    ct = age.encrypt(b"x", [X.recipient()])
    with pytest.raises(age.NoIdentityError) as info:
        age.decrypt(ct, [ar.X25519Identity.generate(), ar.HybridIdentity.generate()])
    assert isinstance(info.value, UnlockError) and info.value.exit_code == 4
    with pytest.raises(UnlockError):
        age.decrypt(ct, [])


def test_every_flipped_byte_fails_cleanly():
    ct = age.encrypt(b"hello age", [X.recipient()])
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x04
        with pytest.raises((IntegrityError, UnlockError)):
            age.decrypt(bytes(bad), [X])


def test_truncations_fail_cleanly():
    ct = age.encrypt(b"y" * 70_000, [PQ.recipient()])
    for n in list(range(0, len(ct), 997)) + [len(ct) - 1]:
        with pytest.raises(KmsError):
            age.decrypt(ct[:n], [PQ])
    with pytest.raises(age.PayloadError):
        age.decrypt(ct + b"\x00", [PQ])


def test_stanza_encoding_round_trip_at_column_boundaries():
    for n in (0, 1, 47, 48, 49, 96, 200):
        s = age.Stanza("example.com/x", ("a", "b!~"), bytes(range(n % 256)) * (n // 256) + bytes(n % 256))
        raw = age.encode_header([s], b"k" * 16)
        header, offset = age.parse_header(raw)
        assert header.stanzas == (s,) and offset == len(raw)
        assert age.header_mac(b"k" * 16, header.mac_input) == header.mac


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("text", [
    "", "age1", "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwx",
    "AGE1ZVKYG2LQZRAA2LNJVQEJ32NKUU0UES2S82HZRYE869XEEXVN73EQUNUJWJ", "age1pq1qqqq",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-ed25519", "ssh-ed25519 !!!",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhDjdC2h8FsBYHFuourZ1r4k4s39oiakTunqTcdt1e",
    "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "\ufeffage1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",
])
def test_malformed_recipients_are_usage_errors(text):
    with pytest.raises(UsageError) as info:
        ar.parse_recipient(text)
    assert info.value.exit_code == 2 and "age1" in info.value.hint


def test_identity_files():
    text = f"# created: now\n# public key: {X.recipient().text}\n{X.text}\n\n{PQ.text}\n"
    ids = ar.parse_identities(text)
    assert [i.text for i in ids] == [X.text, PQ.text]
    with pytest.raises(UsageError, match="line 3"):
        ar.parse_identities("# c\n\nAGE-SECRET-KEY-1NOPE\n")
    for bad in ["", "# only a comment\n", X.text.lower(), X.text[:-3], b"\xff\xfe", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"]:
        with pytest.raises(UsageError):
            ar.parse_identities(bad)
    assert "AGE-SECRET" not in repr(X) and "AGE-SECRET" not in repr(PQ)


def test_ed25519_to_x25519_matches_the_scalar_side():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    for _ in range(20):
        key = Ed25519PrivateKey.generate()
        seed, pub = key.private_bytes_raw(), key.public_key().public_bytes_raw()
        h = hashes.Hash(hashes.SHA512())
        h.update(seed)
        u = X25519PrivateKey.from_private_bytes(h.finalize()[:32]).public_key().public_bytes_raw()
        assert ar.ed25519_to_x25519(pub) == u
    with pytest.raises(ValueError):
        ar.ed25519_to_x25519((1).to_bytes(32, "little"))  # the identity point
    with pytest.raises(ValueError):
        ar.ed25519_to_x25519((2).to_bytes(32, "little"))  # y = 2 is not on the curve
    with pytest.raises(ValueError):
        ar.ed25519_to_x25519(b"\x00" * 31)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_header_parser_any_bytes_give_a_header_or_a_header_error(data):
    for candidate in (data, age.VERSION_LINE + data, age.VERSION_LINE + b"-> " + data):
        try:
            header, offset = age.parse_header(candidate)
        except age.HeaderError as e:
            assert e.exit_code == 5
            continue
        assert header.stanzas and offset <= len(candidate)


VALID = age.encrypt(b"fuzz me", [X.recipient(), PQ.recipient()])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, len(VALID) - 1), st.binary(min_size=0, max_size=8), st.integers(0, 8))
def test_mutated_files_decrypt_or_fail_with_one_clean_error(pos, insert, cut):
    data = VALID[:pos] + insert + VALID[pos + cut:]
    try:
        out = age.decrypt(data, [X])
    except (IntegrityError, UnlockError):
        return
    assert out == b"fuzz me"


# ---------------------------------------------------------------- HPKE

def _crypto_hpke(seed: bytes):
    hp = pytest.importorskip("cryptography.hazmat.primitives.hpke")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    h = hashes.Hash(hashes.SHAKE256(96))
    h.update(seed)
    ex = h.finalize()
    mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(ex[:64])
    xk = x25519.X25519PrivateKey.from_private_bytes(ex[64:])
    suite = hp.Suite(hp.KEM.MLKEM768_X25519, hp.KDF.HKDF_SHA256, hp.AEAD.CHACHA20_POLY1305)
    return (suite, hp.MLKEM768X25519PrivateKey(mk, xk),
            hp.MLKEM768X25519PublicKey(mk.public_key(), xk.public_key()))


def test_hpke_recipe_agrees_with_cryptography_both_ways():
    seed = bytes(range(32))
    suite, priv, pub = _crypto_hpke(seed)
    from kms_cli.crypto import keygen

    public = keygen.public_key("x25519-ml-kem-768", seed)
    ct = suite.encrypt(b"file key 16 byte", pub, info=ar.HYBRID_INFO)
    assert hpke.open_base(seed, ct[:hpke.ENC_SIZE], ar.HYBRID_INFO, b"", ct[hpke.ENC_SIZE:]) == b"file key 16 byte"
    enc, c = hpke.seal_base(public, ar.HYBRID_INFO, b"", b"the other way")
    assert suite.decrypt(enc + c, priv, info=ar.HYBRID_INFO) == b"the other way"
    with pytest.raises(IntegrityError):
        hpke.open_base(seed, enc, b"other info", b"", c)


# ---------------------------------------------------------------- ssh-ed25519 and the age binary

needs_age = pytest.mark.skipif(not (shutil.which("age") and shutil.which("age-keygen")),
                               reason="the age and age-keygen binaries are not installed")
needs_ssh_keygen = pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen is not installed")


def _ssh_key(tmp_path, passphrase=""):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "me@host", "-f", str(path)],
                   check=True)
    return path


@needs_ssh_keygen
def test_ssh_ed25519_round_trip_and_tag(tmp_path):
    key = _ssh_key(tmp_path)
    rcpt = ar.parse_recipient(key.with_suffix(".pub").read_text())
    assert rcpt.text == key.with_suffix(".pub").read_text().strip()
    (ident,) = ar.parse_identities(key.read_bytes())
    ct = age.encrypt(b"ssh data", [X.recipient(), rcpt])
    assert age.decrypt(ct, [ident]) == b"ssh data"
    (tmp_path / "o").mkdir()
    other = ar.parse_identities(_ssh_key(tmp_path / "o").read_bytes())
    with pytest.raises(age.NoIdentityError):
        age.decrypt(ct, other)


@needs_ssh_keygen
def test_ssh_passphrase_protected_identity(tmp_path):
    pytest.importorskip("bcrypt")
    key = _ssh_key(tmp_path, "correct horse")
    with pytest.raises(UsageError, match="passphrase-protected"):
        ar.parse_identities(key.read_bytes())
    with pytest.raises(UnlockError):
        ar.parse_identities(key.read_bytes(), b"wrong")
    (ident,) = ar.parse_identities(key.read_bytes(), b"correct horse")
    rcpt = ar.parse_recipient(key.with_suffix(".pub").read_text())
    assert age.decrypt(age.encrypt(b"p", [rcpt]), [ident]) == b"p"


@needs_ssh_keygen
def test_ssh_rsa_identity_is_refused(tmp_path):
    path = tmp_path / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)], check=True)
    with pytest.raises(UsageError, match="only ed25519"):
        ar.parse_identities(path.read_bytes())
    with pytest.raises(UsageError):
        ar.parse_recipient(path.with_suffix(".pub").read_text())


@needs_age
def test_interop_x25519_with_the_age_binary(tmp_path):
    ident_file = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(ident_file)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(ident_file)], check=True, capture_output=True,
                            text=True).stdout.strip()
    data = b"interop " * 20_000
    theirs = subprocess.run(["age", "-r", public], input=data, check=True, capture_output=True).stdout
    assert age.decrypt(theirs, ar.parse_identities(ident_file.read_text())) == data
    ours = age.encrypt(data, [ar.parse_recipient(public)])
    out = subprocess.run(["age", "-d", "-i", str(ident_file)], input=ours, check=True, capture_output=True).stdout
    assert out == data
    # an identity we generate, used by age
    ours_id = tmp_path / "ours.txt"
    ours_id.write_text(f"# public key: {X.recipient().text}\n{X.text}\n")
    theirs = subprocess.run(["age", "-r", X.recipient().text], input=b"back", check=True,
                            capture_output=True).stdout
    assert age.decrypt(theirs, [X]) == b"back"
    out = subprocess.run(["age", "-d", "-i", str(ours_id)], input=age.encrypt(b"fwd", [X.recipient()]),
                         check=True, capture_output=True).stdout
    assert out == b"fwd"


@needs_age
@needs_ssh_keygen
def test_interop_ssh_ed25519_with_the_age_binary(tmp_path):
    key = _ssh_key(tmp_path)
    pub = key.with_suffix(".pub")
    theirs = subprocess.run(["age", "-R", str(pub)], input=b"ssh interop", check=True, capture_output=True).stdout
    assert age.decrypt(theirs, ar.parse_identities(key.read_bytes())) == b"ssh interop"
    ours = age.encrypt(b"ssh back", [ar.parse_recipient(pub.read_text())])
    out = subprocess.run(["age", "-d", "-i", str(key)], input=ours, check=True, capture_output=True).stdout
    assert out == b"ssh back"
