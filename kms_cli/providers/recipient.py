"""Recipient slots (spec section 7): the root key sealed as an age file to one public key.

A slot's "URI" is the recipient itself: `age1...` (X25519), `age1pq1...` (ML-KEM-768 + X25519,
age's post-quantum hybrid) or an OpenSSH `ssh-ed25519 AAAA...` line. The blob is a complete age
file whose plaintext is the 32-byte root key, so `age -d -i IDENTITY` reads a slot as it is.
age carries no associated data: the slot is bound to its vault by the slot tag (a MAC under the
vault's slot key over the slot id, recipient and blob), checked right after unsealing, so a blob
from another vault opens nothing here.

Unsealing tries the identities given (`--identity FILE`, `KMS_CLI_IDENTITY`, `identity = [...]`
in config.toml), parsed once per invocation and shared by every recipient slot; a stanza that is
not for an identity costs one X25519 (or one ML-KEM decapsulation) and a failed AEAD.
"""

from __future__ import annotations

import os
import stat

from kms_cli.errors import KmsError, NoIdentityError, UnlockError, UsageError
from kms_cli.providers.base import SourceOptions

PASSPHRASE_VAR = "KMS_CLI_IDENTITY_PASSPHRASE"


class RecipientSource:
    scheme = "recipient"

    def __init__(self, recipient, text: str, options: SourceOptions):
        self._recipient = recipient
        self.uri = text
        self.options = options

    def __repr__(self) -> str:
        return f"RecipientSource({self.uri[:40]!r})"

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        from kms_cli.crypto import age

        return age.encrypt(bytes(key), [self._recipient])

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        from kms_cli.crypto import age

        identities = load_identities(self.options)
        if not identities:
            raise NoIdentityError("no identity given for a recipient slot", hint="pass --identity FILE or set KMS_CLI_IDENTITY")
        try:
            key = age.decrypt(bytes(blob), identities)
        except age.NoIdentityError:
            raise NoIdentityError(f"none of the identities given ({', '.join(self.options.identities)}) opens it") from None
        if len(key) != 32:
            from kms_cli.errors import IntegrityError

            raise IntegrityError("the recipient slot does not hold a root key")
        return key

    def is_configured(self) -> bool:
        return bool(self.options.identities)

    def secret_env_vars(self) -> list[str]:
        return [PASSPHRASE_VAR]


def load_identities(options: SourceOptions) -> list:
    """The identities of every file given, parsed once per invocation (warning about a file that
    other users can read, as ssh does); a passphrase-protected OpenSSH key is asked for on a TTY,
    else read from KMS_CLI_IDENTITY_PASSPHRASE."""
    if options.loaded_identities is not None:
        return options.loaded_identities
    from kms_cli.crypto.age_recipients import parse_identities

    out = []
    for path in options.identities:
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"identity file {path} is a directory")
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except FileNotFoundError:
            raise UsageError(f"no identity file {path}") from None
        except PermissionError:
            raise UsageError(f"identity file {path} is not readable") from None
        if st.st_mode & 0o077 and options.warn is not None:
            options.warn(f"identity file {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                         "chmod 600 it")
        try:
            out += parse_identities(data)
        except UsageError as exc:
            if "passphrase-protected" not in exc.message:
                raise UsageError(f"identity file {path}: {exc.message}", hint=exc.hint) from None
            out += parse_identities(data, _passphrase(options, path))
        except KmsError:
            raise
    options.loaded_identities = out
    return out


def _passphrase(options: SourceOptions, path: str) -> bytes:
    env = options.environ or os.environ
    if env.get(PASSPHRASE_VAR):
        return env[PASSPHRASE_VAR].encode()
    if options.prompt is not None:
        return options.prompt(f"passphrase for {path}", False).encode()
    raise UnlockError(f"identity file {path} is passphrase-protected: run on a terminal to be asked, or set "
                      f"{PASSPHRASE_VAR}")


def from_uri(uri: str, options: SourceOptions) -> RecipientSource:
    from kms_cli.crypto.age_recipients import parse_recipient

    text = " ".join(uri.split())  # an ssh line's blanks normalised: the slot shows it as one line
    if not text.isprintable():  # a NUL or an escape sequence (an ssh comment) would be shown as it is
        raise UsageError("invalid recipient: it holds a control character",
                         hint="remove it: a recipient (with an ssh key's comment) is shown in `master list` "
                              "and the audit log")
    return RecipientSource(parse_recipient(text), text, options)
