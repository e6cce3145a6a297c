"""URI dispatch for master key sources: each scheme's module is imported only when used."""

from __future__ import annotations

import importlib

from kms_cli.errors import UsageError
from kms_cli.providers.base import MasterKeySource, SourceOptions

# scheme -> module; each module exposes `from_uri(uri, options) -> MasterKeySource`.
SCHEMES = {
    "env": "kms_cli.providers.env",
    "passphrase": "kms_cli.providers.passphrase",
    "keyring": "kms_cli.providers.keyring",
    "pkcs11": "kms_cli.providers.pkcs11",
    "aws-kms": "kms_cli.providers.aws_kms",
    "gcp-kms": "kms_cli.providers.gcp_kms",
    "azure-kv": "kms_cli.providers.azure_kv",
    "hcvault": "kms_cli.providers.hcvault",
    "recipient": "kms_cli.providers.recipient",
}


def scheme_of(uri: str) -> str:
    """The scheme of a source URI (`passphrase` has no colon)."""
    if uri == "passphrase" or uri.startswith("passphrase:"):
        return "passphrase"
    if uri.startswith(("age1", "ssh-")):  # a recipient: an age or OpenSSH public key, not a URI
        return "recipient"
    head, sep, _ = uri.partition(":")
    if not sep or head not in SCHEMES:
        raise UsageError(
            f"unknown master key source {uri.split(':', 1)[0]!r}",
            hint="use one of: " + ", ".join(f"{s}:" for s in SCHEMES if s not in ("passphrase", "recipient"))
                 + ", passphrase, or a recipient (age1..., age1pq1..., ssh-ed25519 AAAA...)",
        )
    return head


def from_uri(uri: str, options: SourceOptions | None = None) -> MasterKeySource:
    """Build the source a URI names, importing its module (and SDK) only now."""
    module = importlib.import_module(SCHEMES[scheme_of(uri)])
    return module.from_uri(uri, options or SourceOptions())
