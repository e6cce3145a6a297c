"""`hcvault://MOUNT/keys/NAME`: the root key sealed by HashiCorp Vault / OpenBao transit.

encrypt/decrypt with `associated_data` = base64(encode_context(context)), which
transit accepts only for AEAD key types: the key must be `aes256-gcm96`,
`aes128-gcm96` or `chacha20-poly1305` (created as `aes256-gcm96` by
`init --create-key`). Before sealing, the key is read to check it exists and
has such a type (skipped when the token may not read it), so a typo in NAME
does not silently upsert a new key. Blob (v1): `0x01 | "vault:vN:..."`.

A transit key rotated after sealing still unseals (the ciphertext names its
version, unless `min_decryption_version` was raised); `master rotate` seals
again, which uses the latest version.

Environment (the usual Vault client variables): VAULT_ADDR (required),
VAULT_TOKEN (else ~/.vault-token), VAULT_NAMESPACE, VAULT_CACERT, VAULT_CAPATH,
VAULT_CLIENT_CERT + VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from kms_cli.errors import KmsError, NotFoundError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import remote
from kms_cli.providers.base import SourceOptions, encode_context

PREFIX = "hcvault://"
_VERSION = b"\x01"
_AEAD_TYPES = {"aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"}
_CIPHERTEXT = re.compile(rb"^vault:v\d+:[A-Za-z0-9+/=]+$")
_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_INSTALL_HINT = "install the vault extra: pip install 'kms-cli[vault]'"


@dataclass
class HcVaultSource:
    mount: str
    name: str
    policy: remote.Policy
    environ: dict = field(default_factory=dict, repr=False)  # may hold secrets
    create_key: bool = False
    scheme = "hcvault"

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.mount}/keys/{self.name}"

    # -- configuration -----------------------------------------------------
    def _token(self) -> str | None:
        token = self.environ.get("VAULT_TOKEN")
        if token:
            return token
        home = self.environ.get("HOME") or os.path.expanduser("~")
        try:
            with open(os.path.join(home, ".vault-token"), encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    def _verify(self):
        env = self.environ
        if env.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true", "yes"):
            return False
        return env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or True

    def _client(self, timeout: float):
        try:
            import hvac
        except ImportError as exc:
            raise UnavailableError("hvac is not installed", hint=_INSTALL_HINT) from exc
        addr = self.environ.get("VAULT_ADDR")
        if not addr:
            raise UsageError("VAULT_ADDR is not set", hint="export VAULT_ADDR=https://vault.example:8200")
        token = self._token()
        if not token:
            raise UnlockError("no vault token: VAULT_TOKEN is not set and ~/.vault-token is missing")
        cert = None
        if self.environ.get("VAULT_CLIENT_CERT") and self.environ.get("VAULT_CLIENT_KEY"):
            cert = (self.environ["VAULT_CLIENT_CERT"], self.environ["VAULT_CLIENT_KEY"])
        return hvac.Client(
            url=addr,
            token=token,
            namespace=self.environ.get("VAULT_NAMESPACE") or None,
            verify=self._verify(),
            cert=cert,
            timeout=max(timeout, remote.MIN_ATTEMPT),
        )

    # -- operations --------------------------------------------------------
    def _check_key(self, client) -> None:
        """The key exists and is AEAD; create it when allowed. Silent if unreadable (403)."""
        import hvac.exceptions as hx

        transit = client.secrets.transit
        try:
            reply = transit.read_key(self.name, mount_point=self.mount)
        except hx.Forbidden:
            return
        except hx.InvalidPath:
            if not self.create_key:
                raise NotFoundError(
                    f"vault transit key {self.name!r} does not exist under mount {self.mount!r}",
                    hint="create it (bao write -f transit/keys/NAME type=aes256-gcm96) or use --create-key",
                ) from None
            transit.create_key(self.name, key_type="aes256-gcm96", mount_point=self.mount)
            return
        key_type = (reply or {}).get("data", {}).get("type")
        if key_type not in _AEAD_TYPES:
            raise UsageError(
                f"vault transit key {self.name!r} is {key_type}, which cannot bind the vault id",
                hint="use a key of type aes256-gcm96 (or another AEAD type)",
            )

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        aad = base64.b64encode(encode_context(context)).decode()

        def attempt(remaining: float) -> bytes:
            client = self._client(remaining)
            self._check_key(client)
            reply = client.secrets.transit.encrypt_data(
                self.name,
                plaintext=base64.b64encode(key).decode(),
                associated_data=aad,
                mount_point=self.mount,
            )
            return reply["data"]["ciphertext"].encode("ascii")

        return _VERSION + remote.call(attempt, self._classify, policy=self.policy, what="vault transit encrypt")

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        if not blob.startswith(_VERSION) or not _CIPHERTEXT.match(blob[1:]):
            raise UnlockError("this hcvault slot is malformed")
        aad = base64.b64encode(encode_context(context)).decode()

        def attempt(remaining: float) -> bytes:
            reply = self._client(remaining).secrets.transit.decrypt_data(
                self.name,
                ciphertext=blob[1:].decode("ascii"),
                associated_data=aad,
                mount_point=self.mount,
            )
            try:
                return base64.b64decode(reply["data"]["plaintext"], validate=True)
            except (binascii.Error, KeyError, TypeError) as exc:
                raise UnavailableError("vault transit returned a malformed plaintext") from exc

        return remote.call(attempt, self._classify, policy=self.policy, what="vault transit decrypt")

    def _classify(self, exc: BaseException) -> remote.Failure:
        if isinstance(exc, KmsError):
            return remote.Failure(exc)
        import hvac.exceptions as hx
        import requests.exceptions as rx

        where = f"vault transit key {self.name!r} (mount {self.mount!r})"
        if isinstance(exc, hx.VaultError):
            text = "; ".join(str(e) for e in (exc.errors or [])).lower()
            if isinstance(exc, hx.InvalidRequest):
                if "authentication failed" in text or "invalid ciphertext" in text or "decrypt" in text:
                    return remote.Failure(
                        UnlockError(
                            f"{where} does not open this slot",
                            hint="the slot was sealed by another key or vault, or it was modified",
                        )
                    )
                if "key not found" in text:
                    return remote.Failure(NotFoundError(f"{where} does not exist"))
                if "non-aead" in text:
                    return remote.Failure(UsageError(f"{where} is not an AEAD key", hint="use type aes256-gcm96"))
                return remote.Failure(UsageError(f"vault rejected the request for {where}"))
            if isinstance(exc, (hx.Unauthorized, hx.Forbidden)):
                return remote.Failure(
                    UnlockError(f"vault denied access to {where}", hint="check VAULT_TOKEN and its policy")
                )
            if isinstance(exc, hx.InvalidPath):
                return remote.Failure(NotFoundError(f"{where} does not exist (no such key or mount)"))
            if isinstance(exc, hx.VaultDown):
                return remote.Failure(UnavailableError("vault is sealed or down"), retryable=True)
            status = getattr(exc, "status_code", None)
            if isinstance(exc, (hx.RateLimitExceeded, hx.InternalServerError, hx.BadGateway)) or (
                status is not None and status >= 500
            ):
                return remote.Failure(UnavailableError(f"vault is unavailable ({type(exc).__name__})"), retryable=True)
            return remote.http_failure(status, f"vault failed ({type(exc).__name__})")
        if isinstance(exc, rx.SSLError):
            return remote.Failure(
                UnavailableError("tls handshake with vault failed", hint="set VAULT_CACERT to the server's CA")
            )
        if isinstance(exc, (rx.ConnectionError, rx.Timeout)):
            return remote.Failure(UnavailableError(f"vault is unreachable ({type(exc).__name__})"), retryable=True)
        if isinstance(exc, rx.RequestException):
            return remote.Failure(UnavailableError(f"vault request failed ({type(exc).__name__})"))
        if isinstance(exc, (KeyError, TypeError, ValueError)):
            return remote.Failure(UnavailableError("vault returned an unexpected answer"))
        return remote.Failure(UnavailableError(f"vault failed ({type(exc).__name__})"))

    def is_configured(self) -> bool:
        return bool(self.environ.get("VAULT_ADDR")) and bool(self._token())


    def secret_env_vars(self) -> list[str]:
        # The user's own cloud credentials serve the child too (`exec -- aws ...`): only
        # variables that exist to unlock kms-cli (keys, PINs, passphrases) are scrubbed.
        return []


def from_uri(uri: str, options: SourceOptions) -> HcVaultSource:
    body = uri[len(PREFIX):] if uri.startswith(PREFIX) else ""
    mount, sep, name = body.rpartition("/keys/")
    mount = mount.strip("/")
    if not sep or not mount or not _NAME.match(name) or not all(_NAME.match(p) for p in mount.split("/")):
        raise UsageError(f"invalid hcvault source {uri!r}", hint="write hcvault://MOUNT/keys/NAME, e.g. hcvault://transit/keys/kms-cli")
    return HcVaultSource(
        mount=mount,
        name=name,
        policy=remote.Policy.from_options(options),
        environ=options.environ or dict(os.environ),
        create_key=options.create_key,
    )
