"""Dotenv text: read it the way python-dotenv reads it; write it so python-dotenv AND a shell agree.

Reading (python-dotenv 1.x, which `parse` mirrors statement by statement):

- one binding per statement: optional ``export `` prefix, a key, optional blanks,
  ``=``, optional blanks, a value, optional blanks and ``# comment``;
- a key is unquoted (no ``=``, ``#`` or whitespace) or single-quoted;
- a value is single-quoted (``\\\\`` and ``\\'`` are its only escapes), double-quoted
  (escapes ``\\\\ \\' \\" \\a \\b \\f \\n \\r \\t \\v``; any other backslash stays as is)
  or unquoted (up to the end of the line, minus an inline comment introduced by
  whitespace and ``#``, minus trailing whitespace);
- quoted values may span lines; ``KEY=`` and ``KEY= # comment`` are empty values;
- blank lines and lines starting with ``#`` are skipped; a UTF-8 BOM is ignored.

`load` reads a file's bytes as python-dotenv reads a file: UTF-8, and with Python's
universal newlines, so CRLF and a lone CR become LF everywhere, inside quoted values too.

Deliberate differences from python-dotenv when reading:

- Variable expansion (``${VAR}``, ``${VAR:-default}``) is NOT performed: a value is
  exactly what the file says (python-dotenv expands by default).
- Where python-dotenv logs a warning and skips a statement it cannot parse, and
  where it yields ``None`` for a bare ``KEY`` without ``=``, `parse` raises a
  UsageError naming the line. The message never quotes the line: a malformed line
  may be a value.

Writing (`serialize`): every line is ``KEY='value'`` or ``KEY="value"``, chosen so that
python-dotenv's default loader (``dotenv_values``/``load_dotenv``, interpolation on) and
a POSIX shell (``set -a; . ./file``: sh, dash, bash) read back the same bytes, and
neither runs or expands anything:

- single quotes, the value written as is, when it holds no ``'``, no ``\\\\`` and
  does not end with ``\\`` (sh takes everything inside literally; python-dotenv unescapes
  only ``\\\\`` and ``\\'`` there);
- otherwise double quotes with ``\\`` and ``"`` backslash-escaped, when it holds no ``$``
  and no backtick (the only other characters special to sh inside double quotes);
- otherwise, and for a NUL, a CR (a text-mode reader turns it into LF), a ``${...}``
  that python-dotenv would expand (``${NAME}``, ``${NAME:-default}``: it has no escape
  for them), or bytes that are not UTF-8, the value is refused: a UsageError (exit 2)
  naming the key, never the value, before anything is written.

A key must be a shell identifier (``[A-Za-z_][A-Za-z0-9_]*``): a shell would run any
other ``key=value`` word as a command (and print it, value included, in its error).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kms_cli.errors import UsageError
from kms_cli.names import is_env_name
from kms_cli.secretvalue import SecretValue

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


# python-dotenv's interpolation pattern (dotenv/variables.py): what its default loader expands.
_expansion = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")
_DEFAULT_HINT = "use another format: --format json, or env --format sh (any byte but NUL)"


def load(raw: bytes) -> list[tuple[str, str]]:
    """The bindings of a dotenv file's bytes, read as python-dotenv reads a file.

    UTF-8 (a leading BOM ignored), with universal newlines: ``\\r\\n`` and a lone ``\\r``
    become ``\\n`` before parsing, inside quoted values too. Escapes inside double quotes
    (``\\r``) are decoded after that, so an escaped CR survives.

    Raises:
        UsageError: the bytes are not UTF-8, or a statement cannot be parsed (see `parse`).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the dotenv file is not UTF-8 text") from None
    return parse(text.replace("\r\n", "\n").replace("\r", "\n"))


def unsafe_reason(text: str) -> str | None:
    """Why `text` cannot be written as a dotenv value that python-dotenv and sh both read
    back exactly, or None when `quote` can write it. The reason never quotes the value."""
    if "\0" in text:
        return "it holds a NUL byte"
    if "\r" in text:
        return "it holds a carriage return, which readers of text files turn into a newline"
    if _expansion.search(text):
        return "it holds ${...}, which python-dotenv would expand"
    if _single_quotable(text) or _double_quotable(text):
        return None
    return "it holds a quote or backslash together with $ or a backtick, which no quoting keeps literal for both python-dotenv and sh"


def _single_quotable(text: str) -> bool:
    return "'" not in text and "\\\\" not in text and not text.endswith("\\")


def _double_quotable(text: str) -> bool:
    return "$" not in text and "`" not in text


def quote(text: str) -> str:
    """`text` as a dotenv value that python-dotenv (default loader) and sh read back unchanged.

    Raises:
        ValueError: `unsafe_reason(text)` is not None (the message holds no part of the value).
    """
    reason = unsafe_reason(text)
    if reason is not None:
        raise ValueError(reason)
    if _single_quotable(text):
        return f"'{text}'"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def serialize(
    items: Iterable[tuple[str, str | bytes | SecretValue]] | Mapping,
    *,
    subject: str = "variable",
    hint: str = _DEFAULT_HINT,
) -> str:
    """Dotenv text, one ``KEY='value'`` (or ``KEY="value"``) binding per item, that python-dotenv's
    default loader, `parse` and ``set -a; . ./file`` in sh, dash and bash read back exactly.

    Every item is checked before any text is made, so a refusal leaves nothing half-written.
    `subject` names what a key is in messages ("secret", "variable"); `hint` follows a refusal.

    Raises:
        UsageError: a key that is not a shell identifier, or a value that cannot be written
            safely (see the module docstring); the message names the key, never the value.
    """
    if isinstance(items, Mapping):
        items = items.items()
    lines = []
    for key, value in items:
        if not isinstance(key, str) or not is_env_name(key):
            raise UsageError(
                f"{subject} {key!r} cannot be a dotenv key: a shell reading the file would run it as a command",
                hint="keys must be letters, digits and '_', not starting with a digit; " + hint,
            )
        if isinstance(value, str):
            text: str | None = value
        else:
            text = _decode(value.reveal() if isinstance(value, SecretValue) else bytes(value))
        reason = "it is not UTF-8 text" if text is None else unsafe_reason(text)
        if reason is not None:
            raise UsageError(f"the value of {subject} {key} cannot be written safely as dotenv: {reason}", hint=hint)
        lines.append(f"{key}={quote(text)}\n")
    return "".join(lines)
