"""Words in messages: plurals and articles, for every layer (the vault's messages and the CLI's)."""

from __future__ import annotations


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """`1 secret`, `2 secrets`, `0 secrets` (`plural_form` for nouns that do not take an s)."""
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"


def article(words: str) -> str:
    """`a key`, `an encrypting key`: the indefinite article by the first letter."""
    return f"{'an' if words[:1].lower() in 'aeiou' and words[:1] else 'a'} {words}"
