"""`azure-kv://` with the real azure-keyvault-keys client against a local Key Vault wire server.

No emulator of Key Vault exists: tests/servers/azure_wire.py is a loopback
HTTPS server (self-signed certificate for 127.0.0.1, trusted through
KMS_CLI_AZURE_CA -> azure-core's `connection_verify`) speaking the keys REST
format, with the bearer challenge handshake and real RSA-OAEP-256 inside.
Request counters prove every unwrap reaches the server (the SDK wraps locally
with the public key, but can only unwrap through the service).
"""

from __future__ import annotations

import base64
import json

import pytest

from kms_cli.errors import NotFoundError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import azure_kv
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, RemoteSourceContract, flip_last_bit
from tests.servers.azure_wire import FORBIDDEN_TOKEN, FakeKeyVault, StaticTokenCredential

pytestmark = pytest.mark.server


def build(host: str, name: str = "root", *, ca: str | None, version: str | None = None, token="good-token",
          timeout=5.0, retries=2, credential=None):
    environ = {"HOME": "/nonexistent"}
    if ca:
        environ["KMS_CLI_AZURE_CA"] = ca
    uri = f"azure-kv://{host}/keys/{name}" + (f"/{version}" if version else "")
    options = SourceOptions(timeout=timeout, retries=retries, environ=environ)
    return azure_kv.from_uri(uri, options, credential=credential or StaticTokenCredential(token))


@pytest.fixture(scope="module")
def vault(key_vault):
    key_vault.create_key("root")
    return key_vault


@pytest.fixture
def ca(tls_cert):
    return tls_cert.cert_path


class TestAzureKvContract(RemoteSourceContract):
    module = "kms_cli.providers.azure_kv"
    sdk_modules = ("azure.keyvault.keys", "azure.identity", "azure.core")
    fault_scheme = "https"

    @pytest.fixture(autouse=True)
    def _ca(self, tls_cert):
        self.ca = tls_cert.cert_path

    @pytest.fixture
    def source(self, vault):
        return build(vault.host, ca=self.ca)

    @pytest.fixture
    def denied(self, vault):
        blob = build(vault.host, ca=self.ca).wrap(ROOT, CTX_A)
        return build(vault.host, ca=self.ca, token=FORBIDDEN_TOKEN), blob

    def tamper(self, blob: bytes) -> bytes:
        doc = json.loads(blob)
        doc["sealed"] = base64.b64encode(flip_last_bit(base64.b64decode(doc["sealed"]))).decode()
        return json.dumps(doc).encode()

    def source_at(self, endpoint, *, timeout, retries):
        host = endpoint.split("://", 1)[1]
        return build(host, ca=self.ca, timeout=timeout, retries=retries)

    @pytest.fixture
    def stoppable(self, tls_cert):
        own = FakeKeyVault(tls_cert).start()
        own.create_key("root")
        yield build(own.host, ca=self.ca, timeout=2), own.stop
        own.stop()


def test_every_unwrap_reaches_the_server(vault, ca):
    source = build(vault.host, ca=ca)
    blob = source.wrap(ROOT, CTX_A)
    before = vault.counts["unwrapkey"]
    for _ in range(3):
        assert source.unwrap(blob, CTX_A) == ROOT
    assert vault.counts["unwrapkey"] - before == 3


def test_tampered_wrapped_key_is_refused_by_the_service(vault, ca):
    source = build(vault.host, ca=ca)
    doc = json.loads(source.wrap(ROOT, CTX_A))
    doc["wrapped"] = base64.b64encode(flip_last_bit(base64.b64decode(doc["wrapped"]))).decode()
    before = vault.counts["unwrapkey"]
    with pytest.raises(UnlockError, match="does not open"):
        source.unwrap(json.dumps(doc).encode(), CTX_A)
    assert vault.counts["unwrapkey"] - before == 1


def test_version_is_pinned_at_wrap_time(vault, ca):
    vault.create_key("pinned")
    source = build(vault.host, "pinned", ca=ca)
    blob = source.wrap(ROOT, CTX_A)
    first = json.loads(blob)["kid"].rsplit("/", 1)[1]
    second = vault.create_key("pinned")  # a newer version becomes the latest
    assert source.unwrap(blob, CTX_A) == ROOT
    assert json.loads(source.wrap(ROOT, CTX_A))["kid"].endswith("/" + second)
    pinned = build(vault.host, "pinned", ca=ca, version=first)
    assert json.loads(pinned.wrap(ROOT, CTX_A))["kid"].endswith("/" + first)
    assert pinned.unwrap(blob, CTX_A) == ROOT


def test_a_slot_naming_another_host_or_key_is_refused_without_network(vault, ca):
    source = build(vault.host, ca=ca)
    doc = json.loads(source.wrap(ROOT, CTX_A))
    before = sum(vault.counts.values())
    for kid in (doc["kid"].replace("127.0.0.1", "evil.example"), doc["kid"].replace("/root/", "/other/"),
                doc["kid"].replace("https://", "http://")):
        with pytest.raises(UnlockError, match="outside"):
            source.unwrap(json.dumps({**doc, "kid": kid}).encode(), CTX_A)
    assert sum(vault.counts.values()) == before


def test_invalid_token_is_an_unlock_error(vault, ca):
    blob = build(vault.host, ca=ca).wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError, match="denied"):
        build(vault.host, ca=ca, token="expired").unwrap(blob, CTX_A)


def test_credential_failure_is_an_unlock_error(vault, ca):
    from azure.core.exceptions import ClientAuthenticationError

    class Broken:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("no identity available")

    blob = build(vault.host, ca=ca).wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError):
        build(vault.host, ca=ca, credential=Broken()).unwrap(blob, CTX_A)


def test_missing_key_is_not_found(vault, ca):
    with pytest.raises(NotFoundError):
        build(vault.host, "absent", ca=ca).wrap(ROOT, CTX_A)


def test_untrusted_certificate_is_unavailable_and_not_retried(vault):
    before = vault.counts["get"]
    with pytest.raises(UnavailableError, match="tls") as info:
        build(vault.host, ca=None).wrap(ROOT, CTX_A)
    assert "KMS_CLI_AZURE_CA" in info.value.hint
    assert "after" not in str(info.value)
    assert vault.counts["get"] == before


def test_transient_5xx_then_success(vault, ca):
    source = build(vault.host, ca=ca, retries=3)
    blob = source.wrap(ROOT, CTX_A)
    vault.fail_next = [503, 500]
    assert source.unwrap(blob, CTX_A) == ROOT


def test_default_credential_is_created_lazily(ca):
    source = azure_kv.from_uri("azure-kv://myvault.vault.azure.net/keys/root", SourceOptions(environ={"HOME": "/x"}))
    assert source.credential is None
    assert source.vault_url == "https://myvault.vault.azure.net"
    assert source._client_kwargs(3.0)["verify_challenge_resource"] is True
    assert build("127.0.0.1:1", ca=ca)._client_kwargs(3.0)["verify_challenge_resource"] is False


def test_is_configured_is_offline(tmp_path):
    bare = {"HOME": str(tmp_path)}
    source = azure_kv.from_uri("azure-kv://v.vault.azure.net/keys/k", SourceOptions(environ=bare))
    assert source.is_configured() is azure_kv._looks_like_azure_vm()
    with_sp = {**bare, "AZURE_CLIENT_ID": "id", "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": "t"}
    assert azure_kv.from_uri("azure-kv://v.vault.azure.net/keys/k", SourceOptions(environ=with_sp)).is_configured()


@pytest.mark.parametrize(
    "uri",
    ["azure-kv://", "azure-kv://host/keys", "azure-kv://host/secrets/k", "azure-kv://host/keys/k/v/x",
     "azure-kv://ho st/keys/k", "azure-kv://host/keys/k_under"],
)
def test_bad_uris(uri):
    with pytest.raises(UsageError):
        azure_kv.from_uri(uri, SourceOptions())


def test_canonical_uri_keeps_the_version():
    source = azure_kv.from_uri("azure-kv://v.vault.azure.net/keys/k/abc123", SourceOptions())
    assert (source.host, source.name, source.version) == ("v.vault.azure.net", "k", "abc123")
    assert source.uri == "azure-kv://v.vault.azure.net/keys/k/abc123"
