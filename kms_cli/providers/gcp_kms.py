"""`gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`: the root key sealed by Cloud KMS.

Encrypt/Decrypt with additional_authenticated_data = encode_context(context)
(the vault id), and the CRC32C integrity fields checked both ways: requests
carry plaintext/AAD/ciphertext checksums, and a response whose
`verified_*_crc32c` flags are false or whose returned checksum does not match
the returned bytes is treated as corrupted in transit (retried, then exit 7).
Checksums come from google-crc32c (or the `crc32c` package), never hand-rolled.
Blob (v1): `0x01 | ciphertext`.

Credentials are google-auth's Application Default Credentials. KMS_CLI_GCP_ENDPOINT
overrides the endpoint (private endpoints, tests) and selects the REST
transport. Plain `http://` is accepted only for loopback hosts, and there,
when no credentials are configured (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud
ADC file), anonymous credentials are used so a local server needs no Google
account; configured credentials are never silently dropped, and a bearer token
is never sent in clear text off the machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kms_cli.errors import KmsError, NotFoundError, StateError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import remote
from kms_cli.providers.base import SourceOptions, encode_context

PREFIX = "gcp-kms://"
ENDPOINT_VAR = "KMS_CLI_GCP_ENDPOINT"
_VERSION = b"\x01"
_NAME = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+\Z")
_INSTALL_HINT = "install the gcp extra: pip install 'kms-cli[gcp]'"
_SCOPES = ["https://www.googleapis.com/auth/cloudkms"]


class _Corrupted(Exception):
    """A response failed its CRC32C check: corrupted in transit, safe to retry."""


def crc32c(data: bytes) -> int:
    try:
        import google_crc32c
    except ImportError:
        try:
            import crc32c as _crc32c
        except ImportError as exc:
            raise UnavailableError(
                "no crc32c implementation is installed", hint="pip install google-crc32c"
            ) from exc
        return _crc32c.crc32c(data)
    return google_crc32c.value(data)


@dataclass
class GcpKmsSource:
    name: str
    policy: remote.Policy
    environ: dict = field(default_factory=dict, repr=False)  # may hold secrets
    scheme = "gcp-kms"

    def __post_init__(self) -> None:
        self._kms = None

    @property
    def uri(self) -> str:
        return PREFIX + self.name

    def _credentials_configured(self) -> bool:
        env = self.environ
        if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
            return True
        home = env.get("HOME") or os.path.expanduser("~")
        config = env.get("CLOUDSDK_CONFIG") or os.path.join(home, ".config", "gcloud")
        return os.path.isfile(os.path.join(config, "application_default_credentials.json"))

    def _endpoint(self) -> tuple[str | None, bool]:
        """(endpoint or None, anonymous?) after the plain-http checks."""
        endpoint = self.environ.get(ENDPOINT_VAR)
        if not endpoint:
            return None, False
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{ENDPOINT_VAR} must be an http(s) url")
        if parts.scheme == "http":
            if not remote.is_loopback_host(parts.hostname):
                raise UsageError(
                    f"{ENDPOINT_VAR} uses plain http to a non-loopback host",
                    hint="use https, or http only to 127.0.0.1 / localhost",
                )
            return endpoint, not self._credentials_configured()
        return endpoint, False

    def _client(self):
        if self._kms is not None:
            return self._kms
        try:
            from google.cloud import kms_v1
        except ImportError as exc:
            raise UnavailableError("google-cloud-kms is not installed", hint=_INSTALL_HINT) from exc
        endpoint, anonymous = self._endpoint()
        kwargs: dict = {}
        if endpoint:
            kwargs["transport"] = "rest"
            kwargs["client_options"] = {"api_endpoint": endpoint}
        if anonymous:
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        else:
            import google.auth

            kwargs["credentials"], _ = google.auth.default(scopes=_SCOPES)
        self._kms = kms_v1.KeyManagementServiceClient(**kwargs)
        return self._kms

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        aad = encode_context(context)

        def attempt(remaining: float) -> bytes:
            reply = self._client().encrypt(
                request={
                    "name": self.name,
                    "plaintext": key,
                    "plaintext_crc32c": crc32c(key),
                    "additional_authenticated_data": aad,
                    "additional_authenticated_data_crc32c": crc32c(aad),
                },
                retry=None,
                timeout=remaining,
            )
            if not reply.verified_plaintext_crc32c or not reply.verified_additional_authenticated_data_crc32c:
                raise _Corrupted("the request was corrupted in transit")
            if reply.ciphertext_crc32c is None or int(reply.ciphertext_crc32c) != crc32c(reply.ciphertext):
                raise _Corrupted("the response was corrupted in transit")
            return bytes(reply.ciphertext)

        return _VERSION + remote.call(attempt, self._classify_encrypt, policy=self.policy, what="gcp kms encrypt")

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        if len(blob) < 2 or not blob.startswith(_VERSION):
            raise UnlockError("this gcp-kms slot is malformed")
        aad = encode_context(context)
        ciphertext = blob[1:]

        def attempt(remaining: float) -> bytes:
            reply = self._client().decrypt(
                request={
                    "name": self.name,
                    "ciphertext": ciphertext,
                    "ciphertext_crc32c": crc32c(ciphertext),
                    "additional_authenticated_data": aad,
                    "additional_authenticated_data_crc32c": crc32c(aad),
                },
                retry=None,
                timeout=remaining,
            )
            if reply.plaintext_crc32c is None or int(reply.plaintext_crc32c) != crc32c(reply.plaintext):
                raise _Corrupted("the response was corrupted in transit")
            return bytes(reply.plaintext)

        return remote.call(attempt, self._classify_decrypt, policy=self.policy, what="gcp kms decrypt")

    def _classify_encrypt(self, exc: BaseException) -> remote.Failure:
        return self._classify(exc, decrypting=False)

    def _classify_decrypt(self, exc: BaseException) -> remote.Failure:
        return self._classify(exc, decrypting=True)

    def _classify(self, exc: BaseException, *, decrypting: bool) -> remote.Failure:
        if isinstance(exc, KmsError):
            return remote.Failure(exc)
        if isinstance(exc, _Corrupted):
            return remote.Failure(UnavailableError(f"gcp kms crc32c check failed: {exc}"), retryable=True)
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        key = f"gcp kms key {self.name}"
        if isinstance(exc, ax.DefaultCredentialsError):
            return remote.Failure(
                UnlockError(
                    "no google credentials found",
                    hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
                )
            )
        if isinstance(exc, ax.RefreshError):
            return remote.Failure(UnlockError("google credentials could not be refreshed (expired or revoked)"))
        if isinstance(exc, ax.TransportError):
            return remote.Failure(UnavailableError("google auth endpoint is unreachable"), retryable=True)
        if isinstance(exc, gx.GoogleAPICallError):
            code = getattr(exc, "code", None)
            status = int(code) if isinstance(code, int) else None
            if isinstance(exc, (gx.BadRequest, gx.InvalidArgument)) and decrypting:
                return remote.Failure(
                    UnlockError(
                        f"{key} does not open this slot",
                        hint="the slot was sealed by another key or vault, or it was modified",
                    )
                )
            if isinstance(exc, (gx.PermissionDenied, gx.Unauthenticated, gx.Unauthorized, gx.Forbidden)):
                return remote.Failure(
                    UnlockError(
                        f"gcp kms denied access to {self.name}",
                        hint="check the credentials and the roles/cloudkms.cryptoKeyEncrypterDecrypter binding",
                    )
                )
            if isinstance(exc, gx.NotFound):
                return remote.Failure(NotFoundError(f"{key} does not exist"))
            if isinstance(exc, gx.FailedPrecondition):
                return remote.Failure(StateError(f"{key} cannot be used now (disabled or destroyed version)"))
            if isinstance(exc, (gx.BadRequest, gx.InvalidArgument)):
                return remote.Failure(UsageError(f"gcp kms rejected the request for {self.name}"))
            if isinstance(
                exc,
                (gx.TooManyRequests, gx.ResourceExhausted, gx.ServiceUnavailable, gx.InternalServerError,
                 gx.DeadlineExceeded, gx.GatewayTimeout, gx.Aborted, gx.BadGateway),
            ) or (status is not None and status >= 500):
                return remote.Failure(UnavailableError(f"gcp kms is unavailable ({type(exc).__name__})"), retryable=True)
            return remote.http_failure(status, f"gcp kms failed ({type(exc).__name__})")
        if isinstance(exc, gx.RetryError):
            return remote.Failure(UnavailableError("gcp kms is unavailable"), retryable=True)
        try:
            import requests.exceptions as rx
        except ImportError:  # pragma: no cover
            rx = None
        if rx is not None:
            if isinstance(exc, rx.SSLError):
                return remote.Failure(UnavailableError("tls handshake with gcp kms failed"))
            if isinstance(exc, (rx.ConnectionError, rx.Timeout)):
                return remote.Failure(UnavailableError(f"gcp kms is unreachable ({type(exc).__name__})"), retryable=True)
        return remote.Failure(UnavailableError(f"gcp kms failed ({type(exc).__name__})"))

    def is_configured(self) -> bool:
        """Offline: credentials configured, a loopback endpoint, or running on GCE."""
        try:
            endpoint, anonymous = self._endpoint()
        except UsageError:
            return False
        if anonymous or self._credentials_configured():
            return True
        return _looks_like_gce()


    def secret_env_vars(self) -> list[str]:
        return []


def _looks_like_gce() -> bool:
    """google-auth's own offline GCE check: the DMI product name."""
    try:
        with open("/sys/class/dmi/id/product_name", encoding="ascii", errors="replace") as fh:
            return fh.read().strip().startswith("Google")
    except OSError:
        return False


def from_uri(uri: str, options: SourceOptions) -> GcpKmsSource:
    name = uri[len(PREFIX):] if uri.startswith(PREFIX) else ""
    if not _NAME.match(name):
        raise UsageError(
            f"invalid gcp-kms source {uri!r}",
            hint="write gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K",
        )
    return GcpKmsSource(name=name, policy=remote.Policy.from_options(options), environ=options.environ or dict(os.environ))
