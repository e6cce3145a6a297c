"""`exec --mask`: every form of a secret value a program might print, and the streaming replacer.

`mask_patterns` lists the byte strings to hide for some values (the values themselves
and their base64, percent and JSON encodings); `Masker` replaces every occurrence of
any of them by ``***`` in a stream fed in arbitrary pieces. `kms_cli.runner` relays
the child's output through a `Masker`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from kms_cli.secretvalue import SecretValue


def _b64_forms(value: bytes) -> set[bytes]:
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(value)
        forms.add(full)
        forms.add(full.rstrip(b"="))
        # Inside a longer base64 text the value starts at byte offset 0, 1 or 2 of a
        # 3-byte group; the characters made only of the value's bits are the same
        # whatever surrounds it. Mask those cores when they are long enough not to
        # match by chance.
        n = len(value)
        for r in range(3):
            encoded = encode(b"\0" * r + value)
            lo = -(-8 * r // 6)
            hi = (8 * (r + n)) // 6
            core = encoded[lo:hi]
            if len(core) >= 8:
                forms.add(core)
    return forms


def _lower_hex(encoded: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)


def _url_forms(value: bytes) -> set[bytes]:
    forms = set()
    for encoded in (
        quote(value, safe=""),  # everything but unreserved characters
        quote(value, safe="/"),  # urllib's default
        quote(value, safe="-_.!~*'()"),  # JavaScript encodeURIComponent
        quote_plus(value, safe=""),  # form encoding: space as '+'
    ):
        forms.add(encoded.encode("ascii"))
        forms.add(_lower_hex(encoded).encode("ascii"))
    return forms


def _json_forms(value: bytes) -> set[bytes]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return set()
    return {json.dumps(text)[1:-1].encode("ascii"), json.dumps(text, ensure_ascii=False)[1:-1].encode()}


def mask_patterns(values: Iterable[bytes | SecretValue]) -> list[bytes]:
    """Every byte string `--mask` hides for these values, longest first.

    For each value, and for the value without trailing CR/LF (programs often strip the
    newline that ``echo`` stored), the patterns are: the value; its base64 (standard and
    URL-safe, with and without ``=`` padding) plus, for values of 6 bytes or more, the
    part of its encoding that is the same wherever it sits inside a longer base64 text;
    its percent-encodings (all reserved bytes, urllib's default, encodeURIComponent's and
    form encoding's sets, upper and lower-case hex); and its JSON string escaping.
    Empty values are skipped.
    """
    patterns: set[bytes] = set()
    for value in values:
        raw = value.reveal() if isinstance(value, SecretValue) else bytes(value)
        for form in {raw, raw.rstrip(b"\r\n")}:
            if not form:
                continue
            patterns.add(form)
            patterns |= _b64_forms(form)
            patterns |= _url_forms(form)
            patterns |= _json_forms(form)
    patterns.discard(b"")
    return sorted(patterns, key=lambda p: (-len(p), p))


class Masker:
    """Streaming replacement of every occurrence of any pattern by ``***``.

    Overlapping occurrences (of different patterns) are masked as their union. An
    occurrence split across `feed` calls is caught: only the shortest trailing part of
    the data that could still become an occurrence (it is a prefix of some pattern) is
    held back; all bytes before it are returned at once, so output that cannot be a
    secret is never delayed. Held bytes wait for the next data (or `flush` at the end of
    the stream), never for a timer: releasing them after a pause would print the start
    of a secret that a program writes slowly.
    """

    def __init__(self, patterns: Iterable[bytes], replacement: bytes = b"***"):
        self._patterns = sorted({p for p in patterns if p}, key=len, reverse=True)
        self._replacement = replacement
        self._held = b""
        self._covered = 0  # leading bytes of _held already inside an emitted replacement
        self._maxlen = len(self._patterns[0]) if self._patterns else 0
        self._regex = (
            re.compile(b"|".join(re.escape(p) for p in self._patterns)) if self._patterns else None
        )
        self._by_first: dict[int, list[bytes]] = {}
        for p in self._patterns:
            self._by_first.setdefault(p[0], []).append(p)

    @property
    def held(self) -> int:
        """How many bytes are waiting to be told apart from a secret."""
        return len(self._held)

    def _hold_from(self, buf: bytes) -> int:
        """The smallest i such that buf[i:] is a proper prefix of some pattern (len(buf) if none)."""
        n = len(buf)
        view = memoryview(buf)
        for i in range(max(0, n - self._maxlen + 1), n):
            candidates = self._by_first.get(buf[i])
            if candidates:
                tail = view[i:]
                rest = n - i
                for p in candidates:
                    if len(p) > rest and p.startswith(tail):
                        return i
        return n

    def _spans(self, buf: bytes, limit: int) -> list[tuple[int, int]]:
        """Merged spans of the occurrences starting before `limit`."""
        spans = []
        pos = 0
        while True:
            m = self._regex.search(buf, pos)
            if m is None or m.start() >= limit:
                return spans
            start, end = m.span()
            t = start + 1
            while t < end and t < limit:  # occurrences starting inside this one
                inner = self._regex.match(buf, t)
                if inner is not None and inner.end() > end:
                    end = inner.end()
                t += 1
            spans.append((start, end))
            pos = end

    def _emit(self, buf: bytes, limit: int) -> bytes:
        spans = self._spans(buf, limit) if self._regex is not None else []
        out = []
        pos = 0
        if self._covered:
            # The held bytes start inside a replacement already written: extend it.
            end = self._covered
            while spans and spans[0][0] < end:
                end = max(end, spans.pop(0)[1])
            pos = end
        for start, end in spans:
            if start < pos:  # overlaps the previous span
                pos = max(pos, end)
                continue
            out.append(buf[pos:start])
            out.append(self._replacement)
            pos = end
        if pos <= limit:
            out.append(buf[pos:limit])
            self._held, self._covered = buf[limit:], 0
        else:
            self._held, self._covered = buf[limit:], pos - limit
        return b"".join(out)

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that can be written now."""
        buf = self._held + data
        if self._regex is None:
            self._held = b""
            return buf
        return self._emit(buf, self._hold_from(buf))

    def flush(self) -> bytes:
        """At the end of the stream: everything still held, masked."""
        buf, self._held = self._held, b""
        if not buf:
            self._covered = 0
            return b""
        return self._emit(buf, len(buf))
