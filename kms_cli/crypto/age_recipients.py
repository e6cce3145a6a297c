"""age recipient and identity types: X25519, ssh-ed25519 and the hybrid `mlkem768x25519`.

Each recipient has `wrap(file_key) -> [Stanza]` and `text` (its one-line encoding); each identity
has `unwrap(stanzas) -> file_key | None` (None: no stanza is for it; a malformed stanza of its
type raises age.HeaderError) and `recipient()`. `parse_recipient(text)` and
`parse_identities(text)` read the textual forms; both raise UsageError (exit 2) for anything
malformed, naming the accepted forms.

X25519 (c2sp.org/age): `age1...` / `AGE-SECRET-KEY-1...` (bech32), stanza
`-> X25519 <share>`; wrap key HKDF-SHA-256(X25519(e, R), salt = share || R,
"age-encryption.org/v1/X25519"); body ChaCha20-Poly1305(zero nonce, file key).

mlkem768x25519: `age1pq1...` (the 1216-byte X-Wing public key) / `AGE-SECRET-KEY-PQ-1...` (the
32-byte seed); stanza `-> mlkem768x25519 <enc>`, body = HPKE SealBase (hpke.py) of the file key
with info "age-encryption.org/mlkem768x25519", empty aad.

ssh-ed25519 (age's agessh, the format age and rage share):
    tag       = SHA-256(ssh wire public key)[:4]        stanza: -> ssh-ed25519 <tag> <share>
    R         = the Ed25519 public key as a Montgomery u-coordinate (`ed25519_to_x25519`)
    tweak     = HKDF-SHA-256(ikm = "", salt = ssh wire public key, info = LABEL)
    shared    = X25519(tweak, X25519(e, R))             (the identity: X25519(tweak, X25519(s, share)))
    wrap key  = HKDF-SHA-256(shared, salt = share || R, info = LABEL)
    LABEL     = "age-encryption.org/v1/ssh-ed25519";   s = SHA-512(Ed25519 seed)[:32]
OpenSSH keys are read with `cryptography`'s loaders (public lines, and `-----BEGIN OPENSSH
PRIVATE KEY-----` files; passphrase-protected ones need the `bcrypt` package, which
`cryptography` uses for their KDF).

Ed25519 -> X25519: neither `cryptography` nor pyrage exposes the conversion of an Ed25519
public key, so `ed25519_to_x25519` is the birational map of RFC 7748 section 4.1,
u = (1 + y) / (1 - y) mod 2^255 - 19, as a documented recipe in integer arithmetic only (no
scalar multiplication, no secret input: it maps public keys). It first checks that the encoding
is a point on the curve (x^2 = (y^2 - 1) / (d y^2 + 1) must be a square), as age's
edwards25519.Point.SetBytes does (which, like it, reduces a non-canonical y modulo p). The
private side needs no map: the X25519 scalar is SHA-512(seed)[:32], as Ed25519 itself derives it.
"""

from __future__ import annotations

from kms_cli.crypto import age, bech32
from kms_cli.crypto.age import Stanza
from kms_cli.errors import IntegrityError, UsageError

X25519_LABEL = b"age-encryption.org/v1/X25519"
HYBRID_INFO = b"age-encryption.org/mlkem768x25519"
SSH_LABEL = b"age-encryption.org/v1/ssh-ed25519"
ACCEPTED = "accepted recipients: age1... (X25519), age1pq1... (mlkem768x25519), ssh-ed25519 AAAA..."
ACCEPTED_IDENTITIES = ("accepted identities: AGE-SECRET-KEY-1..., AGE-SECRET-KEY-PQ-1..., "
                       "an unencrypted or passphrase-protected OpenSSH ed25519 private key")
_ZERO_NONCE = b"\x00" * 12


def _bad_recipient(what: str = "invalid recipient") -> UsageError:
    return UsageError(what, hint=ACCEPTED)


def _bad_identity(what: str = "invalid identity") -> UsageError:
    return UsageError(what, hint=ACCEPTED_IDENTITIES)


def _x25519_public(private: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(bytes(private)).public_key().public_bytes_raw()


def _x25519(private: bytes, public: bytes) -> bytes | None:
    """X25519, or None for the all-zero result (a low-order share) age requires to refuse."""
    from kms_cli.crypto import kem

    try:
        return kem.x25519(private, public)
    except IntegrityError:
        return None


def _aead_seal(key: bytes, file_key: bytes) -> bytes:
    from kms_cli.crypto.primitives import ChaCha20Poly1305

    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, bytes(file_key), None)


def _aead_open(key: bytes, body: bytes) -> bytes | None:
    from cryptography.exceptions import InvalidTag

    from kms_cli.crypto.primitives import ChaCha20Poly1305

    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, bytes(body), None)
    except InvalidTag:
        return None


def _check_body(stanza: Stanza, kind: str) -> None:
    # checked before any decryption: partitioning oracles (c2sp.org/age)
    if len(stanza.body) != age.FILE_KEY_SIZE + 16:
        raise age.HeaderError(f"invalid age header: {kind} stanza body is not 32 bytes")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from kms_cli.crypto.primitives import hkdf_sha256

    return hkdf_sha256(bytes(ikm), salt=bytes(salt), info=info)


# ---------------------------------------------------------------- X25519

class X25519Recipient:
    type = "X25519"

    def __init__(self, public: bytes):
        if len(public) != 32:
            raise _bad_recipient()
        self.public = bytes(public)

    @property
    def text(self) -> str:
        return bech32.encode("age", self.public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        from kms_cli.crypto.primitives import random_bytes

        eph = random_bytes(32)
        share = _x25519_public(eph)
        shared = _x25519(eph, self.public)
        if shared is None:
            raise _bad_recipient("invalid X25519 recipient: low-order point")
        key = _hkdf(shared, share + self.public, X25519_LABEL)
        return [Stanza("X25519", (age.b64encode(share),), _aead_seal(key, file_key))]

    def __repr__(self) -> str:
        return f"X25519Recipient({self.text})"


class X25519Identity:
    type = "X25519"

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise _bad_identity()
        self._secret = bytes(secret)
        self._public = _x25519_public(self._secret)

    @classmethod
    def generate(cls) -> "X25519Identity":
        from kms_cli.crypto.primitives import random_bytes

        return cls(random_bytes(32))

    @property
    def text(self) -> str:
        return bech32.encode("AGE-SECRET-KEY-", self._secret, upper=True)

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap(self, stanzas) -> bytes | None:
        for s in stanzas:
            if s.type != "X25519":
                continue
            if len(s.args) != 1:
                raise age.HeaderError("invalid age header: X25519 stanza needs one argument")
            share = age.b64decode(s.args[0], what="X25519 share")
            if len(share) != 32:
                raise age.HeaderError("invalid age header: X25519 share is not 32 bytes")
            _check_body(s, "X25519")
            shared = _x25519(self._secret, share)
            if shared is None:
                raise age.HeaderError("invalid age header: X25519 share is a low-order point")
            file_key = _aead_open(_hkdf(shared, share + self._public, X25519_LABEL), s.body)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient().text})"


# ---------------------------------------------------------------- mlkem768x25519 (X-Wing via HPKE)

class HybridRecipient:
    type = "mlkem768x25519"

    def __init__(self, public: bytes):
        from kms_cli.crypto import hpke, kem

        if len(public) != hpke.PUBLIC_SIZE:
            raise _bad_recipient()
        try:
            kem.public_key_object(_xwing(), bytes(public))
        except IntegrityError:
            raise _bad_recipient() from None
        self.public = bytes(public)

    @property
    def text(self) -> str:
        return bech32.encode("age1pq", self.public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        from kms_cli.crypto import hpke

        try:
            enc, ct = hpke.seal_base(self.public, HYBRID_INFO, b"", file_key)
        except IntegrityError:
            raise _bad_recipient("invalid mlkem768x25519 recipient") from None
        return [Stanza("mlkem768x25519", (age.b64encode(enc),), ct)]

    def __repr__(self) -> str:
        return f"HybridRecipient({self.text[:20]}...)"


def _xwing():
    from kms_cli.crypto import asym

    return asym.algorithm("x25519-ml-kem-768")


class HybridIdentity:
    type = "mlkem768x25519"

    def __init__(self, seed: bytes):
        from kms_cli.crypto import kem

        if len(seed) != 32:
            raise _bad_identity()
        self._seed = bytes(seed)
        self._public = kem.public_from_private(_xwing(), self._seed)

    @classmethod
    def generate(cls) -> "HybridIdentity":
        from kms_cli.crypto.primitives import random_bytes

        return cls(random_bytes(32))

    @property
    def text(self) -> str:
        return bech32.encode("AGE-SECRET-KEY-PQ-", self._seed, upper=True)

    def recipient(self) -> HybridRecipient:
        return HybridRecipient(self._public)

    def unwrap(self, stanzas) -> bytes | None:
        from kms_cli.crypto import hpke

        for s in stanzas:
            if s.type != "mlkem768x25519":
                continue
            if len(s.args) != 1:
                raise age.HeaderError("invalid age header: mlkem768x25519 stanza needs one argument")
            enc = age.b64decode(s.args[0], what="mlkem768x25519 enc")
            if len(enc) != hpke.ENC_SIZE:
                raise age.HeaderError("invalid age header: mlkem768x25519 enc is not 1120 bytes")
            _check_body(s, "mlkem768x25519")
            try:
                return hpke.open_base(self._seed, enc, HYBRID_INFO, b"", s.body)
            except IntegrityError as e:
                if str(e) != "hpke open failed":
                    # the X25519 half of enc is low-order: an all-zero shared secret
                    raise age.HeaderError("invalid age header: mlkem768x25519 enc is invalid") from None
        return None

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={self.recipient().text[:20]}...)"


# ---------------------------------------------------------------- ssh-ed25519

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def ed25519_to_x25519(public: bytes) -> bytes:
    """The Montgomery u-coordinate (X25519 public key) of an Ed25519 public key (see the module
    docstring). Raises ValueError for an encoding that is not a curve point or maps to no u."""
    if len(public) != 32:
        raise ValueError("ed25519 public key is not 32 bytes")
    n = int.from_bytes(public, "little")
    y, sign = (n & ((1 << 255) - 1)) % _P, n >> 255
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, _P - 2, _P) % _P
    if x2 and pow(x2, (_P - 1) // 2, _P) != 1:
        raise ValueError("ed25519 public key is not a curve point")
    if x2 == 0 and sign:
        raise ValueError("ed25519 public key is not a canonical point")
    if y == 1:
        raise ValueError("ed25519 public key is the identity point")
    u = (1 + y) * pow((1 - y) % _P, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def _ssh_wire(public: bytes) -> bytes:
    return b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(public)


def _sha256(data: bytes) -> bytes:
    from kms_cli.crypto.primitives import sha256

    return sha256(data)


class SSHEd25519Recipient:
    type = "ssh-ed25519"

    def __init__(self, public: bytes, comment: str = ""):
        if len(public) != 32:
            raise _bad_recipient()
        try:
            self._x = ed25519_to_x25519(public)
        except ValueError:
            raise _bad_recipient("invalid ssh-ed25519 recipient") from None
        self.public = bytes(public)
        self.comment = comment

    @property
    def text(self) -> str:
        return "ssh-ed25519 " + age.b64encode_padded(_ssh_wire(self.public)) + (
            " " + self.comment if self.comment else "")

    def wrap(self, file_key: bytes) -> list[Stanza]:
        from kms_cli.crypto.primitives import random_bytes

        wire = _ssh_wire(self.public)
        eph = random_bytes(32)
        share = _x25519_public(eph)
        shared = _x25519(eph, self._x)
        tweak = _hkdf(b"", wire, SSH_LABEL)
        shared = shared and _x25519(tweak, shared)
        if shared is None:
            raise _bad_recipient("invalid ssh-ed25519 recipient: low-order point")
        key = _hkdf(shared, share + self._x, SSH_LABEL)
        tag = age.b64encode(_sha256(wire)[:4])
        return [Stanza("ssh-ed25519", (tag, age.b64encode(share)), _aead_seal(key, file_key))]

    def __repr__(self) -> str:
        return f"SSHEd25519Recipient({self.text})"


class SSHEd25519Identity:
    type = "ssh-ed25519"

    def __init__(self, seed: bytes, public: bytes):
        from cryptography.hazmat.primitives import hashes

        if len(seed) != 32 or len(public) != 32:
            raise _bad_identity()
        h = hashes.Hash(hashes.SHA512())
        h.update(bytes(seed))
        self._scalar = h.finalize()[:32]
        self._recipient = SSHEd25519Recipient(public)
        self._wire = _ssh_wire(public)
        self._tag = age.b64encode(_sha256(self._wire)[:4])

    def recipient(self) -> SSHEd25519Recipient:
        return self._recipient

    def unwrap(self, stanzas) -> bytes | None:
        for s in stanzas:
            if s.type != "ssh-ed25519":
                continue
            if len(s.args) != 2:
                raise age.HeaderError("invalid age header: ssh-ed25519 stanza needs two arguments")
            if s.args[0] != self._tag:  # addressed to another key (age compares the tag first)
                continue
            share = age.b64decode(s.args[1], what="ssh-ed25519 share")
            if len(share) != 32:
                raise age.HeaderError("invalid age header: ssh-ed25519 share is not 32 bytes")
            _check_body(s, "ssh-ed25519")
            shared = _x25519(self._scalar, share)
            shared = shared and _x25519(_hkdf(b"", self._wire, SSH_LABEL), shared)
            if shared is None:
                raise age.HeaderError("invalid age header: ssh-ed25519 share is a low-order point")
            x = self._recipient._x
            file_key = _aead_open(_hkdf(shared, share + x, SSH_LABEL), s.body)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:
        return "SSHEd25519Identity(***)"


def _ssh_public_from_line(line: str) -> SSHEd25519Recipient:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

    parts = line.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise _bad_recipient()
    try:
        key = load_ssh_public_key(" ".join(parts[:2]).encode("ascii"))
    except (ValueError, UnicodeError, TypeError):
        raise _bad_recipient("invalid ssh-ed25519 recipient") from None
    except Exception:  # noqa: BLE001 - cryptography's UnsupportedAlgorithm and kin
        raise _bad_recipient("invalid ssh-ed25519 recipient") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _bad_recipient()
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SSHEd25519Recipient(raw, " ".join(parts[2:]))


def parse_ssh_private_key(data: bytes, passphrase: bytes | None = None) -> SSHEd25519Identity:
    """An OpenSSH (or PKCS#8 PEM) Ed25519 private key.

    Raises:
        UsageError: not an Ed25519 private key, or malformed; a passphrase-protected key
            without `passphrase` ("identity is passphrase-protected", so a caller may prompt).
        UnlockError: a wrong passphrase.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                              PublicFormat, load_ssh_private_key)

    from kms_cli.errors import UnlockError

    data = bytes(data)
    try:
        key = load_ssh_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise UsageError("identity is passphrase-protected",
                             hint="give its passphrase (KMS_CLI_IDENTITY_PASSPHRASE)") from None
        raise _bad_identity("invalid ssh identity") from None
    except ValueError:
        if passphrase is not None:
            raise UnlockError("wrong passphrase for the ssh identity") from None
        raise _bad_identity("invalid ssh identity") from None
    except Exception as e:  # noqa: BLE001 - UnsupportedAlgorithm: bcrypt missing, other ciphers
        if "bcrypt" in str(e):
            raise UsageError("passphrase-protected ssh identities need the bcrypt package",
                             hint="pip install 'kms-cli[ssh]'") from None
        raise _bad_identity("unsupported ssh identity") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _bad_identity("unsupported ssh identity: only ed25519 keys are accepted")
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SSHEd25519Identity(seed, public)


# ---------------------------------------------------------------- text forms

def parse_recipient(text: str):
    """One recipient line: `age1...`, `age1pq1...` or `ssh-ed25519 AAAA... [comment]`.

    Raises:
        UsageError: anything else, with the accepted forms in the hint.
    """
    if not isinstance(text, str):
        raise _bad_recipient()
    text = text.strip()
    if text.startswith("ssh-"):
        return _ssh_public_from_line(text)
    try:
        hrp, data = bech32.decode(text)
    except ValueError:
        raise _bad_recipient() from None
    if text != text.lower():
        raise _bad_recipient()
    if hrp == "age":
        return X25519Recipient(data)
    if hrp == "age1pq":
        return HybridRecipient(data)
    raise _bad_recipient()


def parse_identity(text: str):
    """One native identity line: `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...`."""
    if not isinstance(text, str):
        raise _bad_identity()
    try:
        hrp, data = bech32.decode(text.strip())
    except ValueError:
        raise _bad_identity() from None
    if text.strip() != text.strip().upper():
        raise _bad_identity()
    if hrp == "age-secret-key-":
        return X25519Identity(data)
    if hrp == "age-secret-key-pq-":
        return HybridIdentity(data)
    raise _bad_identity()


def parse_identities(data: bytes | str, passphrase: bytes | None = None) -> list:
    """The identities of an identity file: an OpenSSH/PEM private key, or age identity lines
    (several per file; `#` comments and blank lines skipped).

    Raises:
        UsageError: a malformed line (named by number), an empty file, or an unusable ssh key.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if data.lstrip().startswith(b"-----BEGIN"):
        return [parse_ssh_private_key(data, passphrase)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_identity("invalid identity file: not utf-8 text") from None
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(parse_identity(line))
        except UsageError:
            raise _bad_identity(f"invalid identity on line {number}") from None
    if not out:
        raise _bad_identity("no identity in the identity file")
    return out
