"""`init`, `master generate`, `--version` and the unlock errors, through the real CLI."""

import os
import re
import stat

import pytest

from kmshelp import MASTER_KEY


@pytest.mark.sqlite_only("never opens the vault: the same on both engines")
def test_version(kms):
    r = kms.ok("--version")
    assert re.fullmatch(r"kms-cli \d+\.\d+\.\d+\n", r.text)


@pytest.mark.sqlite_only("checks the vault file's mode")
def test_init_creates_private_vault(kms):
    r = kms.ok("init")
    assert "created vault" in r.err
    for suffix in ("", "-wal", "-shm"):
        p = str(kms.vault) + suffix
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_init_json(kms):
    doc = kms.ok("--json", "init").json()
    assert re.fullmatch(r"[0-9a-f]{32}", doc["vault_id"])
    assert doc["source"] == "env:KMS_CLI_MASTER_KEY"


def test_init_refuses_existing_vault(vault):
    r = vault("init")
    assert r.code == 8
    assert r.err.startswith("kms-cli: error: a vault already exists")
    assert "--force" in r.err
    vault.ok("init", "--force")


def test_missing_master_key_points_to_generate(kms):
    r = kms("init", env={"KMS_CLI_MASTER_KEY": None})
    assert r.code in (3, 4)
    assert "master generate" in r.err
    assert "Traceback" not in r.err


def test_malformed_master_key_is_usage_error(kms):
    r = kms("init", env={"KMS_CLI_MASTER_KEY": "not-a-key"})
    assert r.code == 2
    assert "not-a-key" not in r.err


def test_master_generate(kms):
    a = kms.ok("master", "generate").text.strip()
    b = kms.ok("master", "generate").text.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", a) and a != b
    kms.ok("init", env={"KMS_CLI_MASTER_KEY": a})
    kms.ok("key", "list", env={"KMS_CLI_MASTER_KEY": a})


def test_base64_master_key_accepted(kms):
    import base64

    key = base64.b64encode(bytes.fromhex(MASTER_KEY)).decode()
    kms.ok("init", env={"KMS_CLI_MASTER_KEY": key})
    kms.ok("key", "list")  # the same 32 bytes in hex opens it


def test_wrong_master_key_exit_4_names_slot(vault):
    r = vault("key", "list", env={"KMS_CLI_MASTER_KEY": "22" * 32})
    assert r.code == 4
    assert "slot 1" in r.err
    assert "22" * 8 not in r.err and MASTER_KEY[:16] not in r.err
    assert len([l for l in r.err.splitlines() if l.startswith("kms-cli: error:")]) == 1


def test_no_vault_is_not_found(kms):
    r = kms("key", "list")
    assert r.code == 3
    assert "kms-cli init" in r.err


def test_passphrase_slot(kms, tmp_path):
    env = {"KMS_CLI_PASSPHRASE": "correct horse battery staple"}
    kms.ok("init", "--master-key", "passphrase", env=env)
    kms.ok("key", "create", "k", env=env)
    pf = tmp_path / "pass.txt"
    pf.write_text("correct horse battery staple\n")
    kms.ok("--passphrase-file", str(pf), "key", "show", "k", env={"KMS_CLI_PASSPHRASE": None})
    r = kms("key", "list", env={"KMS_CLI_PASSPHRASE": "wrong"})
    assert r.code == 4
    assert "slot 1" in r.err and "wrong" not in r.err.split("slot 1")[0]
    assert "correct horse" not in r.err


def test_unknown_source_is_usage_error(kms):
    r = kms("init", "--master-key", "nope:thing")
    assert r.code == 2
    assert "unknown master key source" in r.err


@pytest.mark.sqlite_only("never opens the vault: the same on both engines")
def test_help_works_and_lists_commands(kms):
    r = kms.ok("--help")
    for word in ("init", "key", "secret", "encrypt", "decrypt"):
        assert word in r.text
    r = kms.ok("secret", "--help")
    assert "put" in r.text


@pytest.mark.sqlite_only("never opens the vault: the same on both engines")
def test_unknown_command_exit_2(kms):
    r = kms("frobnicate")
    assert r.code == 2
    assert r.err.startswith("kms-cli: error: unknown command")
