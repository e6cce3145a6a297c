"""`hcvault://` against a real OpenBao dev server (the Vault API) on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from kms_cli.errors import NotFoundError, UnlockError, UsageError
from kms_cli.providers import hcvault
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, RemoteSourceContract
from tests.servers.openbao import OpenBao

pytestmark = pytest.mark.server


def build(env: dict, uri: str = "hcvault://transit/keys/root", *, timeout=5.0, retries=2, create_key=False):
    return hcvault.from_uri(uri, SourceOptions(environ=env, timeout=timeout, retries=retries, create_key=create_key))


@pytest.fixture(scope="module")
def transit(openbao):
    openbao.create_key("root")
    return openbao


@pytest.fixture
def vault_env(transit, tmp_path):
    return {"VAULT_ADDR": transit.addr, "VAULT_TOKEN": "root", "HOME": str(tmp_path)}


class TestHcVaultContract(RemoteSourceContract):
    module = "kms_cli.providers.hcvault"
    sdk_modules = ("hvac", "requests")

    @pytest.fixture
    def source(self, vault_env):
        return build(vault_env)

    @pytest.fixture
    def denied(self, vault_env):
        blob = build(vault_env).wrap(ROOT, CTX_A)
        return build({**vault_env, "VAULT_TOKEN": "not-a-token"}), blob

    def tamper(self, blob: bytes) -> bytes:
        import base64

        head, _, b64 = blob.rpartition(b":")
        raw = bytearray(base64.b64decode(b64))
        raw[-1] ^= 1
        return head + b":" + base64.b64encode(bytes(raw))

    def source_at(self, endpoint, *, timeout, retries):
        return build({"VAULT_ADDR": endpoint, "VAULT_TOKEN": "root"}, timeout=timeout, retries=retries)

    @pytest.fixture
    def stoppable(self, tmp_path):
        server = OpenBao().start()
        server.create_key("root")
        yield build({"VAULT_ADDR": server.addr, "VAULT_TOKEN": "root"}, timeout=2), server.stop
        server.stop()


def test_rotated_key_still_unseals_and_wrap_uses_the_latest_version(transit, vault_env):
    transit.create_key("rotating")
    source = build(vault_env, "hcvault://transit/keys/rotating")
    old = source.wrap(ROOT, CTX_A)
    assert old.startswith(b"\x01vault:v1:")
    transit.client().secrets.transit.rotate_key("rotating")
    assert source.unwrap(old, CTX_A) == ROOT
    new = source.wrap(ROOT, CTX_A)  # what `master rotate` does
    assert new.startswith(b"\x01vault:v2:")
    assert source.unwrap(new, CTX_A) == ROOT


def test_missing_key_is_not_found_and_not_upserted(transit, vault_env):
    with pytest.raises(NotFoundError) as info:
        build(vault_env, "hcvault://transit/keys/typo").wrap(ROOT, CTX_A)
    assert "--create-key" in info.value.hint
    keys = transit.client().secrets.transit.list_keys()["data"]["keys"]
    assert "typo" not in keys


def test_create_key_makes_an_aead_key(transit, vault_env):
    source = build(vault_env, "hcvault://transit/keys/created", create_key=True)
    blob = source.wrap(ROOT, CTX_A)
    assert transit.client().secrets.transit.read_key("created")["data"]["type"] == "aes256-gcm96"
    assert source.unwrap(blob, CTX_A) == ROOT


def test_non_aead_key_is_refused(transit, vault_env):
    transit.create_key("rsa", key_type="rsa-2048")
    with pytest.raises(UsageError, match="cannot bind"):
        build(vault_env, "hcvault://transit/keys/rsa").wrap(ROOT, CTX_A)


def test_unknown_mount_is_not_found(vault_env):
    blob = build(vault_env).wrap(ROOT, CTX_A)
    with pytest.raises(NotFoundError):
        build(vault_env, "hcvault://elsewhere/keys/root").unwrap(blob, CTX_A)


def test_token_file_fallback(vault_env, tmp_path):
    (tmp_path / ".vault-token").write_text("root\n")
    env = {k: v for k, v in vault_env.items() if k != "VAULT_TOKEN"}
    source = build(env)
    assert source.is_configured()
    assert source.unwrap(source.wrap(ROOT, CTX_A), CTX_A) == ROOT


def test_not_configured_without_addr_or_token(tmp_path):
    assert build({"VAULT_TOKEN": "root", "HOME": str(tmp_path)}).is_configured() is False
    assert build({"VAULT_ADDR": "http://127.0.0.1:1", "HOME": str(tmp_path)}).is_configured() is False
    with pytest.raises(UsageError, match="VAULT_ADDR"):
        build({"VAULT_TOKEN": "root", "HOME": str(tmp_path)}).wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError, match="no vault token"):
        build({"VAULT_ADDR": "http://127.0.0.1:1", "HOME": str(tmp_path)}).wrap(ROOT, CTX_A)


def test_client_honours_the_usual_variables(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    env = {"VAULT_ADDR": "https://vault.example:8200", "VAULT_TOKEN": "t", "VAULT_NAMESPACE": "team/a",
           "VAULT_CACERT": str(ca)}
    client = build(env)._client(3.0)
    assert client.adapter.namespace == "team/a"
    assert client.adapter._kwargs["verify"] == str(ca)  # hvac keeps requests' kwargs here
    assert client.adapter._kwargs["timeout"] == 3.0
    assert build({**env, "VAULT_SKIP_VERIFY": "true"})._verify() is False
    assert build(env)._verify() == str(ca)


@pytest.mark.parametrize(
    "uri",
    ["hcvault://", "hcvault://transit/root", "hcvault:///keys/root", "hcvault://transit/keys/", "hcvault://a//b/keys/k",
     "hcvault://transit/keys/a/b"],
)
def test_bad_uris(uri):
    with pytest.raises(UsageError):
        build({}, uri)


def test_nested_mount_and_canonical_uri():
    source = build({}, "hcvault://team/transit/keys/root")
    assert (source.mount, source.name, source.uri) == ("team/transit", "root", "hcvault://team/transit/keys/root")
    assert source.secret_env_vars() == []  # the token serves `exec` children too


def test_environment_falls_back_to_os_environ(monkeypatch, transit):
    monkeypatch.setenv("VAULT_ADDR", transit.addr)
    monkeypatch.setenv("VAULT_TOKEN", "root")
    source = hcvault.from_uri("hcvault://transit/keys/root", SourceOptions())
    assert source.unwrap(source.wrap(ROOT, CTX_A), CTX_A) == ROOT
    assert os.environ["VAULT_ADDR"] == transit.addr
