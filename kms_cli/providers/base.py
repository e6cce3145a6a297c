"""The master key source interface: seal and unseal a vault's 32-byte root key.

A source is addressed by a URI (spec section 2). It knows nothing about keys,
secrets or the store: it only wraps and unwraps the root key, binding the vault
id as associated data (or encryption context) wherever its service allows.
"""

from __future__ import annotations

import json
from typing import Callable, Optional


class SourceOptions:
    """What a source may need from the invocation, injected by the vault layer.

    `passphrase_file` and `prompt` serve the passphrase source; `create_key`
    lets `init --create-key` create a missing key object (PKCS#11); `timeout`
    and `retries` bound every remote call (KMS_CLI_TIMEOUT, KMS_CLI_RETRIES).
    """

    def __init__(self, passphrase_file: Optional[str] = None,
                 prompt: Optional[Callable[[str, bool], str]] = None,  # (label, confirm) -> passphrase
                 create_key: bool = False, timeout: float = 10.0, retries: int = 3,
                 environ: Optional[dict] = None, allow_weak_passphrase: bool = False,
                 identities: Optional[list] = None, warn: Optional[Callable[[str], None]] = None):
        self.passphrase_file = passphrase_file
        self.prompt = prompt
        self.create_key = create_key
        self.timeout = timeout
        self.retries = retries
        self.environ = {} if environ is None else environ
        self.allow_weak_passphrase = allow_weak_passphrase  # a new passphrase slot may be weak
        self.identities = list(identities or [])  # identity file paths, for recipient slots
        self.warn = warn  # one-line warnings (an identity file others can read)
        self.loaded_identities = None  # the parsed identities, once (shared by every recipient slot)

    def __repr__(self) -> str:  # never the environment: it holds master keys
        return f"SourceOptions(timeout={self.timeout}, retries={self.retries}, create_key={self.create_key})"


def encode_context(context: dict[str, str]) -> bytes:
    """Canonical bytes of an encryption context, for sources that take AAD bytes."""
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class MasterKeySource:
    """The interface of a master key source (documentation: implementations do not inherit it).

    Implementations live one per module in this package.

    Attributes:
      scheme: the URI scheme it serves (`env`, `passphrase`, `aws-kms`, ...).
      uri: the canonical URI stored in the slot (no secrets in it).
    """

    scheme: str
    uri: str

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        """Seal `key` (the 32-byte root key) bound to `context`.

        Returns: an opaque blob stored in the slot.
        Raises: UnlockError (denied), UnavailableError (unreachable), NotFoundError.
        """

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        """Unseal a blob made by `wrap` with the same context.

        Raises: UnlockError when the blob does not open (wrong key, tampered,
        other vault), UnavailableError, NotFoundError.
        """

    def is_configured(self) -> bool:
        """False when this environment cannot even try this source (variable unset)."""

    def secret_env_vars(self) -> list[str]:
        """Variables that exist only to unlock kms-cli (master keys, PINs, passphrases), removed from
        `exec` children; general cloud credentials are not among them."""
