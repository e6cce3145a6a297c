"""The C2SP CCTV age test vectors (tests/vectors/age-testkit/, 0BSD/CC0: see its README.md),
through the project's own age layer (kms_cli.crypto.age and age_recipients).

Each vector: `key: value` lines, an empty line, the age file (zlib-compressed when
`compressed: zlib`). Run: every vector about X25519, hybrid (`mlkem768x25519`) recipients,
header parsing, the header MAC and the STREAM payload, i.e. every vector that is not armored
and does not need a passphrase (`empty` has no identity at all: its header fails first). Checked: `success` decrypts to the SHA-256 `payload` and the
`file key`; `header failure` -> age.HeaderError, `HMAC failure` -> age.MacError,
`no match` -> age.NoIdentityError (an UnlockError, exit 4), `payload failure` -> age.PayloadError
after releasing exactly the plaintext whose hash the vector gives (chunks are released as they
authenticate, as age's reader does). All three failure classes are IntegrityErrors (exit 5).

Skipped, by name (SKIPPED below):
- the 33 `armor_*` vectors (`armored: yes`, or armor with a passphrase): ASCII armor is not part of this layer (slots store
  binary age files; the project's own armor is armor.py, a different format).
- the scrypt vectors with only a `passphrase:` (no identity): the scrypt passphrase recipient is
  not implemented (kms-cli's passphrase slots use Argon2id, not age's scrypt).
  `scrypt_and_x25519` (which also has an X25519 identity) does run: an scrypt stanza mixed with
  another must be a header failure, which the header layer enforces.
The testkit here has no ssh-ed25519 vectors; tests/unit/test_age.py covers ssh-ed25519 with keys
from `ssh-keygen` and the `age` binary.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import zlib

import pytest

from kms_cli.crypto import age, age_recipients
from kms_cli.errors import IntegrityError, KmsError, UnlockError

DIR = pathlib.Path(__file__).parent / "age-testkit"


def load(path: pathlib.Path):
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return meta, body


ALL = sorted(p.name for p in DIR.iterdir() if p.name != "README.md")
META = {name: load(DIR / name)[0] for name in ALL}
SKIPPED = sorted(n for n in ALL if "armored" in META[n]
                 or ("passphrase" in META[n] and "identity" not in META[n]))
RUN = [n for n in ALL if n not in SKIPPED]

EXPECTED = {
    "header failure": age.HeaderError,
    "HMAC failure": age.MacError,
    "no match": age.NoIdentityError,
    "payload failure": age.PayloadError,
}


def test_skip_list_is_exactly_armor_and_passphrase_only_scrypt():
    armor = [n for n in ALL if n.startswith("armor_")]
    scrypt_only = [n for n in ALL if n.startswith("scrypt") and n != "scrypt_and_x25519"]
    assert SKIPPED == sorted(armor + scrypt_only)
    assert len(armor) == 33 and len(RUN) == 86


@pytest.mark.parametrize("name", RUN)
def test_vector(name):
    meta, data = load(DIR / name)
    identities = [age_recipients.parse_identity(i) for i in meta.get("identity", [])]
    expect = meta["expect"][0]
    reader, out = io.BytesIO(data), io.BytesIO()
    if expect == "success":
        header = age.read_header(reader)
        assert age.unwrap_file_key(header, identities).hex() == meta["file key"][0]
        assert hashlib.sha256(age.decrypt(data, identities)).hexdigest() == meta["payload"][0]
        return
    with pytest.raises(KmsError) as info:
        age.decrypt_stream(reader, out, identities)
    assert type(info.value) is EXPECTED[expect], (name, repr(info.value))
    assert isinstance(info.value, UnlockError if expect == "no match" else IntegrityError)
    if "payload" in meta:
        assert hashlib.sha256(out.getvalue()).hexdigest() == meta["payload"][0]
    with pytest.raises(type(info.value)):  # the all-or-nothing form fails alike
        age.decrypt(data, identities)
