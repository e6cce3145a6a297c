"""Dotenv text: parse and serialize it the way python-dotenv reads it.

Grammar (python-dotenv 1.x, which this module mirrors statement by statement):

- one binding per statement: optional ``export `` prefix, a key, optional blanks,
  ``=``, optional blanks, a value, optional blanks and ``# comment``;
- a key is unquoted (no ``=``, ``#`` or whitespace) or single-quoted;
- a value is single-quoted (``\\\\`` and ``\\'`` are its only escapes), double-quoted
  (escapes ``\\\\ \\' \\" \\a \\b \\f \\n \\r \\t \\v``; any other backslash stays as is)
  or unquoted (up to the end of the line, minus an inline comment introduced by
  whitespace and ``#``, minus trailing whitespace);
- quoted values may span lines; ``KEY=`` and ``KEY= # comment`` are empty values;
- blank lines and lines starting with ``#`` are skipped; a UTF-8 BOM is ignored.

Deliberate differences from python-dotenv:

- Variable expansion (``${VAR}``, ``${VAR:-default}``) is NOT performed: a value is
  exactly what the file says. python-dotenv expands by default (``interpolate=True``)
  and offers no escape for ``${``, so a program that reads our output with
  ``load_dotenv()``/``dotenv_values()`` sees a value containing ``${NAME}``
  expanded unless it passes ``interpolate=False``. Every other value reads back
  identically either way.
- Where python-dotenv logs a warning and skips a statement it cannot parse, and
  where it yields ``None`` for a bare ``KEY`` without ``=``, `parse` raises a
  UsageError naming the line. The message never quotes the line: a malformed line
  may be a value.

Values are text. `serialize` accepts ``str``, ``bytes`` or SecretValue values; bytes
that are not valid UTF-8 cannot be written as dotenv (python-dotenv reads text) and
raise a UsageError naming the key (exit 2); ``secret get`` and ``exec`` carry any
bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kms_cli.errors import UsageError
from kms_cli.secretvalue import SecretValue, text_of

# The regular expressions are python-dotenv's, so both agree on every input.
_U = re.UNICODE
_newline = re.compile(r"(\r\n|\n|\r)", _U)
_multiline_whitespace = re.compile(r"\s*", _U | re.MULTILINE)
_whitespace = re.compile(r"[^\S\r\n]*", _U)
_export = re.compile(r"(?:export[^\S\r\n]+)?", _U)
_single_quoted_key = re.compile(r"'([^']+)'", _U)
_unquoted_key = re.compile(r"([^=\#\s]+)", _U)
_equal_sign = re.compile(r"(=[^\S\r\n]*)", _U)
_single_quoted_value = re.compile(r"'((?:\\.|[^'\\])*)'", _U | re.DOTALL)
_double_quoted_value = re.compile(r'"((?:\\.|[^"\\])*)"', _U | re.DOTALL)
_unquoted_value = re.compile(r"([^\r\n]*)", _U)
_inline_comment = re.compile(r"\s+#.*", _U)
_comment = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?", _U)
_end_of_line = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)", _U)
_double_quote_escapes = re.compile(r"\\[\\'\"abfnrtv]", _U)
_single_quote_escapes = re.compile(r"\\[\\']", _U)

_DOUBLE_ESCAPES = {
    "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
    "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
}


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, text: str):
        self.text = text.removeprefix("\ufeff")
        self.pos = 0

    def has_next(self) -> bool:
        return self.pos < len(self.text)

    def peek(self, count: int = 1) -> str:
        return self.text[self.pos : self.pos + count]

    def read(self, regex: re.Pattern[str]) -> tuple[str, ...]:
        match = regex.match(self.text, self.pos)
        if match is None:
            raise _Malformed
        self.pos = match.end()
        return match.groups()

    def line_at(self, pos: int) -> int:
        return len(_newline.findall(self.text, 0, pos)) + 1


def _parse_value(reader: _Reader) -> str:
    char = reader.peek()
    if char == "'":
        (value,) = reader.read(_single_quoted_value)
        return _single_quote_escapes.sub(lambda m: m.group(0)[1], value)
    if char == '"':
        (value,) = reader.read(_double_quoted_value)
        return _double_quote_escapes.sub(lambda m: _DOUBLE_ESCAPES[m.group(0)[1]], value)
    if char in ("", "\n", "\r"):
        return ""
    (part,) = reader.read(_unquoted_value)
    return _inline_comment.sub("", part).rstrip()


def parse(text: str) -> list[tuple[str, str]]:
    """Every ``(key, value)`` binding of a dotenv text, in order (duplicates kept).

    Raises:
        UsageError: a statement python-dotenv could not parse, or a key without
            ``=``; the message names the line number only.
    """
    reader = _Reader(text)
    items: list[tuple[str, str]] = []
    while reader.has_next():
        reader.read(_multiline_whitespace)
        if not reader.has_next():
            break
        start = reader.pos
        try:
            reader.read(_export)
            if reader.peek() == "#":
                key = None
            elif reader.peek() == "'":
                (key,) = reader.read(_single_quoted_key)
            else:
                (key,) = reader.read(_unquoted_key)
            reader.read(_whitespace)
            value: str | None = None
            if reader.peek() == "=":
                (equal_sign,) = reader.read(_equal_sign)
                if len(equal_sign) > 1 and reader.peek() == "#":
                    value = ""
                else:
                    value = _parse_value(reader)
            reader.read(_comment)
            reader.read(_end_of_line)
        except _Malformed:
            raise UsageError(
                f"dotenv line {reader.line_at(start)}: cannot parse this statement",
                hint="expected KEY=VALUE; quote values that hold quotes, '#' after a space, or newlines",
            ) from None
        if key is None:
            continue  # a comment
        if value is None:
            raise UsageError(
                f"dotenv line {reader.line_at(start)}: expected KEY=VALUE",
                hint="write KEY= for an empty value",
            )
        items.append((key, value))
    return items


def _check_key(key: str) -> None:
    if (
        not isinstance(key, str)
        or not key
        or any(c in "=#'\"\\" or c.isspace() or not c.isprintable() for c in key)
    ):
        raise UsageError(
            f"cannot write {key!r} as a dotenv key",
            hint="a key must be non-empty, without whitespace, '=', '#', quotes or backslashes",
        )


def quote(value: str) -> str:
    """`value` as a double-quoted dotenv value that python-dotenv reads back unchanged.

    Only ``\\``, ``"``, CR and LF are escaped; the result is always one line (a literal
    CR would be turned into LF by the universal-newline reading of text files).
    """
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
    )
    return f'"{escaped}"'


def serialize(items: Iterable[tuple[str, str | bytes | SecretValue]] | Mapping) -> str:
    """Dotenv text, one ``KEY="value"`` line per item, that `parse` and python-dotenv read back identically.

    Raises:
        UsageError: a key that cannot be written unquoted, or a value that is not UTF-8
            (the message names the key, never the value).
    """
    if isinstance(items, Mapping):
        items = items.items()
    lines = []
    for key, value in items:
        _check_key(key)
        lines.append(f"{key}={quote(text_of(key, value, 'dotenv'))}\n")
    return "".join(lines)
