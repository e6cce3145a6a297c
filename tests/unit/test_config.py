import os

import platformdirs
import pytest

from kms_cli import config
from kms_cli.errors import UsageError


def test_dirs_match_platformdirs(monkeypatch, tmp_path):
    for env in ({}, {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}):
        for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert config.config_path(dict(os.environ)) == os.path.join(platformdirs.user_config_dir("kms-cli"), "config.toml")
        assert config.default_vault_path() == os.path.join(platformdirs.user_data_dir("kms-cli"), "vault.db")


def test_precedence_flag_env_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('vault = "/from/file"\nnamespace = "file-ns"\ntimeout = 3\n')
    env = {"KMS_CLI_CONFIG": str(cfg), "KMS_CLI_NAMESPACE": "env-ns"}
    s = config.resolve({"vault": "/from/flag"}, env)
    assert (s.vault, s.namespace, s.timeout, s.retries) == ("/from/flag", "env-ns", 3.0, 3)
    s = config.resolve({}, {"KMS_CLI_CONFIG": str(cfg)})
    assert (s.vault, s.namespace) == ("/from/file", "file-ns")


def test_bad_values(tmp_path):
    with pytest.raises(UsageError):
        config.resolve({}, {"KMS_CLI_TIMEOUT": "soon", "KMS_CLI_CONFIG": str(tmp_path / "none")})
    cfg = tmp_path / "bad.toml"
    cfg.write_text("not toml [")
    with pytest.raises(UsageError):
        config.resolve({}, {"KMS_CLI_CONFIG": str(cfg)})
