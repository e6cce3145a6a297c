"""`env:VAR` through the source contract."""

from __future__ import annotations

import pytest

from kms_cli.errors import NotFoundError, UsageError
from kms_cli.providers import env
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, SourceContract

KEY = "11" * 32
WRONG = "22" * 32


def build(value: str | None = KEY, var: str = "KMS_CLI_MASTER_KEY"):
    environ = {"UNRELATED": "1"} if value is None else {var: value}
    return env.from_uri(f"env:{var}", SourceOptions(environ=environ))


class TestEnvContract(SourceContract):
    module = "kms_cli.providers.env"
    sdk_modules = ()

    @pytest.fixture
    def source(self):
        return build()

    @pytest.fixture
    def denied(self):
        return build(WRONG), build().wrap(ROOT, CTX_A)


def test_missing_variable_is_not_configured_and_not_found():
    source = build(None)
    assert source.is_configured() is False
    with pytest.raises(NotFoundError):
        source.wrap(ROOT, CTX_A)


def test_secret_env_var_is_the_variable():
    assert build(var="MY_KEY").secret_env_vars() == ["MY_KEY"]


def test_bad_key_text_is_a_usage_error():
    with pytest.raises(UsageError):
        build("not-a-key").wrap(ROOT, CTX_A)
