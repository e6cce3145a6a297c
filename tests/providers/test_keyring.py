"""`keyring:SERVICE` against a real headless gnome-keyring Secret Service on a private D-Bus bus."""

from __future__ import annotations

import base64

import pytest

from kms_cli.errors import NotFoundError, StateError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import keyring as kr
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, CTX_B, ROOT, SourceContract
from tests.servers.gnome_keyring import GnomeKeyring

pytestmark = pytest.mark.server

keyring_backend = pytest.importorskip("keyring.backend")
properties = pytest.importorskip("keyring.compat.properties")


class LowPriorityMemory(keyring_backend.KeyringBackend):
    """An in-memory backend of priority 0.5 (like keyrings.alt's plaintext file); viable only when enabled."""

    enabled = False
    store: dict = {}

    @properties.classproperty
    def priority(cls) -> float:
        if not cls.enabled:
            raise RuntimeError("disabled outside its test")
        return 0.5

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        self.store.pop((service, username), None)


def build(service: str = "kms-cli-test", **env):
    import os

    return kr.from_uri(f"keyring:{service}", SourceOptions(environ={**os.environ, **env}))


@pytest.fixture
def session_keyring(secret_service, clean_env, monkeypatch):
    for var, value in secret_service.env.items():
        monkeypatch.setenv(var, value)
    return secret_service


@pytest.fixture
def own_keyring(clean_env, monkeypatch, secret_service):
    """A keyring daemon of this test's own (it will be locked or broken)."""
    service = GnomeKeyring().start()
    for var, value in service.env.items():
        monkeypatch.setenv(var, value)
    yield service
    service.stop()


class TestKeyringContract(SourceContract):
    module = "kms_cli.providers.keyring"
    sdk_modules = ("keyring", "secretstorage", "jeepney")

    @pytest.fixture
    def source(self, session_keyring):
        return build()

    @pytest.fixture
    def denied(self, own_keyring):
        blob = build().wrap(ROOT, CTX_A)
        own_keyring.lock_all()
        return build(), blob


def test_the_keyring_item_holds_a_kek_not_the_root_key(session_keyring):
    import keyring.backends.SecretService as ss

    build("kms-cli-kek").wrap(ROOT, CTX_A)
    value = ss.Keyring().get_password("kms-cli-kek", CTX_A["kms-cli:vault"])
    assert value.startswith("kms-cli-kek:v1:")
    assert base64.b64decode(value.split(":", 2)[2]) != ROOT


def test_rewrapping_reuses_the_kek_so_old_slots_stay_open(session_keyring):
    source = build("kms-cli-reuse")
    old = source.wrap(ROOT, CTX_A)
    new = source.wrap(bytes(32), CTX_A)  # `master rotate` seals a new root key
    assert source.unwrap(old, CTX_A) == ROOT
    assert source.unwrap(new, CTX_A) == bytes(32)


def test_account_is_the_vault_id(session_keyring):
    import keyring.backends.SecretService as ss

    build("kms-cli-accounts").wrap(ROOT, CTX_B)
    assert ss.Keyring().get_password("kms-cli-accounts", CTX_B["kms-cli:vault"]) is not None
    assert ss.Keyring().get_password("kms-cli-accounts", CTX_A["kms-cli:vault"]) is None


def test_no_item_for_the_vault_is_not_found(session_keyring):
    blob = build("kms-cli-other-vault").wrap(ROOT, CTX_A)
    with pytest.raises(NotFoundError):
        build("kms-cli-other-vault").unwrap(blob, CTX_B)


def test_a_foreign_item_is_not_overwritten(session_keyring):
    import keyring.backends.SecretService as ss

    ss.Keyring().set_password("kms-cli-foreign", CTX_A["kms-cli:vault"], "someone else's password")
    with pytest.raises(StateError):
        build("kms-cli-foreign").wrap(ROOT, CTX_A)
    assert ss.Keyring().get_password("kms-cli-foreign", CTX_A["kms-cli:vault"]) == "someone else's password"


def test_locked_keyring_is_an_unlock_error_with_hint(own_keyring):
    blob = build().wrap(ROOT, CTX_A)
    own_keyring.lock_all()
    with pytest.raises(UnlockError, match="locked") as info:
        build().unwrap(blob, CTX_A)
    assert info.value.hint


def test_dismissed_prompt_is_a_clear_unlock_error(clean_env, monkeypatch, secret_service):
    service = GnomeKeyring(unlock=False).start()  # no login keyring: creating one needs a prompt
    try:
        for var, value in service.env.items():
            monkeypatch.setenv(var, value)
        with pytest.raises(UnlockError, match="prompt was dismissed"):
            build().wrap(ROOT, CTX_A)
    finally:
        service.stop()


def test_no_backend_at_all_is_unavailable(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    source = build()
    assert source.is_configured() is False
    with pytest.raises(UnavailableError, match="no OS keyring"):
        source.wrap(ROOT, CTX_A)


def test_fail_backend_named_explicitly_is_unavailable(clean_env):
    with pytest.raises(UnavailableError, match="no OS keyring"):
        build(PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring").wrap(ROOT, CTX_A)


def test_a_backend_that_keeps_nothing_is_refused(clean_env):
    with pytest.raises(UnavailableError, match="did not keep"):
        build(PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring").wrap(ROOT, CTX_A)


def test_unknown_backend_name_is_a_usage_error(clean_env):
    with pytest.raises(UsageError):
        build(PYTHON_KEYRING_BACKEND="no.such.Backend").wrap(ROOT, CTX_A)


def test_low_priority_backend_is_refused_unless_named(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monkeypatch.setattr(LowPriorityMemory, "enabled", True)
    monkeypatch.setattr(LowPriorityMemory, "store", {})
    with pytest.raises(UnavailableError, match="not a secure store") as info:
        build().wrap(ROOT, CTX_A)
    assert "PYTHON_KEYRING_BACKEND" in info.value.hint
    assert LowPriorityMemory.store == {}
    named = build(PYTHON_KEYRING_BACKEND=f"{__name__}.LowPriorityMemory")
    assert named.unwrap(named.wrap(ROOT, CTX_A), CTX_A) == ROOT


def test_uri_forms():
    assert kr.from_uri("keyring:", SourceOptions(environ={"X": "1"})).service == "kms-cli"
    assert kr.from_uri("keyring:team", SourceOptions(environ={"X": "1"})).uri == "keyring:team"
    with pytest.raises(UsageError):
        kr.from_uri("keyring:a\nb", SourceOptions())
    assert kr.account_for({"x": "y"}).startswith("ctx-")
