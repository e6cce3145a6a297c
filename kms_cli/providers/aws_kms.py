"""`aws-kms://KEY`: the root key sealed by AWS KMS Encrypt/Decrypt with an encryption context.

KEY is a key id, a key ARN, an alias ARN or `alias/NAME`. Endpoint, region and
credentials are resolved the standard boto3 way (`AWS_ENDPOINT_URL`, profiles,
SSO, web identity, container and instance roles); a key ARN's region wins over
the default region. AWS_ENDPOINT_URL(_KMS) and AWS_REGION are read from the
source's environment (options.environ) and passed to the client explicitly;
everything else is boto3's own resolution. The context dict (`{"kms-cli:vault": <vault id>}`) is the
EncryptionContext, and Decrypt names the KeyId so a blob only opens with the
key the slot names. Blob (v1): `0x01 | CiphertextBlob`.

botocore's own retries are off (total_max_attempts 1): remote.call retries
throttling, 5xx and connection errors within KMS_CLI_TIMEOUT.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from kms_cli.errors import KmsError, NotFoundError, StateError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import remote
from kms_cli.providers.base import SourceOptions

PREFIX = "aws-kms://"
_VERSION = b"\x01"
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)/.+$")
_INSTALL_HINT = "install the aws extra: pip install 'kms-cli[aws]'"

_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}
_DOES_NOT_OPEN = {"InvalidCiphertextException", "IncorrectKeyException"}
_RETRYABLE = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSInternalException",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
}
_STATE = {"DisabledException", "KMSInvalidStateException"}
_CREDENTIAL_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "TokenRetrievalError",
    "UnauthorizedSSOTokenError",
    "SSOTokenLoadError",
    "InvalidConfigError",
}
_RETRYABLE_BOTOCORE = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionError",
    "HTTPClientError",
}


@dataclass
class AwsKmsSource:
    key: str
    policy: remote.Policy
    environ: dict = field(default_factory=dict, repr=False)  # may hold secrets
    client: object = field(default=None, repr=False)  # a boto3 KMS client the caller built (Tink's way)
    scheme = "aws-kms"

    def __post_init__(self) -> None:
        self._session = None
        self._clients: dict[float, object] = {}

    @property
    def uri(self) -> str:
        return PREFIX + self.key

    @property
    def region(self) -> str | None:
        match = _ARN.match(self.key)
        return match.group(1) if match else None

    def _client(self, timeout: float):
        """The injected client, else one per time budget (each with botocore's retries off:
        `remote` retries, within KMS_CLI_TIMEOUT)."""
        if self.client is not None:
            return self.client
        try:
            import boto3.session
            from botocore.config import Config
        except ImportError as exc:
            raise UnavailableError("boto3 is not installed", hint=_INSTALL_HINT) from exc
        budget = round(max(timeout, remote.MIN_ATTEMPT), 1)
        if budget not in self._clients:
            if self._session is None:
                self._session = boto3.session.Session()
            config = Config(
                connect_timeout=budget,
                read_timeout=budget,
                retries={"total_max_attempts": 1, "mode": "standard"},
                user_agent_extra="kms-cli",
            )
            region = self.region or self.environ.get("AWS_REGION") or self.environ.get("AWS_DEFAULT_REGION") or None
            endpoint = self.environ.get("AWS_ENDPOINT_URL_KMS") or self.environ.get("AWS_ENDPOINT_URL") or None
            self._clients[budget] = self._session.client(
                "kms", region_name=region, endpoint_url=endpoint, config=config
            )
        return self._clients[budget]

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        def attempt(remaining: float) -> bytes:
            reply = self._client(remaining).encrypt(KeyId=self.key, Plaintext=key, EncryptionContext=context)
            return reply["CiphertextBlob"]

        return _VERSION + remote.call(attempt, self._classify, policy=self.policy, what="aws kms encrypt")

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        if len(blob) < 2 or not blob.startswith(_VERSION):
            raise UnlockError("this aws-kms slot is malformed")

        def attempt(remaining: float) -> bytes:
            reply = self._client(remaining).decrypt(
                CiphertextBlob=blob[1:], EncryptionContext=context, KeyId=self.key
            )
            return reply["Plaintext"]

        return remote.call(attempt, self._classify, policy=self.policy, what="aws kms decrypt")

    def _classify(self, exc: BaseException) -> remote.Failure:
        if isinstance(exc, KmsError):
            return remote.Failure(exc)
        try:
            from botocore import exceptions as be
        except ImportError:  # pragma: no cover
            return remote.Failure(UnavailableError(f"aws kms failed: {type(exc).__name__}"))
        name = type(exc).__name__
        if isinstance(exc, be.ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code", "") or "Unknown"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _DOES_NOT_OPEN:
                return remote.Failure(
                    UnlockError(
                        f"aws kms key {self.key} does not open this slot ({code})",
                        hint="the slot was sealed by another key or vault, or it was modified",
                    )
                )
            if code in _DENIED or status in (401, 403):
                return remote.Failure(
                    UnlockError(
                        f"aws kms denied access to key {self.key} ({code})",
                        hint="check the AWS credentials and the key policy (kms:Encrypt, kms:Decrypt)",
                    )
                )
            if code == "NotFoundException":
                return remote.Failure(NotFoundError(f"aws kms key {self.key} does not exist ({code})"))
            if code in _STATE:
                return remote.Failure(StateError(f"aws kms key {self.key} is disabled or pending deletion ({code})"))
            if code == "InvalidKeyUsageException":
                return remote.Failure(
                    UsageError(f"aws kms key {self.key} is not a symmetric ENCRYPT_DECRYPT key ({code})")
                )
            if code in _RETRYABLE or (status is not None and status >= 500):
                return remote.Failure(UnavailableError(f"aws kms is unavailable ({code})"), retryable=True)
            if code == "ValidationException":
                return remote.Failure(UsageError(f"aws kms rejected the request ({code})"))
            return remote.http_failure(status, f"aws kms failed ({code})")
        if name == "NoRegionError":
            return remote.Failure(
                UsageError("no AWS region is configured", hint="set AWS_REGION or use the key's full ARN")
            )
        if name == "ProfileNotFound":
            return remote.Failure(UsageError(f"aws profile not found: {exc}"))
        if name in _CREDENTIAL_ERRORS:
            return remote.Failure(
                UnlockError(
                    f"no usable AWS credentials ({name})",
                    hint="configure credentials the boto3 way (AWS_PROFILE, ~/.aws, SSO login, instance role)",
                )
            )
        if name == "ParamValidationError":
            return remote.Failure(UsageError(f"aws kms rejected the request parameters for key {self.key}"))
        if name == "SSLError":
            return remote.Failure(UnavailableError("aws kms tls handshake failed", hint="check AWS_CA_BUNDLE"))
        if isinstance(exc, be.BotoCoreError) and any(c.__name__ in _RETRYABLE_BOTOCORE for c in type(exc).__mro__):
            return remote.Failure(UnavailableError(f"aws kms is unreachable ({name})"), retryable=True)
        if isinstance(exc, be.BotoCoreError):
            return remote.Failure(UnavailableError(f"aws kms failed ({name})"))
        return remote.Failure(UnavailableError(f"aws kms failed ({name})"))

    def is_configured(self) -> bool:
        """A cheap, offline guess that boto3 will find credentials (no network calls)."""
        env = self.environ
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return True
        if any(
            env.get(v)
            for v in (
                "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            )
        ):
            return True
        home = env.get("HOME") or os.path.expanduser("~")
        files = [
            env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials"),
            env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"),
        ]
        if any(os.path.isfile(f) for f in files):
            return True
        if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
            return False
        return _looks_like_ec2()


    def secret_env_vars(self) -> list[str]:
        # The user's own cloud credentials serve the child too (`exec -- aws ...`): only
        # variables that exist to unlock kms-cli (keys, PINs, passphrases) are scrubbed.
        return []


def _looks_like_ec2() -> bool:
    """EC2 instances (instance-role credentials) identify themselves in DMI data."""
    for path, needle in (
        ("/sys/devices/virtual/dmi/id/sys_vendor", "amazon ec2"),
        ("/sys/devices/virtual/dmi/id/board_asset_tag", "i-"),
    ):
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                if fh.read().strip().lower().startswith(needle):
                    return True
        except OSError:
            continue
    return False


def from_uri(uri: str, options: SourceOptions, *, client: object = None) -> AwsKmsSource:
    """The source a URI names. `client`: a boto3 KMS client to use for every call instead of the one
    built from the environment (tests pin one; an embedding program passes its own session's)."""
    if not uri.startswith(PREFIX) or len(uri) == len(PREFIX):
        raise UsageError(
            f"invalid aws-kms source {uri!r}",
            hint="write aws-kms://KEY_ID, aws-kms://arn:aws:kms:... or aws-kms://alias/NAME",
        )
    key = uri[len(PREFIX):]
    if any(c.isspace() for c in key):
        raise UsageError(f"invalid aws kms key in source {uri!r}")
    return AwsKmsSource(key=key, policy=remote.Policy.from_options(options), environ=options.environ or dict(os.environ),
                        client=client)
