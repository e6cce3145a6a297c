"""Slots through the real CLI with the embedded sources (env, passphrase): add, list, remove, rotate, --unlock."""

import pytest

OTHER = "22" * 32


def test_add_list_remove_env_slots(vault):
    env2 = {"SECOND_KEY": OTHER}
    vault.ok("secret", "put", "s", input=b"v")
    info = vault.ok("--json", "master", "add", "env:SECOND_KEY", env=env2).json()
    assert info["slot"] == 2 and info["source"] == "env:SECOND_KEY"
    slots = vault.ok("--json", "master", "list", env=env2).json()
    assert [s["slot"] for s in slots] == [1, 2]
    assert {"slot", "source", "created", "last_used"} <= set(slots[0])
    # the second slot alone unlocks
    assert vault.ok("secret", "get", "s", env={"KMS_CLI_MASTER_KEY": None, **env2}).out == b"v"
    assert vault.ok("--unlock", "env:SECOND_KEY", "secret", "get", "s", env=env2).out == b"v"
    assert vault.ok("--unlock", "2", "secret", "get", "s", env=env2).out == b"v"
    # migration recipe: add the new source, remove the old one
    vault.ok("master", "remove", "1", env=env2)
    assert vault("secret", "get", "s").code == 4
    assert vault.ok("secret", "get", "s", env=env2).out == b"v"
    r = vault("master", "remove", "2", env=env2)
    assert r.code == 6 and "last slot" in r.err
    assert vault("master", "remove", "9", env=env2).code == 3
    assert vault("master", "remove", "x", env=env2).code == 2


def test_add_duplicate_source_exit_8(vault):
    assert vault("master", "add", "env:KMS_CLI_MASTER_KEY").code == 8


def test_passphrase_slot_added(vault):
    env = {"KMS_CLI_PASSPHRASE": "a long passphrase"}
    vault.ok("master", "add", "passphrase", env=env)
    vault.ok("secret", "put", "s", input=b"v")
    assert vault.ok("secret", "get", "s", env={"KMS_CLI_MASTER_KEY": None, **env}).out == b"v"
    r = vault("--json", "master", "list")
    assert "a long passphrase" not in r.text


def test_unlock_errors_name_each_slot(vault):
    vault.ok("master", "add", "env:SECOND_KEY", env={"SECOND_KEY": OTHER})
    r = vault("key", "list", env={"KMS_CLI_MASTER_KEY": "33" * 32, "SECOND_KEY": None})
    assert r.code == 4
    assert "slot 1" in r.err and "slot 2" in r.err
    assert "not configured" in r.err


def test_unlock_names_unknown_slot(vault):
    assert vault("--unlock", "env:NOPE", "key", "list").code == 3


@pytest.mark.sqlite_only("reads the slots table in the SQLite file")
def test_master_rotate_keeps_everything_usable(vault, tmp_path):
    env2 = {"SECOND_KEY": OTHER}
    vault.ok("master", "add", "env:SECOND_KEY", env=env2)
    vault.ok("key", "create", "k")
    vault.ok("key", "create", "c", "--algorithm", "chacha20-poly1305")
    ct1 = vault.ok("encrypt", "--key", "k", input=b"one").out
    ct2 = vault.ok("encrypt", "--key", "c", input=b"two").out
    vault.ok("secret", "put", "s", input=b"secret-value")
    import sqlite3

    before = sqlite3.connect(vault.vault).execute("SELECT blob FROM slots ORDER BY id").fetchall()
    counts = vault.ok("--json", "master", "rotate", env=env2).json()
    assert counts["slots"] == 2 and counts["key_versions"] == 2 and counts["secret_versions"] == 1
    after = sqlite3.connect(vault.vault).execute("SELECT blob FROM slots ORDER BY id").fetchall()
    assert before[0] != after[0] and before[1] != after[1]
    for env in ({}, {"KMS_CLI_MASTER_KEY": None, **env2}):
        assert vault.ok("decrypt", input=ct1, env=env).out == b"one"
        assert vault.ok("decrypt", input=ct2, env=env).out == b"two"
        assert vault.ok("secret", "get", "s", env=env).out == b"secret-value"
    vault.ok("audit", "verify")


def test_master_rotate_refuses_when_a_source_is_missing(vault):
    vault.ok("master", "add", "env:SECOND_KEY", env={"SECOND_KEY": OTHER})
    vault.ok("secret", "put", "s", input=b"v")
    r = vault("master", "rotate")  # SECOND_KEY not set: its slot cannot be resealed
    assert r.code != 0
    assert vault.ok("secret", "get", "s").out == b"v"
    assert vault.ok("secret", "get", "s", env={"KMS_CLI_MASTER_KEY": None, "SECOND_KEY": OTHER}).out == b"v"


def test_rotate_of_a_weak_passphrase_slot_needs_the_flag_it_names(tmp_path, kms):
    """A passphrase re-sealed by `master rotate` is a passphrase being set: the same strength rule
    as init and master add, and the same way past it."""
    path = str(tmp_path / "weak.db")
    env = {"KMS_CLI_VAULT": path, "KMS_CLI_PASSPHRASE": "kx9qz"}
    kms.ok("init", "--master-key", "passphrase", "--allow-weak-passphrase", env=env)
    r = kms("master", "rotate", env=env)
    assert r.code == 2 and "--allow-weak-passphrase" in r.err and "kx9qz" not in r.err
    out = kms.ok("master", "rotate", "--allow-weak-passphrase", env=env)
    assert "re-sealed 0 key versions, 0 secret versions and 1 slot" in out.err
