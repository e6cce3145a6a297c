"""`kms://` references: the one parser (`parse_reference`, used by `read` and `inject`) and
`inject`'s templates (find ``{{ kms://NAME }}`` references and render them with secret values).

A reference is ``kms://NAME`` with an optional ``?version=N``: NAME follows the name rules of
the spec (`names.validate`: segments of ``[A-Za-z0-9._-]``, joined by ``/``, no empty, ``.``
or ``..`` segment, at most 256 characters); N is a version number (`names.parse_version`:
from 1 to ``names.MAX_VERSION``). Nothing else (no other query parameter, no fragment, no
percent-encoding) is accepted.

In a template, a reference is ``{{``, optional blanks (spaces, tabs), the reference, optional
blanks, ``}}``. Anything that starts like a reference (``{{ kms://``) but does not parse is a
usage error rather than text passed through, so a typo never ships a template with a hole in
it. Every other byte passes through unchanged; a template is bytes and need not be UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from kms_cli.errors import UsageError
from kms_cli.names import parse_version, validate
from kms_cli.secretvalue import SecretValue

PREFIX = "kms://"
_HINT = "write kms://NAME or kms://NAME?version=N"

# Anything shaped like a reference; the inside is then checked by parse_reference.
_CANDIDATE = re.compile(rb"\{\{[ \t]*(kms://[^\s{}]*)[ \t]*\}\}")
_OPENING = re.compile(rb"\{\{[ \t]*kms://")


class Reference(NamedTuple):
    name: str
    version: int | None


def parse_reference(text: str) -> Reference:
    """``kms://NAME`` or ``kms://NAME?version=N`` as a Reference.

    Raises:
        UsageError: anything else (exit 2); the message says what is wrong.
    """
    if not text.startswith(PREFIX):
        raise UsageError(f"expected a reference like kms://NAME or kms://NAME?version=N, got {text[:60]!r}",
                         hint=_HINT)
    name, q, query = text[len(PREFIX):].partition("?")
    if not name:
        raise UsageError("a kms:// reference needs a name", hint=_HINT)
    validate(name, "secret name")
    if q:
        key, eq, digits = query.partition("=")
        if key != "version" or not eq or "&" in digits or "#" in digits:
            raise UsageError("a kms:// reference takes only ?version=N", hint=_HINT)
        return Reference(name, parse_version(digits))
    return Reference(name, None)


def _line(template: bytes, offset: int) -> int:
    return template.count(b"\n", 0, offset) + 1


def _malformed(template: bytes, offset: int, why: str = "malformed kms:// reference") -> UsageError:
    return UsageError(
        f"template line {_line(template, offset)}: {why}",
        hint="write {{ kms://NAME }} or {{ kms://NAME?version=N }}",
    )


def _scan(template: bytes) -> list[tuple[int, int, Reference]]:
    """(start, end, reference) of every reference, in order; raises on a malformed one."""
    found = []
    matched_starts = set()
    for m in _CANDIDATE.finditer(template):
        try:
            text = m.group(1).decode("ascii")
        except UnicodeDecodeError:
            raise _malformed(template, m.start()) from None
        try:
            ref = parse_reference(text)
        except UsageError as exc:
            raise _malformed(template, m.start(), f"malformed kms:// reference: {exc.message}") from None
        found.append((m.start(), m.end(), ref))
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
