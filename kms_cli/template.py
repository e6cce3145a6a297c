"""Templates for `inject`: find ``{{ kms://NAME }}`` references and render them with secret values.

A reference is ``{{``, optional blanks (spaces, tabs), ``kms://NAME`` with an optional
``?version=N``, optional blanks, ``}}``. NAME follows the name rules of the spec
(segments of ``[A-Za-z0-9._-]``, joined by ``/``, no empty, ``.`` or ``..`` segment, at
most 256 characters); N is a positive integer (at most 2**31 - 1). Anything that starts like a reference
(``{{ kms://``) but does not parse is a usage error rather than text passed through, so
a typo never ships a template with a hole in it. Every other byte passes through
unchanged; a template is bytes and need not be UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from kms_cli.errors import UsageError
from kms_cli.secretvalue import SecretValue

# Anything shaped like a reference; the inside is then checked strictly.
_CANDIDATE = re.compile(rb"\{\{[ \t]*kms://([^\s{}]*)[ \t]*\}\}")
_OPENING = re.compile(rb"\{\{[ \t]*kms://")
_REFERENCE = re.compile(rb"([A-Za-z0-9._/-]+)(?:\?version=([1-9][0-9]*))?\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")


class Reference(NamedTuple):
    name: str
    version: int | None


def _valid_name(name: str) -> bool:
    if not name or len(name) > 256 or name.startswith("/"):
        return False
    return all(_SEGMENT.match(s) and s not in (".", "..") for s in name.split("/"))


def _line(template: bytes, offset: int) -> int:
    return template.count(b"\n", 0, offset) + 1


def _malformed(template: bytes, offset: int) -> UsageError:
    return UsageError(
        f"template line {_line(template, offset)}: malformed kms:// reference",
        hint="write {{ kms://NAME }} or {{ kms://NAME?version=N }}",
    )


def _version(template: bytes, offset: int, digits: bytes) -> int:
    from kms_cli.names import MAX_VERSION

    if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
        raise UsageError(f"template line {_line(template, offset)}: version is larger than {MAX_VERSION}")
    return int(digits)


def _scan(template: bytes) -> list[tuple[int, int, Reference]]:
    """(start, end, reference) of every reference, in order; raises on a malformed one."""
    found = []
    matched_starts = set()
    for m in _CANDIDATE.finditer(template):
        inner = _REFERENCE.match(m.group(1))
        if inner is None:
            raise _malformed(template, m.start())
        name = inner.group(1).decode("ascii")
        if not _valid_name(name):
            raise _malformed(template, m.start())
        version = _version(template, m.start(), inner.group(2)) if inner.group(2) else None
        found.append((m.start(), m.end(), Reference(name, version)))
        matched_starts.add(m.start())
    for m in _OPENING.finditer(template):
        if m.start() not in matched_starts:
            raise _malformed(template, m.start())  # e.g. "{{ kms://a b }}" or an unclosed one
    return found


def references(template: bytes) -> list[Reference]:
    """Each distinct reference of `template`, in order of first appearance.

    Raises:
        UsageError: a malformed reference (the message gives its line).
    """
    seen: dict[Reference, None] = {}
    for _start, _end, ref in _scan(template):
        seen.setdefault(ref, None)
    return list(seen)


def render(template: bytes, lookup: Callable[[str, int | None], bytes | SecretValue]) -> bytes:
    """`template` with every reference replaced by ``lookup(name, version)``.

    `lookup` is called once per distinct reference, all of them before any output is
    built, so a missing secret (lookup raising NotFoundError) fails the whole render.
    Resolving references up front with `references` lets the caller do the same.
    """
    spans = _scan(template)
    values: dict[Reference, bytes] = {}
    for _start, _end, ref in spans:
        if ref not in values:
            value = lookup(ref.name, ref.version)
            values[ref] = value.reveal() if isinstance(value, SecretValue) else bytes(value)
    out = []
    pos = 0
    for start, end, ref in spans:
        out.append(template[pos:start])
        out.append(values[ref])
        pos = end
    out.append(template[pos:])
    return b"".join(out)
