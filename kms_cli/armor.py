"""ASCII armor for ciphertexts: a PEM-like block of base64 lines, streamed in constant memory."""

from __future__ import annotations

import base64
import binascii
import io

from kms_cli.errors import IntegrityError

BEGIN = b"-----BEGIN KMS-CLI ENCRYPTED FILE-----"
END = b"-----END KMS-CLI ENCRYPTED FILE-----"
LINE = 64  # characters per base64 line
_BLOCK = 48 * 1024  # bytes of binary per write batch (a multiple of 48 = one 64-char line)


class ArmorWriter(io.RawIOBase):
    """A binary sink that base64-armors everything written to it into `dst`."""

    def __init__(self, dst):
        self.dst = dst
        self.buf = bytearray()
        self.dst.write(BEGIN + b"\n")

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        if len(self.buf) >= _BLOCK:
            n = len(self.buf) - len(self.buf) % 48
            self._emit(bytes(self.buf[:n]))
            del self.buf[:n]
        return len(b)

    def _emit(self, data: bytes) -> None:
        text = base64.b64encode(data)
        self.dst.write(b"".join(text[i : i + LINE] + b"\n" for i in range(0, len(text), LINE)))

    def finish(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()
        self.dst.write(END + b"\n")


class ArmorReader(io.RawIOBase):
    """Decodes an armored block from `src` (positioned after the BEGIN line) as a binary stream.

    Strict, like age: lines of exactly 64 characters except the last, canonical base64
    (the last line decodes and re-encodes to itself: its padding complete, no stray bits
    before it), nothing but whitespace after the END line.
    """

    def __init__(self, src):
        self.src = src
        self.pending = b""
        self.done = False
        self.short_seen = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self.pending) < len(b) and not self.done:
            self._fill()
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _fill(self) -> None:
        lines = []
        for _ in range(1024):
            line = self.src.readline(LINE + 4)
            if not line:
                raise IntegrityError("armored input is truncated: no END line")
            stripped = line.rstrip(b"\r\n")
            if stripped == END:
                rest = self.src.read(1 << 16)
                while rest:
                    if rest.strip():
                        raise IntegrityError("unexpected data after the armor END line")
                    rest = self.src.read(1 << 16)
                self.done = True
                break
            if self.short_seen or len(stripped) > LINE or not stripped:
                raise IntegrityError("malformed armored input")
            if len(stripped) < LINE or stripped.endswith(b"="):
                self.short_seen = True  # the last line: only it may be short or padded
                if not _canonical(stripped):
                    raise IntegrityError("malformed armored input: not canonical base64")
            lines.append(stripped)
        if lines:
            try:
                self.pending += base64.b64decode(b"".join(lines), validate=True)
            except (binascii.Error, ValueError):
                raise IntegrityError("malformed armored input") from None


def _canonical(line: bytes) -> bool:
    """True if `line` is the one base64 encoding of what it decodes to (as age requires): no
    unused bits set before the padding, the padding present and complete."""
    try:
        return base64.b64encode(base64.b64decode(line, validate=True)) == line
    except (binascii.Error, ValueError):
        return False


class _Prefixed(io.RawIOBase):
    """`head` (bytes already read from `rest`), then the rest of `rest`."""

    def __init__(self, head: bytes, rest):
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(b)


_MARK = b"-----BEGIN"


def open_input(src):
    """Return a binary stream of the ciphertext in `src`, de-armoring it when armored."""
    reader = src if hasattr(src, "peek") else io.BufferedReader(src, 1 << 20)
    first = reader.peek(len(BEGIN))[: len(_MARK)]
    if first and len(first) < len(_MARK) and _MARK.startswith(first):
        # A pipe or terminal gave only the start of the first line so far: read on until it tells
        # (never for a binary ciphertext, which starts b"kms-cli", so its stream is left as it is).
        head = bytearray()
        while len(head) < len(_MARK):
            chunk = reader.read(len(_MARK) - len(head))
            if not chunk:
                break
            head += chunk
        first = bytes(head)
        reader = io.BufferedReader(_Prefixed(first, reader), 1 << 20)
    if first.startswith(_MARK):
        line = reader.readline(len(BEGIN) + 4).rstrip(b"\r\n")
        if line != BEGIN:
            raise IntegrityError("not a kms-cli armored ciphertext")
        return io.BufferedReader(ArmorReader(reader), 1 << 20)
    return reader
