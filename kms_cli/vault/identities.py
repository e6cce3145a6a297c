"""Identities for recipient slots: making a new one (`identity generate`)."""

from __future__ import annotations

from kms_cli import durations


def generate(pq: bool = False) -> tuple[str, str]:
    """A new age identity as the text of an identity file (as age-keygen writes it), and its
    recipient: X25519 (`age1...`), or with `pq` the ML-KEM-768 + X25519 hybrid (`age1pq1...`)."""
    from kms_cli.crypto.age_recipients import HybridIdentity, X25519Identity

    identity = (HybridIdentity if pq else X25519Identity).generate()
    recipient = identity.recipient().text
    text = (f"# created: {durations.rfc3339(durations.now())}\n# public key: {recipient}\n{identity.text}\n")
    return text, recipient
