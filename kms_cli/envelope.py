"""The versioned ciphertext header of `encrypt`: build, parse and the bytes each part authenticates.

Layout (all integers big-endian):

    magic    7   b"kms-cli"
    format   1   0x01
    suite    1   payload construction: 1 = Cobblestone-256 (AES-256-GCM), 2 = age STREAM (ChaCha20-Poly1305)
    vault   16   vault id
    name     2+n key name (full name including its namespace, valid by names.validate; empty in
                 `encrypt --public-key` files)
    ext      2+n extensions (TLV: type u8, length u16, value); immutable
    ---------- the part above is immutable: it is bound into the payload's context
    version  4   key version that wrapped the data key
    wrap     2+n the data key wrapped by that version (AAD: every byte above, version included)

`rewrap` replaces only `version` and `wrap`, so the payload is copied unchanged.
The payload is authenticated under the data key with context = the immutable
part || the encoded `--context` pairs; altering any header byte fails.
"""

from __future__ import annotations

import struct

from kms_cli.errors import IntegrityError, UsageError
from kms_cli.names import validate

MAGIC = b"kms-cli"
FORMAT = 1
SUITE_COBBLESTONE = 1
SUITE_AGE_STREAM = 2
SUITES = (SUITE_COBBLESTONE, SUITE_AGE_STREAM)
MAX_NAME = 256
MAX_EXT = 4096
MAX_WRAP = 8192

EXT_KEY_FINGERPRINT = 1  # public-key encryption: SHA-256 fingerprint of the recipient's public key


class Header:
    __slots__ = ("suite", "vault_id", "name", "version", "wrap", "ext")

    def __init__(self, suite: int, vault_id: bytes, name: str, version: int, wrap: bytes = b"",
                 ext: dict[int, bytes] | None = None):
        self.suite = suite
        self.vault_id = vault_id
        self.name = name
        self.version = version
        self.wrap = wrap
        self.ext = {} if ext is None else ext

    def immutable(self) -> bytes:
        name = self.name.encode()
        ext = b"".join(struct.pack(">BH", t, len(v)) + v for t, v in sorted(self.ext.items()))
        return (
            MAGIC
            + bytes([FORMAT, self.suite])
            + self.vault_id
            + struct.pack(">H", len(name))
            + name
            + struct.pack(">H", len(ext))
            + ext
        )

    def wrap_aad(self) -> bytes:
        """What the wrapped data key is bound to: the immutable part and the key version."""
        return b"kms-cli/dek/v1\x00" + self.immutable() + struct.pack(">I", self.version)

    def to_bytes(self) -> bytes:
        if len(self.wrap) > MAX_WRAP:
            raise ValueError("wrapped key too long")
        return self.immutable() + struct.pack(">I", self.version) + struct.pack(">H", len(self.wrap)) + self.wrap


def encode_context(pairs: list[tuple[str, str]]) -> bytes:
    """Canonical bytes of the user's `--context K=V` pairs (sorted; a key may appear once)."""
    seen = set()
    out = [b"kms-cli/context/v1\x00"]
    for k, v in sorted(pairs):
        if k in seen:
            raise UsageError(f"context key {k!r} given twice")
        seen.add(k)
        kb, vb = k.encode(), v.encode()
        out.append(struct.pack(">H", len(kb)) + kb + struct.pack(">I", len(vb)) + vb)
    return b"".join(out)


def payload_context(header: Header, pairs: list[tuple[str, str]]) -> bytes:
    return header.immutable() + encode_context(pairs)


def _bad(what: str) -> IntegrityError:
    return IntegrityError(f"not a kms-cli ciphertext of this vault: {what}")


def read_exact(src, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = src.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def read_header(src) -> Header:
    """Parse a header from the start of `src`, leaving `src` at the payload."""
    head = read_exact(src, len(MAGIC) + 2)
    if len(head) == 0:
        raise _bad("the input is empty")
    if head[: len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 2:
        raise _bad("unrecognised format")
    if head[len(MAGIC)] != FORMAT:
        raise _bad(f"unsupported format version {head[len(MAGIC)]}")
    suite = head[len(MAGIC) + 1]
    if suite not in SUITES:
        raise _bad(f"unknown payload suite {suite}")
    vault_id = read_exact(src, 16)
    if len(vault_id) != 16:
        raise _bad("truncated header")

    def field_(width: str, limit: int, what: str) -> bytes:
        size = struct.calcsize(width)
        raw = read_exact(src, size)
        if len(raw) != size:
            raise _bad("truncated header")
        (n,) = struct.unpack(width, raw)
        if n > limit:
            raise _bad(f"{what} too long")
        data = read_exact(src, n)
        if len(data) != n:
            raise _bad("truncated header")
        return data

    try:
        name = field_(">H", MAX_NAME, "key name").decode()
    except UnicodeDecodeError:
        raise _bad("key name is not UTF-8") from None
    if name:  # empty only in `encrypt --public-key` files; else a name kms-cli could have given a key
        try:
            validate(name)
        except UsageError:
            raise _bad("invalid key name") from None
    ext_raw = field_(">H", MAX_EXT, "extensions")
    ext: dict[int, bytes] = {}
    i = 0
    while i < len(ext_raw):
        if i + 3 > len(ext_raw):
            raise _bad("malformed extensions")
        t, n = struct.unpack(">BH", ext_raw[i : i + 3])
        v = ext_raw[i + 3 : i + 3 + n]
        if len(v) != n or t in ext:
            raise _bad("malformed extensions")
        ext[t] = v
        i += 3 + n
    raw = read_exact(src, 4)
    if len(raw) != 4:
        raise _bad("truncated header")
    (version,) = struct.unpack(">I", raw)
    wrap = field_(">H", MAX_WRAP, "wrapped key")
    header = Header(suite=suite, vault_id=vault_id, name=name, version=version, wrap=wrap, ext=ext)
    if header.immutable()[len(MAGIC) + 2 + 16 :] != (
        struct.pack(">H", len(name.encode())) + name.encode() + struct.pack(">H", len(ext_raw)) + ext_raw
    ):
        raise _bad("non-canonical header")
    return header
