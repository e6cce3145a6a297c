"""`azure-kv://HOST/keys/NAME[/VERSION]`: the root key sealed under an Azure Key Vault RSA key.

Key Vault's wrapKey/unwrapKey (RSA-OAEP-256) take no associated data, so the
vault id is bound by an envelope: a fresh 32-byte data key is wrapped by the
Key Vault key, and the root key is sealed under that data key with
chunked.seal(dek, root_key, LABEL + encode_context(context)). A slot copied to
another vault therefore fails to open here, in addition to the vault layer's
own MAC over every slot row. Blob (v1), JSON:

    {"v": 1, "kid": "https://HOST/keys/NAME/VERSION", "alg": "RSA-OAEP-256",
     "wrapped": b64(RSA-OAEP-256(dek)), "sealed": b64(chunked.seal(...))}

The key version is pinned in the blob at wrap time (the latest one when the URI
names none), and unwrap only accepts a `kid` on the URI's own host and key
name, so a modified slot cannot send our token elsewhere. The SDK wraps locally
with the RSA public key it fetched (that GET proves access); unwrap always
reaches the service (only it holds the private key). Only RSA / RSA-HSM keys
are accepted: for `oct` keys the SDK may silently wrap with local material.

Credentials: azure-identity's DefaultAzureCredential. KMS_CLI_AZURE_CA names a
PEM bundle passed as azure-core's `connection_verify` for Key Vault calls only
(REQUESTS_CA_BUNDLE also works, but applies to every request, login included).
The challenge resource check is relaxed only for loopback hosts.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from kms_cli.crypto import chunked
from kms_cli.errors import IntegrityError, KmsError, NotFoundError, StateError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import remote
from kms_cli.providers.base import SourceOptions, encode_context

PREFIX = "azure-kv://"
CA_VAR = "KMS_CLI_AZURE_CA"
ALG = "RSA-OAEP-256"
_LABEL = b"kms-cli/slot/azure-kv/v1\x00"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?\Z")  # used with .match: anchored at both ends
_SEGMENT = re.compile(r"[A-Za-z0-9-]+\Z")
_INSTALL_HINT = "install the azure extra: pip install 'kms-cli[azure]'"


@dataclass
class AzureKvSource:
    host: str
    name: str
    version: Optional[str]
    policy: remote.Policy
    environ: dict = field(default_factory=dict, repr=False)  # may hold secrets
    credential: Any = field(default=None, repr=False)  # a TokenCredential; DefaultAzureCredential when None
    scheme = "azure-kv"

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.host}/keys/{self.name}" + (f"/{self.version}" if self.version else "")

    @property
    def vault_url(self) -> str:
        return f"https://{self.host}"

    def _credential(self):
        if self.credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError as exc:
                raise UnavailableError("azure-identity is not installed", hint=_INSTALL_HINT) from exc
            self.credential = DefaultAzureCredential()
        return self.credential

    def _client_kwargs(self, timeout: float) -> dict:
        budget = max(timeout, remote.MIN_ATTEMPT)
        kwargs = {
            "retry_total": 0,  # remote.call retries
            "connection_timeout": budget,
            "read_timeout": budget,
            "verify_challenge_resource": not remote.is_loopback_host(urlsplit(self.vault_url).hostname),
        }
        ca = self.environ.get(CA_VAR)
        if ca:
            kwargs["connection_verify"] = ca
        return kwargs

    def _kid_ok(self, kid: str) -> bool:
        parts = urlsplit(kid)
        segments = parts.path.strip("/").split("/")
        return (
            parts.scheme == "https"
            and parts.netloc.lower() == self.host.lower()
            and len(segments) == 3
            and segments[0] == "keys"
            and segments[1] == self.name
            and bool(_SEGMENT.match(segments[2]))
            and (self.version is None or segments[2] == self.version)
        )

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        dek = secrets.token_bytes(32)

        def attempt(remaining: float) -> tuple[str, bytes]:
            try:
                from azure.keyvault.keys import KeyClient
                from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
            except ImportError as exc:
                raise UnavailableError("azure-keyvault-keys is not installed", hint=_INSTALL_HINT) from exc
            kwargs = self._client_kwargs(remaining)
            with KeyClient(self.vault_url, self._credential(), **kwargs) as keys:
                found = keys.get_key(self.name, self.version)
            key_type = getattr(found.key_type, "value", found.key_type)
            if key_type not in ("RSA", "RSA-HSM"):
                raise UsageError(
                    f"azure key {self.name} is {key_type}, not RSA",
                    hint="use an RSA or RSA-HSM key (wrapKey with RSA-OAEP-256)",
                )
            if found.properties.enabled is False:
                raise StateError(f"azure key {found.id} is disabled")
            if not self._kid_ok(found.id):
                raise UnavailableError(f"azure key vault returned an unexpected key id {found.id}")
            crypto = CryptographyClient(found, self._credential(), **kwargs)
            result = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
            return found.id, result.encrypted_key

        kid, wrapped = remote.call(attempt, self._classify_wrap, policy=self.policy, what="azure key vault wrap")
        sealed = chunked.seal(dek, key, _LABEL + encode_context(context))
        doc = {
            "v": 1,
            "kid": kid,
            "alg": ALG,
            "wrapped": base64.b64encode(wrapped).decode(),
            "sealed": base64.b64encode(sealed).decode(),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def _parse(self, blob: bytes) -> tuple[str, bytes, bytes]:
        try:
            doc = json.loads(blob)
            if doc.get("v") != 1 or doc.get("alg") != ALG:
                raise ValueError("version")
            kid = doc["kid"]
            wrapped = base64.b64decode(doc["wrapped"], validate=True)
            sealed = base64.b64decode(doc["sealed"], validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
            raise UnlockError("this azure-kv slot is malformed") from None
        if not isinstance(kid, str) or not self._kid_ok(kid):
            raise UnlockError(f"this azure-kv slot names a key outside {self.uri}")
        return kid, wrapped, sealed

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        kid, wrapped, sealed = self._parse(blob)

        def attempt(remaining: float) -> bytes:
            try:
                from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
            except ImportError as exc:
                raise UnavailableError("azure-keyvault-keys is not installed", hint=_INSTALL_HINT) from exc
            with CryptographyClient(kid, self._credential(), **self._client_kwargs(remaining)) as crypto:
                return crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key

        dek = remote.call(attempt, self._classify_unwrap, policy=self.policy, what="azure key vault unwrap")
        try:
            return chunked.open(dek, sealed, _LABEL + encode_context(context))
        except IntegrityError:
            raise UnlockError(
                f"azure key {kid} does not open this slot",
                hint="the slot was sealed for another vault, or it was modified",
            ) from None

    def _classify_wrap(self, exc: BaseException) -> remote.Failure:
        return self._classify(exc, unwrapping=False)

    def _classify_unwrap(self, exc: BaseException) -> remote.Failure:
        return self._classify(exc, unwrapping=True)

    def _classify(self, exc: BaseException, *, unwrapping: bool) -> remote.Failure:
        if isinstance(exc, KmsError):
            return remote.Failure(exc)
        from azure.core import exceptions as ax

        where = f"azure key {self.name} in {self.host}"
        if isinstance(exc, ax.ClientAuthenticationError):
            return remote.Failure(
                UnlockError(
                    f"azure key vault denied access to {where} ({_status(exc) or 'no credential'})",
                    hint="sign in (az login, managed identity, AZURE_CLIENT_ID/SECRET) and check the key's access policy",
                )
            )
        if isinstance(exc, ax.ResourceNotFoundError):
            return remote.Failure(NotFoundError(f"{where} does not exist"))
        if isinstance(exc, ax.HttpResponseError):
            status = _status(exc)
            if status == 400 and unwrapping:
                return remote.Failure(
                    UnlockError(
                        f"{where} does not open this slot",
                        hint="the slot was sealed by another key, or it was modified",
                    )
                )
            if status == 400:
                return remote.Failure(UsageError(f"azure key vault rejected the request for {where}"))
            if status in (401, 403):
                return remote.http_failure(status, f"azure key vault denied access to {where} (http {status})")
            return remote.http_failure(status, f"azure key vault failed for {where} (http {status})")
        if isinstance(exc, (ax.ServiceRequestError, ax.ServiceResponseError)):
            if _is_tls(exc):
                return remote.Failure(
                    UnavailableError(
                        f"tls handshake with {self.host} failed",
                        hint=f"set {CA_VAR} to the CA bundle that signed the vault's certificate",
                    )
                )
            return remote.Failure(UnavailableError(f"azure key vault {self.host} is unreachable"), retryable=True)
        if isinstance(exc, ax.AzureError):
            return remote.Failure(UnavailableError(f"azure key vault failed ({type(exc).__name__})"))
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return remote.Failure(UnavailableError(f"azure key vault returned an unexpected answer ({type(exc).__name__})"))
        return remote.Failure(UnavailableError(f"azure key vault failed ({type(exc).__name__})"))

    def is_configured(self) -> bool:
        """Offline guess that DefaultAzureCredential has something to try."""
        if self.credential is not None:
            return True
        env = self.environ
        if env.get("AZURE_CLIENT_ID") and (
            env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH") or env.get("AZURE_FEDERATED_TOKEN_FILE")
        ):
            return True
        if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
            return True
        home = env.get("HOME") or os.path.expanduser("~")
        azure_dir = env.get("AZURE_CONFIG_DIR") or os.path.join(home, ".azure")
        if os.path.isfile(os.path.join(azure_dir, "msal_token_cache.json")) or os.path.isfile(
            os.path.join(azure_dir, "azureProfile.json")
        ):
            return True
        return _looks_like_azure_vm()


    def secret_env_vars(self) -> list[str]:
        # The user's own cloud credentials serve the child too (`exec -- aws ...`): only
        # variables that exist to unlock kms-cli (keys, PINs, passphrases) are scrubbed.
        return []


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None and getattr(exc, "response", None) is not None:
        status = getattr(exc.response, "status_code", None)
    return status


def _is_tls(exc: BaseException) -> bool:
    import ssl

    seen = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(cur) or type(cur).__name__ == "SSLError":
            return True
        cur = getattr(cur, "inner_exception", None) or cur.__cause__ or cur.__context__
    return False


def _looks_like_azure_vm() -> bool:
    """Azure VMs (managed identity) identify themselves in DMI data."""
    try:
        with open("/sys/class/dmi/id/chassis_asset_tag", encoding="ascii", errors="replace") as fh:
            return fh.read().strip() == "7783-7084-3265-9085-8269-3286-77"
    except OSError:
        return False


def from_uri(uri: str, options: SourceOptions, *, credential: Any = None) -> AzureKvSource:
    body = uri[len(PREFIX):] if uri.startswith(PREFIX) else ""
    parts = body.split("/")
    bad = UsageError(f"invalid azure-kv source {uri!r}", hint="write azure-kv://VAULT.vault.azure.net/keys/NAME[/VERSION]")
    if len(parts) not in (3, 4) or parts[1] != "keys" or not _HOST.match(parts[0]):
        raise bad
    if not _SEGMENT.match(parts[2]) or (len(parts) == 4 and not _SEGMENT.match(parts[3])):
        raise bad
    return AzureKvSource(
        host=parts[0],
        name=parts[2],
        version=parts[3] if len(parts) == 4 else None,
        policy=remote.Policy.from_options(options),
        environ=options.environ or dict(os.environ),
        credential=credential,
    )
