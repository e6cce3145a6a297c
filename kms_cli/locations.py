"""Where a vault lives: a file path (SQLite) or a `postgresql://` URI. Stdlib only, below every layer.

`canonical` is the form that names one vault in messages and to the agent: the real path of a
file, or the URI without any credential (and with its schema) for PostgreSQL.
"""

from __future__ import annotations

import os

URI_SCHEMES = ("postgresql://", "postgres://")


def is_uri(location: str) -> bool:
    """A PostgreSQL vault (anything else is a file path)."""
    return location.startswith(URI_SCHEMES)


def canonical(location: str) -> str:
    if not is_uri(location):
        return os.path.realpath(location)
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(location)
        vault = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "vault"]
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username
    except ValueError:
        return location.split("?", 1)[0].rpartition("@")[2]
    user = f"{user}@" if user else ""
    return f"postgresql://{user}{netloc}{parts.path}?vault={vault[-1] if vault else 'kms'}"


def held_form(location: str) -> str:
    """How the agent records a vault's location: a file's real path; a URI as given (its TLS and
    other libpq parameters are needed to reach it again; it never holds a password)."""
    return location if is_uri(location) else os.path.realpath(location)


def same_vault(a: str, b: str) -> bool:
    """Whether two locations name the same vault (paths resolved, URIs without credentials)."""
    if is_uri(a) != is_uri(b):
        return False
    return canonical(a) == canonical(b)
