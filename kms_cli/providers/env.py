"""`env:VAR`: the root key sealed under a 32-byte key held in an environment variable."""

from __future__ import annotations

import os

from kms_cli.crypto import chunked
from kms_cli.errors import IntegrityError, NotFoundError, UnlockError, UsageError
from kms_cli.names import is_env_name
from kms_cli.providers.base import SourceOptions, encode_context

DEFAULT_VAR = "KMS_CLI_MASTER_KEY"
_LABEL = b"kms-cli/slot/env/v1\x00"


def parse_key(text: str, var: str) -> bytes:
    """32 bytes from 64 hex characters or base64 (standard or URL-safe)."""
    text = text.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    import base64  # the hex form, the common one, needs no module: keeps cold start short
    import binascii

    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UsageError(
            f"{var} must hold 32 bytes as 64 hex characters or base64",
            hint="generate one with `kms-cli master generate`",
        )
    return raw


class EnvSource:
    scheme = "env"

    def __init__(self, var: str, environ: dict):
        self.var = var
        self.environ = environ

    def __repr__(self) -> str:  # never the environment: it holds the key
        return f"EnvSource({self.var!r})"

    @property
    def uri(self) -> str:
        return f"env:{self.var}"

    def _key(self) -> bytes:
        value = self.environ.get(self.var)
        if not value:
            raise NotFoundError(
                f"master key variable {self.var} is not set",
                hint="generate a key with `kms-cli master generate` and export it as " + self.var,
            )
        return parse_key(value, self.var)

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        return chunked.seal(self._key(), key, _LABEL + encode_context(context))

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        try:
            return chunked.open(self._key(), blob, _LABEL + encode_context(context))
        except IntegrityError:
            raise UnlockError(f"the key in {self.var} does not open this slot") from None

    def is_configured(self) -> bool:
        return bool(self.environ.get(self.var))


    def secret_env_vars(self) -> list[str]:
        return [self.var]


def from_uri(uri: str, options: SourceOptions) -> EnvSource:
    var = uri.partition(":")[2] or DEFAULT_VAR
    if not is_env_name(var):
        raise UsageError(f"invalid environment variable name in source {uri!r}")
    return EnvSource(var=var, environ=options.environ or dict(os.environ))
