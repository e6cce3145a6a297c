"""`gcp-kms://` with the real google-cloud-kms client against a local Cloud KMS wire server.

No emulator of Cloud KMS exists: tests/servers/gcp_wire.py is a loopback HTTP
server speaking the v1 REST format of encrypt/decrypt, with real AES-256-GCM
(additionalAuthenticatedData as AAD) and the CRC32C integrity fields checked
and returned like the service does. Request counters prove each call reaches it.
"""

from __future__ import annotations

import pytest

from kms_cli.errors import NotFoundError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import gcp_kms
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, RemoteSourceContract
from tests.servers.gcp_wire import FakeCloudKms

pytestmark = pytest.mark.server

KEY = "projects/p/locations/global/keyRings/ring/cryptoKeys/root"


def build(endpoint: str, name: str = KEY, *, timeout=5.0, retries=2, home="/nonexistent", **env):
    environ = {"KMS_CLI_GCP_ENDPOINT": endpoint, "HOME": home, **env}
    return gcp_kms.from_uri(f"gcp-kms://{name}", SourceOptions(timeout=timeout, retries=retries, environ=environ))


@pytest.fixture(scope="module")
def kms(cloud_kms):
    cloud_kms.create_key(KEY)
    cloud_kms.create_key(KEY + "-denied")
    cloud_kms.denied.add(KEY + "-denied")
    return cloud_kms


class TestGcpKmsContract(RemoteSourceContract):
    module = "kms_cli.providers.gcp_kms"
    sdk_modules = ("google.cloud.kms_v1", "google.api_core", "google.auth", "grpc", "google_crc32c")

    @pytest.fixture
    def source(self, kms):
        return build(kms.url)

    @pytest.fixture
    def denied(self, kms):
        blob = build(kms.url).wrap(ROOT, CTX_A)
        return build(kms.url, KEY + "-denied"), blob

    def source_at(self, endpoint, *, timeout, retries):
        return build(endpoint, timeout=timeout, retries=retries)

    @pytest.fixture
    def stoppable(self):
        own = FakeCloudKms().start()
        own.create_key(KEY)
        yield build(own.url, timeout=2), own.stop
        own.stop()


def test_calls_reach_the_server(kms):
    source = build(kms.url)
    before = dict(kms.counts)
    blob = source.wrap(ROOT, CTX_A)
    source.unwrap(blob, CTX_A)
    source.unwrap(blob, CTX_A)
    assert kms.counts["encrypt"] - before.get("encrypt", 0) == 1
    assert kms.counts["decrypt"] - before.get("decrypt", 0) == 2


def test_request_checksums_are_sent(kms):
    before = dict(kms.seen_request_crcs)
    source = build(kms.url)
    source.unwrap(source.wrap(ROOT, CTX_A), CTX_A)
    seen = {k: v - before.get(k, 0) for k, v in kms.seen_request_crcs.items()}
    assert seen == {"plaintextCrc32c": 1, "additionalAuthenticatedDataCrc32c": 2, "ciphertextCrc32c": 1}


@pytest.mark.parametrize("fault", ["ciphertext_crc", "unverified"])
def test_corrupted_encrypt_response_is_retried(kms, fault):
    source = build(kms.url)
    before = kms.counts["encrypt"]
    kms.corrupt_next = fault
    blob = source.wrap(ROOT, CTX_A)
    assert kms.counts["encrypt"] - before == 2
    assert source.unwrap(blob, CTX_A) == ROOT


def test_corrupted_decrypt_response_is_retried_then_unavailable(kms, monkeypatch):
    source = build(kms.url, retries=1)
    blob = source.wrap(ROOT, CTX_A)
    real = kms._decrypt

    def always_corrupt(name, req, aad, corrupt):
        return real(name, req, aad, "plaintext_crc")

    monkeypatch.setattr(kms, "_decrypt", always_corrupt)
    with pytest.raises(UnavailableError, match="crc32c"):
        source.unwrap(blob, CTX_A)


def test_transient_5xx_then_success(kms):
    source = build(kms.url, retries=3)
    blob = source.wrap(ROOT, CTX_A)
    kms.fail_next = [503, 500]
    assert source.unwrap(blob, CTX_A) == ROOT


def test_rotated_key_still_unseals(kms):
    name = KEY + "-rotating"
    kms.create_key(name)
    source = build(kms.url, name)
    old = source.wrap(ROOT, CTX_A)
    kms.rotate(name)
    assert source.unwrap(old, CTX_A) == ROOT


def test_missing_key_is_not_found(kms):
    with pytest.raises(NotFoundError):
        build(kms.url, KEY + "-missing").wrap(ROOT, CTX_A)


def test_anonymous_only_for_loopback_http_without_credentials(tmp_path):
    assert build("http://127.0.0.1:9")._endpoint() == ("http://127.0.0.1:9", True)
    assert build("http://localhost:9")._endpoint() == ("http://localhost:9", True)
    assert build("https://kms.internal:443")._endpoint() == ("https://kms.internal:443", False)
    assert build("kms.internal")._endpoint() == ("https://kms.internal", False)
    creds = tmp_path / "sa.json"
    creds.write_text("{}")
    assert build("http://127.0.0.1:9", GOOGLE_APPLICATION_CREDENTIALS=str(creds))._endpoint()[1] is False
    adc = tmp_path / ".config" / "gcloud"
    adc.mkdir(parents=True)
    (adc / "application_default_credentials.json").write_text("{}")
    assert build("http://127.0.0.1:9", home=str(tmp_path))._endpoint()[1] is False


def test_plain_http_to_a_remote_host_is_refused():
    source = build("http://kms.example.com")
    with pytest.raises(UsageError, match="non-loopback"):
        source._endpoint()
    assert source.is_configured() is False


def test_is_configured(tmp_path):
    assert build("http://127.0.0.1:9").is_configured() is True
    plain = gcp_kms.from_uri(f"gcp-kms://{KEY}", SourceOptions(environ={"HOME": str(tmp_path)}))
    assert plain.is_configured() is gcp_kms._looks_like_gce()


@pytest.mark.parametrize(
    "uri",
    ["gcp-kms://", "gcp-kms://projects/p", "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/",
     "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", "gcp-kms:projects/p"],
)
def test_bad_uris(uri):
    with pytest.raises(UsageError):
        gcp_kms.from_uri(uri, SourceOptions())


def test_crc32c_is_the_castagnoli_check_value():
    assert gcp_kms.crc32c(b"123456789") == 0xE3069283


def test_decrypt_with_wrong_aad_is_an_unlock_error(kms):
    source = build(kms.url)
    blob = source.wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError, match="does not open"):
        source.unwrap(blob, {"kms-cli:vault": "00" * 16})
