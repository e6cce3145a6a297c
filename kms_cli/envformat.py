"""Environment variables from secrets: VAR naming, collisions, and the `env` output formats.

A mapping here is ``{VAR: value}`` with values as SecretValue (``bytes`` and ``str``
are accepted too). `format_sh` returns bytes and carries any value but one holding a
NUL (raw bytes inside single quotes, valid UTF-8 or not). The text formats need
text: dotenv refuses what python-dotenv and a shell would not both read back exactly
(see `kms_cli.dotenv`), json and github refuse a value that is not UTF-8. A refusal
is a UsageError naming the variable (exit 2), never a mangled or partial output.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
from collections.abc import Callable, Iterable, Mapping

from kms_cli import dotenv
from kms_cli.errors import UsageError
from kms_cli.names import ENV_NAME_PATTERN
from kms_cli.secretvalue import SecretValue, text_of

Value = SecretValue | bytes | str

_ENV_NAME = re.compile(ENV_NAME_PATTERN)  # the one pattern, in names.py


def is_env_name(name: str) -> bool:
    """True for a portable environment variable name (POSIX shell identifier)."""
    return bool(_ENV_NAME.match(name))


def var_name(secret_name: str, prefix: str = "") -> str:
    """The default variable for a secret: `prefix` + last name segment, upper-cased, ``-``/``.`` -> ``_``.

    ``acme/prod/db-password`` -> ``DB_PASSWORD``; with prefix ``APP_`` -> ``APP_DB_PASSWORD``.
    The prefix is used as given (not upper-cased).

    Raises:
        UsageError: the result is not a legal variable name (``1password`` without a
            prefix, a prefix holding ``-``); the hint suggests ``--secret NAME=VAR``.
    """
    segment = secret_name.rsplit("/", 1)[-1]
    var = prefix + segment.upper().replace("-", "_").replace(".", "_")
    if not is_env_name(var):
        raise UsageError(
            f"secret {secret_name} maps to {var!r}, which is not a valid variable name",
            hint=f"name the variable yourself: --secret {secret_name}=VAR",
        )
    return var


def build_mapping(pairs: Iterable[tuple[str, str | None]], prefix: str = "") -> dict[str, str]:
    """``{VAR: secret_name}`` for ``(secret_name, explicit VAR or None)`` pairs, in order.

    An explicit VAR is taken as given (the prefix applies to default names only) and
    must be a legal variable name. Repeating the same ``(secret, VAR)`` is harmless; one
    secret may feed several variables.

    Raises:
        UsageError: an illegal VAR, or two different secrets mapped to one VAR
            (the message names both secrets and the variable).
    """
    mapping: dict[str, str] = {}
    for secret_name, explicit in pairs:
        if explicit is None:
            var = var_name(secret_name, prefix)
        else:
            var = explicit
            if not is_env_name(var):
                raise UsageError(
                    f"{var!r} is not a valid variable name (for secret {secret_name})",
                    hint="use letters, digits and '_', not starting with a digit",
                )
        other = mapping.get(var)
        if other is not None and other != secret_name:
            raise UsageError(
                f"secrets {other} and {secret_name} both map to variable {var}",
                hint=f"name one of them explicitly: --secret {secret_name}=OTHER_VAR",
            )
        mapping[var] = secret_name
    return mapping


def _texts(mapping: Mapping[str, Value], *, nul_ok: bool = True) -> list[tuple[str, str]]:
    out = []
    for var, value in mapping.items():
        if not is_env_name(var):
            raise UsageError(f"{var!r} is not a valid variable name")
        text = text_of(var, value)
        if not nul_ok and "\0" in text:
            raise UsageError(
                f"the value of {var} holds a NUL byte, which a shell variable cannot carry",
                hint="use --format json",
            )
        out.append((var, text))
    return out


def _raw(value: Value) -> bytes:
    if isinstance(value, SecretValue):
        return value.reveal()
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def sh_quote(value: bytes | str) -> bytes:
    """`value` as one POSIX sh word: single quotes, with ``'`` written as ``'\\''``; any byte but NUL."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return b"'" + raw.replace(b"'", b"'\\''") + b"'"


def format_sh(mapping: Mapping[str, Value]) -> bytes:
    """``export VAR='value'`` lines, safe for ``eval "$(kms-cli env)"`` in sh, dash and bash.

    Inside single quotes nothing is special to sh (``$``, backticks, ``\\``, newlines, CR),
    so every value survives eval byte for byte, UTF-8 or not: the bytes are written as they
    are (no ``$'...'``, which POSIX sh lacks). Only a NUL, which no shell variable can hold,
    is refused (the message names the variable, never the value), before any line is made.
    """
    lines = []
    for var, value in mapping.items():
        if not is_env_name(var):
            raise UsageError(f"{var!r} is not a valid variable name")
        raw = _raw(value)
        if b"\0" in raw:
            raise UsageError(
                f"the value of {var} holds a NUL byte, which a shell variable cannot carry",
                hint="use --format json, or kms-cli secret get for the exact bytes",
            )
        lines.append(b"export " + var.encode("ascii") + b"=" + sh_quote(raw) + b"\n")
    return b"".join(lines)


def format_dotenv(mapping: Mapping[str, Value]) -> str:
    """Dotenv lines that python-dotenv's default loader and ``set -a; . ./file`` read back exactly.

    Raises:
        UsageError: a value `kms_cli.dotenv` cannot write safely (the message names the variable).
    """
    return dotenv.serialize(
        mapping, subject="variable", hint="use --format sh (any byte but NUL) or --format json",
    )


def format_json(mapping: Mapping[str, Value]) -> str:
    """One JSON object ``{"VAR": "value", ...}``, values as strings, and a newline."""
    return json.dumps(dict(_texts(mapping)), indent=2, ensure_ascii=False) + "\n"


def _escape_command_data(text: str) -> str:
    # GitHub workflow commands unescape %25, %0D and %0A in their data.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def mask_lines(mapping: Mapping[str, Value]) -> list[str]:
    """``::add-mask::`` commands, one per non-blank line of each value (GitHub masks line by line)."""
    commands = []
    seen = set()
    for _var, text in _texts(mapping):
        for line in re.split(r"\r\n|\r|\n", text):
            if line.strip() and line not in seen:
                seen.add(line)
                commands.append(f"::add-mask::{_escape_command_data(line)}\n")
    return commands


def _delimiter(text: str, token: Callable[[], str]) -> str:
    while True:
        delimiter = f"ghadelimiter_{token()}"
        if delimiter not in text:
            return delimiter


def github_env_text(
    mapping: Mapping[str, Value], *, token: Callable[[], str] = lambda: _random.token_hex(16)
) -> str:
    """The `GITHUB_ENV` file syntax: ``VAR=value``, or ``VAR<<DELIM`` ... ``DELIM`` when the value holds a newline.

    The delimiter is random and absent from the value, so a value cannot end the block
    early and inject other variables.
    """
    parts = []
    for var, text in _texts(mapping, nul_ok=False):
        if "\n" in text or "\r" in text:
            delimiter = _delimiter(text, token)
            parts.append(f"{var}<<{delimiter}\n{text}\n{delimiter}\n")
        else:
            parts.append(f"{var}={text}\n")
    return "".join(parts)


def github_env_fd(github_env_path: str | None) -> int:
    """Open the `GITHUB_ENV` file for appending (0600 if new): checked before any secret is read.

    Raises:
        UsageError: `github_env_path` is empty (``GITHUB_ENV`` unset: not in GitHub
            Actions), or the file cannot be opened for writing.
    """
    if not github_env_path:
        raise UsageError(
            "GITHUB_ENV is not set",
            hint="--format github works inside a GitHub Actions job; use --format sh elsewhere",
        )
    try:
        return os.open(github_env_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write GITHUB_ENV ({github_env_path}): {exc.strerror.lower()}") from None


def github_texts(
    mapping: Mapping[str, Value], *, token: Callable[[], str] = lambda: _random.token_hex(16)
) -> tuple[str, str]:
    """(what to append to `GITHUB_ENV`, the ``::add-mask::`` lines to print); validates every value."""
    return github_env_text(mapping, token=token), "".join(mask_lines(mapping))


def append_github_env(fd: int, text: str) -> None:
    """Write `text` to the `GITHUB_ENV` descriptor from `github_env_fd`, and close it."""
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def format_github(
    mapping: Mapping[str, Value],
    github_env_path: str | None,
    *,
    token: Callable[[], str] = lambda: _random.token_hex(16),
) -> str:
    """Append the assignments to the `GITHUB_ENV` file; return the ``::add-mask::`` lines to print.

    The caller prints the returned text on stdout; it holds the values (the runner reads
    them to hide them from the log), so it must go nowhere else.

    Raises:
        UsageError: `github_env_path` is empty (``GITHUB_ENV`` unset: not in GitHub
            Actions) or cannot be opened, or a value is not UTF-8.
    """
    if not github_env_path:
        github_env_fd(github_env_path)  # raises: unset
    text, masks = github_texts(mapping, token=token)  # validates every value before touching the file
    append_github_env(github_env_fd(github_env_path), text)
    return masks
