"""The age v1 file format (c2sp.org/age): header, header MAC, STREAM payload; encrypt/decrypt.

Recipient and identity types live in `age_recipients.py` (X25519, ssh-ed25519, the
post-quantum `mlkem768x25519`); this module knows only stanzas and calls, duck-typed,
`recipient.wrap(file_key) -> [Stanza]` and `identity.unwrap(stanzas) -> file_key | None`.

Why our own layer and not pyrage (the bindings of rage) for X25519/SSH
-----------------------------------------------------------------------
pyrage 1.4 installs here (abi3 wheel) and encrypts/decrypts whole files to X25519 and SSH keys,
but: it has no `mlkem768x25519` (so the hybrid needs our header and STREAM anyway); it exposes no
header, stanza or file-key API (a decrypt is all-or-nothing over the whole file, so it cannot
serve one stanza type inside our header); its errors are strings we would have to classify to
keep exit codes 4/5 apart; and the issue requires that every testkit vector for X25519, SSH,
hybrid, header parsing and STREAM pass through the project's own layer. Using pyrage for two
stanza types would mean two age implementations in the tree, one of them unreachable from the
vectors. So the whole format is ours, as recipes over `cryptography` (HKDF-SHA-256,
HMAC-SHA-256, ChaCha20-Poly1305, X25519, the OpenSSH key loaders) and the project's X-Wing; the
interop tests check it against the Debian `age` binary instead. pyrage is not a dependency.

Header (parsed from a byte stream, strictly as the spec's ABNF):

    age-encryption.org/v1 LF
    ( "-> " arg *(" " arg) LF  *(64 base64 chars LF)  (0-63 base64 chars) LF )+
    "--- " 43 base64 chars LF

Arguments are 1*VCHAR; bodies and the MAC are canonical unpadded base64. The MAC is
HMAC-SHA-256(HKDF-SHA-256(file key, salt="", info="header"), header up to and including "---").

Payload: a 16-byte nonce, then ChaCha20-Poly1305 chunks of 64 KiB plaintext under
HKDF-SHA-256(file key, salt=nonce, info="payload"), nonce = 11-byte big-endian counter || flag
(0x01 on the last chunk). Decryption follows age's reference reader: a short chunk is the last; a
full chunk that fails as a middle chunk is tried as a final one (a full final chunk is legal);
after the final chunk no byte may follow; a final chunk may be empty only when it is the first
(an empty payload); end of input without a final chunk fails.

Errors (all kms_cli errors, never a traceback):
- `HeaderError` (IntegrityError, exit 5): malformed header, unknown version, a malformed stanza
  of a known type, a missing or short payload nonce, an scrypt stanza mixed with others.
- `MacError` (IntegrityError, exit 5): the header MAC does not match.
- `PayloadError` (IntegrityError, exit 5): a payload chunk fails, is truncated, trails data.
- `NoIdentityError` (UnlockError, exit 4): no identity opened any stanza.
"""

from __future__ import annotations

import collections
import io

from kms_cli.errors import IntegrityError, UnlockError

VERSION_LINE = b"age-encryption.org/v1\n"
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
COLUMNS = 64
MAX_LINE = 64 * 1024  # a header line longer than this is refused (the hybrid arg line is ~1520)
MAX_HEADER = 16 * 1024 * 1024
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")

Stanza = collections.namedtuple("Stanza", "type args body")
Stanza.__doc__ = "One recipient stanza: type (first argument), the other arguments, the body bytes."
Header = collections.namedtuple("Header", "stanzas mac mac_input")


class HeaderError(IntegrityError):
    """A malformed age header (or a malformed stanza of a type we know)."""


class MacError(IntegrityError):
    """The age header's MAC does not match the file key found."""


class PayloadError(IntegrityError):
    """The age payload failed to authenticate, is truncated or has trailing data."""


class NoIdentityError(UnlockError):
    """No identity given opens any stanza of the file."""


def _header_error(what: str) -> HeaderError:
    return HeaderError(f"invalid age header: {what}")


def b64decode(text: bytes | str, *, what: str = "base64") -> bytes:
    """Canonical unpadded standard base64 (RFC 4648 section 3.5), or a HeaderError."""
    import base64
    import binascii

    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not _B64.issuperset(raw) or len(raw) % 4 == 1:
        raise _header_error(f"non-canonical {what}")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _header_error(f"non-canonical {what}") from None
    if b64encode(data).encode("ascii") != raw:
        raise _header_error(f"non-canonical {what}")
    return data


def b64encode(data: bytes) -> str:
    import binascii

    return binascii.b2a_base64(bytes(data), newline=False).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------- header

def _readline(reader, total: list[int]) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    total[0] += len(line)
    if not line.endswith(b"\n"):
        raise _header_error("unexpected end of header" if len(line) <= MAX_LINE else "line too long")
    if total[0] > MAX_HEADER:
        raise _header_error("header too long")
    return line


def read_header(reader) -> Header:
    """Parse the header from `reader` (a binary stream with `readline(limit)`), leaving the
    stream at the first payload byte.

    Raises:
        HeaderError: anything but a well-formed v1 header.
    """
    total = [0]
    if _readline(reader, total) != VERSION_LINE:
        raise _header_error("unsupported version")
    raw = bytearray(VERSION_LINE)
    stanzas: list[Stanza] = []
    line = _readline(reader, total)
    while line.startswith(b"-> "):
        raw += line
        args = line[3:-1].split(b" ")
        if any(not a or any(c < 0x21 or c > 0x7E for c in a) for a in args):
            raise _header_error("invalid stanza arguments")
        body = bytearray()
        while True:
            bl = _readline(reader, total)
            raw += bl
            content = bl[:-1]
            if len(content) > COLUMNS:
                raise _header_error("stanza body line too long")
            if not _B64.issuperset(content):
                raise _header_error("invalid stanza body")
            body += content
            if len(content) < COLUMNS:
                break
        names = [a.decode("ascii") for a in args]
        stanzas.append(Stanza(names[0], tuple(names[1:]), b64decode(bytes(body), what="stanza body")))
        line = _readline(reader, total)
    if not stanzas:
        raise _header_error("no recipient stanza")
    if not line.startswith(b"--- ") or len(line) != 4 + 43 + 1:
        raise _header_error("invalid mac line")
    mac = b64decode(line[4:-1], what="mac")
    raw += b"---"
    return Header(tuple(stanzas), mac, bytes(raw))


def parse_header(data: bytes) -> tuple[Header, int]:
    """(header, offset of the payload) of an age file in memory."""
    reader = io.BytesIO(bytes(data))
    header = read_header(reader)
    return header, reader.tell()


def encode_stanza(stanza: Stanza) -> bytes:
    """The stanza's header lines (arguments must be 1*VCHAR; checked)."""
    args = (stanza.type, *stanza.args)
    for a in args:
        if not a or any(not 0x21 <= ord(c) <= 0x7E for c in a):
            raise ValueError("invalid stanza argument")
    body = b64encode(stanza.body)
    lines = [body[i:i + COLUMNS] for i in range(0, len(body), COLUMNS)]
    if not lines or len(lines[-1]) == COLUMNS:
        lines.append("")
    return ("-> " + " ".join(args) + "\n" + "".join(ln + "\n" for ln in lines)).encode("ascii")


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    from kms_cli.crypto.primitives import hkdf_sha256, hmac_sha256

    return hmac_sha256(hkdf_sha256(bytes(file_key), salt=b"", info=b"header"), mac_input)


def encode_header(stanzas, file_key: bytes) -> bytes:
    """The whole header, MAC line included, of `stanzas` under `file_key`."""
    stanzas = list(stanzas)
    if not stanzas:
        raise ValueError("an age header needs at least one stanza")
    mac_input = VERSION_LINE + b"".join(encode_stanza(s) for s in stanzas) + b"---"
    return mac_input + b" " + b64encode(header_mac(file_key, mac_input)).encode("ascii") + b"\n"


def unwrap_file_key(header: Header, identities) -> bytes:
    """The file key of `header` opened by the first identity that can, MAC checked.

    Raises:
        HeaderError: a stanza of a known type is malformed, or scrypt is mixed with others.
        NoIdentityError: no identity opens a stanza.
        MacError: the MAC does not match the file key found.
    """
    from kms_cli.crypto.primitives import equal

    if any(s.type == "scrypt" for s in header.stanzas) and len(header.stanzas) != 1:
        raise _header_error("an scrypt stanza must be alone")
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            break
    else:
        raise NoIdentityError("no identity matches the age file")
    if not equal(header_mac(file_key, header.mac_input), header.mac):
        raise MacError("age header mac mismatch")
    return file_key


# ---------------------------------------------------------------- payload (STREAM)

def _payload_key(file_key: bytes, nonce: bytes) -> bytes:
    from kms_cli.crypto.primitives import hkdf_sha256

    return hkdf_sha256(bytes(file_key), salt=bytes(nonce), info=b"payload")


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_exact(reader, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = reader.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_payload_nonce(reader) -> bytes:
    nonce = _read_exact(reader, NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise _header_error("missing payload nonce")
    return nonce


def decrypt_chunks(reader, file_key: bytes, nonce: bytes):
    """Yield the plaintext chunks of the STREAM payload read from `reader` (after the nonce).

    A chunk is yielded only once authenticated; a PayloadError may follow chunks already
    yielded (a caller that must not release unauthenticated-as-a-whole data buffers them).
    """
    from cryptography.exceptions import InvalidTag

    from kms_cli.crypto.primitives import ChaCha20Poly1305

    aead = ChaCha20Poly1305(_payload_key(file_key, nonce))
    counter = 0
    chunk = _read_exact(reader, ENC_CHUNK_SIZE)
    if not chunk:
        raise PayloadError("age payload has no chunks")
    while True:
        last = len(chunk) < ENC_CHUNK_SIZE
        try:
            plain = aead.decrypt(_chunk_nonce(counter, last), chunk, None)
        except InvalidTag:
            if last:
                raise PayloadError("age payload chunk failed to authenticate") from None
            last = True
            try:
                plain = aead.decrypt(_chunk_nonce(counter, True), chunk, None)
            except InvalidTag:
                raise PayloadError("age payload chunk failed to authenticate") from None
        if last:
            if not plain and counter:
                raise PayloadError("age payload ends with an empty chunk")
            yield plain
            if reader.read(1):
                raise PayloadError("age payload has trailing data")
            return
        yield plain
        counter += 1
        chunk = _read_exact(reader, ENC_CHUNK_SIZE)
        if not chunk:
            raise PayloadError("age payload is truncated")


def encrypt_chunks(reader, file_key: bytes, nonce: bytes):
    """Yield the encrypted chunks of the plaintext read from `reader` (nonce not included)."""
    from kms_cli.crypto.primitives import ChaCha20Poly1305

    aead = ChaCha20Poly1305(_payload_key(file_key, nonce))
    counter = 0
    chunk = _read_exact(reader, CHUNK_SIZE)
    while True:
        following = _read_exact(reader, CHUNK_SIZE) if len(chunk) == CHUNK_SIZE else b""
        last = not following
        yield aead.encrypt(_chunk_nonce(counter, last), chunk, None)
        if last:
            return
        counter += 1
        chunk = following


# ---------------------------------------------------------------- files

def encrypt_stream(reader, writer, recipients) -> None:
    """Write to `writer` the age file of the plaintext read from `reader`, to every recipient.

    Raises:
        UsageError: no recipient, or recipients that must not be mixed (none so far).
    """
    from kms_cli.crypto.primitives import random_bytes
    from kms_cli.errors import UsageError

    recipients = list(recipients)
    if not recipients:
        raise UsageError("no age recipient given")
    file_key = random_bytes(FILE_KEY_SIZE)
    stanzas = [s for r in recipients for s in r.wrap(file_key)]
    writer.write(encode_header(stanzas, file_key))
    nonce = random_bytes(NONCE_SIZE)
    writer.write(nonce)
    for chunk in encrypt_chunks(reader, file_key, nonce):
        writer.write(chunk)


def decrypt_stream(reader, writer, identities) -> None:
    """Write to `writer` the plaintext of the age file read from `reader`.

    Chunks are written as they authenticate: on a PayloadError the writer may hold a prefix
    (write to a temporary file and discard it on error, or use `decrypt`).
    """
    header = read_header(reader)
    file_key = unwrap_file_key(header, identities)
    nonce = read_payload_nonce(reader)
    for chunk in decrypt_chunks(reader, file_key, nonce):
        writer.write(chunk)


def encrypt(plaintext: bytes, recipients) -> bytes:
    """The age file of `plaintext` to `recipients` (in memory)."""
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(bytes(plaintext)), out, recipients)
    return out.getvalue()


def decrypt(data: bytes, identities) -> bytes:
    """The plaintext of an age file in memory; nothing is returned unless all of it authenticates."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(bytes(data)), out, identities)
    return out.getvalue()


def b64encode_padded(data: bytes) -> str:
    """Standard base64 with padding (OpenSSH public key lines)."""
    import binascii

    return binascii.b2a_base64(bytes(data), newline=False).decode("ascii")
