"""Key and secret names and namespaces (spec section 3)."""

from __future__ import annotations

import re

from kms_cli.errors import UsageError

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*\Z"
"""A portable environment variable name (a POSIX shell identifier): the one pattern for it.
Compiled on first use by re's cache, not at import (names.py is on every command's path)."""
MAX_LEN = 256
MAX_VERSION = 2**31 - 1  # the largest version number anything accepts: larger is exit 2, never an overflow later


def parse_version(text: str, what: str = "version") -> int:
    """A version number: ASCII digits, from 1 to MAX_VERSION; else UsageError (exit 2)."""
    if not (text.isascii() and text.isdigit()):
        if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
            raise UsageError(f"{what} must be a positive number")
        raise UsageError(f"{what} must be a number, got {text[:40]!r}")
    digits = text.lstrip("0") or "0"
    n = int(digits) if len(digits) <= len(str(MAX_VERSION)) else MAX_VERSION + 1
    if n < 1:
        raise UsageError(f"{what} must be a positive number")
    if n > MAX_VERSION:
        raise UsageError(f"{what} must be a number from 1 to {MAX_VERSION}")
    return n


def is_env_name(name: str) -> bool:
    """True for a portable environment variable name (POSIX shell identifier)."""
    return re.match(ENV_NAME_PATTERN, name) is not None


def validate(name: str, what: str = "name") -> str:
    """Return `name` if it is a valid path of segments, else raise UsageError (exit 2)."""
    if not name:
        raise UsageError(f"{what} must not be empty")
    if len(name) > MAX_LEN:
        raise UsageError(f"{what} is longer than {MAX_LEN} characters")
    if name.startswith("/"):
        raise UsageError(f"invalid {what} {name!r}: it must not start with '/'")
    for seg in name.split("/"):
        if seg in ("", ".", ".."):
            raise UsageError(f"invalid {what} {name!r}: empty, '.' and '..' segments are not allowed")
        if not _SEGMENT.match(seg):
            raise UsageError(
                f"invalid {what} {name!r}",
                hint="names are segments of letters, digits, '.', '_' and '-' joined by '/'",
            )
    return name


class Namespace:
    """Scopes names: `full()` maps a user's name in, `relative()` maps a stored name out."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def __eq__(self, other) -> bool:
        return isinstance(other, Namespace) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)

    def __repr__(self) -> str:
        return f"Namespace({self.prefix!r})"

    @classmethod
    def parse(cls, ns: str | None) -> "Namespace":
        ns = (ns or "").strip()
        if ns.endswith("/"):
            ns = ns[:-1]
        if not ns:
            return cls("")
        return cls(validate(ns, "namespace"))

    def full(self, name: str) -> str:
        validate(name)
        full = f"{self.prefix}/{name}" if self.prefix else name
        if len(full) > MAX_LEN:
            raise UsageError(f"name is longer than {MAX_LEN} characters with its namespace")
        return full

    def contains(self, full: str) -> bool:
        return not self.prefix or full.startswith(self.prefix + "/")

    def relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full


def utf8_text(value: str | None, what: str) -> str | None:
    """Text kms-cli stores (a description, a reason, a label's or tag's K=V): valid UTF-8 (an argv
    byte that is not decodes to a lone surrogate, which no vault column can hold): else exit 2."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the {what} is not valid UTF-8 text") from None
    return value
