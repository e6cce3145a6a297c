"""`aws-kms://` against a real moto server on 127.0.0.1, reached only through AWS_ENDPOINT_URL.

moto runs real AES-256-GCM with the encryption context as AAD. It differs from
AWS in ways these tests avoid relying on (see backends.md): it denies a wrong
explicit KeyId with AccessDeniedException, and only checks credentials when
auth is switched on (`auth_enforced`).
"""

from __future__ import annotations

import pytest

from kms_cli.errors import NotFoundError, UnlockError, UsageError
from kms_cli.providers import aws_kms
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, RemoteSourceContract
from tests.servers.moto_server import MotoServer

pytestmark = pytest.mark.server


def build(key: str, *, timeout=5.0, retries=2, environ=None):
    return aws_kms.from_uri(f"aws-kms://{key}", SourceOptions(timeout=timeout, retries=retries, environ=environ or {}))


@pytest.fixture
def aws_env(clean_env, moto, monkeypatch):
    for var, value in moto.env().items():
        monkeypatch.setenv(var, value)
    return moto


@pytest.fixture(scope="module")
def key_id(moto):
    return moto.create_key(alias="alias/kms-cli-root")


class TestAwsKmsContract(RemoteSourceContract):
    module = "kms_cli.providers.aws_kms"
    sdk_modules = ("boto3", "botocore")

    @pytest.fixture
    def source(self, aws_env, key_id):
        return build("alias/kms-cli-root", environ=aws_env.env())

    @pytest.fixture
    def denied(self, aws_env, key_id):
        blob = build(key_id, environ=aws_env.env()).wrap(ROOT, CTX_A)
        with aws_env.auth_enforced():  # moto now refuses the unknown access key "testing"
            yield build(key_id, environ=aws_env.env()), blob

    def source_at(self, endpoint, *, timeout, retries):
        return build("alias/kms-cli-root", timeout=timeout, retries=retries,
                     environ={"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"})

    @pytest.fixture(autouse=True)
    def _aws(self, aws_env):
        return aws_env

    @pytest.fixture
    def stoppable(self, aws_env, monkeypatch):
        own = MotoServer().start()
        key = own.create_key()
        yield build(key, timeout=2, environ=own.env()), own.stop
        own.stop()


def test_key_by_id_arn_and_alias(aws_env, key_id):
    arn = aws_env.kms().describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    blob = build(key_id).wrap(ROOT, CTX_A)
    for ref in (key_id, arn, "alias/kms-cli-root"):
        assert build(ref).unwrap(blob, CTX_A) == ROOT


def test_arn_region_wins(aws_env, key_id):
    source = build(f"arn:aws:kms:eu-west-3:123456789012:key/{key_id}")
    assert source.region == "eu-west-3"
    assert build(key_id).region is None


def test_encryption_context_is_the_vault_context(aws_env, key_id):
    blob = build(key_id).wrap(ROOT, CTX_A)
    kms = aws_env.kms()
    plain = kms.decrypt(CiphertextBlob=blob[1:], EncryptionContext=CTX_A)["Plaintext"]
    assert plain == ROOT


def test_missing_key_is_not_found(aws_env):
    with pytest.raises(NotFoundError):
        build("alias/does-not-exist").wrap(ROOT, CTX_A)


def test_bad_uris():
    for uri in ("aws-kms://", "aws-kms:key", "aws-kms://a b"):
        with pytest.raises(UsageError):
            aws_kms.from_uri(uri, SourceOptions())


def test_is_configured_is_offline_and_honest(tmp_path):
    empty = {"HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    assert build("k", environ=empty).is_configured() is False
    assert build("k", environ={**empty, "AWS_PROFILE": "dev"}).is_configured() is True
    assert build("k", environ={**empty, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}).is_configured()
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert build("k", environ=empty).is_configured() is True


def test_no_credentials_is_an_unlock_error(clean_env, moto, monkeypatch, key_id):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(UnlockError, match="credentials"):
        build(key_id).wrap(ROOT, CTX_A)


def test_no_region_is_a_usage_error(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    with pytest.raises(UsageError, match="region"):
        build("alias/x").wrap(ROOT, CTX_A)


def test_botocore_retries_are_off(aws_env):
    client = build("alias/x")._client(3.0)
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.read_timeout == 3.0 and client.meta.config.connect_timeout == 3.0


def test_an_injected_client_serves_every_call(aws_env, key_id):
    """A boto3 client built by the caller (here with a hook counting requests) is the one used:
    as Tink's KMS clients take theirs, so a program or a test can pin region, endpoint and retries."""
    import boto3

    client = boto3.session.Session().client("kms", region_name="us-east-1",
                                            endpoint_url=aws_env.env()["AWS_ENDPOINT_URL"])
    calls = []
    client.meta.events.register("before-call.kms.*", lambda model, **_: calls.append(model.name))
    source = aws_kms.from_uri("aws-kms://alias/kms-cli-root", SourceOptions(environ={}), client=client)
    assert "client" not in repr(source)
    blob = source.wrap(ROOT, CTX_A)
    assert source.unwrap(blob, CTX_A) == ROOT
    assert calls == ["Encrypt", "Decrypt"]
    # and the same blob opens through a source built the usual way (from the environment)
    assert build("alias/kms-cli-root", environ=aws_env.env()).unwrap(blob, CTX_A) == ROOT
