"""Namespaces (spec section 3) and the binding of stored rows to their name, version and vault."""

import shutil
import sqlite3

import pytest


def test_namespace_scopes_names(vault):
    vault.ok("--namespace", "acme/prod", "secret", "put", "db", input=b"prod-pw")
    vault.ok("--namespace", "acme/dev", "secret", "put", "db", input=b"dev-pw")
    assert vault.ok("--namespace", "acme/prod", "secret", "get", "db").out == b"prod-pw"
    assert vault.ok("secret", "get", "acme/dev/db").out == b"dev-pw"
    assert vault.ok("secret", "get", "db", env={"KMS_CLI_NAMESPACE": "acme/dev"}).out == b"dev-pw"
    names = [s["name"] for s in vault.ok("--namespace", "acme/prod", "--json", "secret", "list").json()]
    assert names == ["db"]
    assert vault("--namespace", "acme/prod", "secret", "get", "../dev/db").code == 2
    assert vault("--namespace", "acme", "secret", "get", "/acme/dev/db").code == 2


def test_outside_namespace_is_not_found(vault):
    vault.ok("secret", "put", "other/x", input=b"1")
    vault.ok("key", "create", "other/k")
    r = vault("--namespace", "acme", "secret", "get", "other/x")
    assert r.code == 3
    assert vault("--namespace", "acme", "key", "show", "other/k").code == 3
    assert vault.ok("--namespace", "acme", "--json", "key", "list").json() == []


def test_ciphertext_bound_to_namespace(vault):
    vault.ok("--namespace", "a", "key", "create", "k")
    ct = vault.ok("--namespace", "a", "encrypt", "--key", "k", input=b"x").out
    assert vault.ok("--namespace", "a", "decrypt", input=ct).out == b"x"
    assert vault("--namespace", "b", "decrypt", input=ct).code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_secret_row_moved_to_other_name_fails(vault):
    vault.ok("secret", "put", "a", input=b"value-a")
    vault.ok("secret", "put", "b", input=b"value-b")
    db = sqlite3.connect(vault.vault)
    blob = db.execute("SELECT value FROM secret_versions WHERE name='a'").fetchone()[0]
    db.execute("UPDATE secret_versions SET value=? WHERE name='b'", (blob,))
    db.commit()
    db.close()
    r = vault("secret", "get", "b")
    assert r.code == 5
    assert b"value-a" not in r.out


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_secret_row_moved_to_other_version_fails(vault):
    vault.ok("secret", "put", "s", input=b"v1")
    vault.ok("secret", "put", "s", input=b"v2")
    db = sqlite3.connect(vault.vault)
    blob = db.execute("SELECT value FROM secret_versions WHERE name='s' AND version=1").fetchone()[0]
    db.execute("UPDATE secret_versions SET value=? WHERE name='s' AND version=2", (blob,))
    db.commit()
    db.close()
    assert vault("secret", "get", "s").code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_key_material_moved_fails(vault):
    vault.ok("key", "create", "k1")
    vault.ok("key", "create", "k2")
    ct = vault.ok("encrypt", "--key", "k2", input=b"x").out
    db = sqlite3.connect(vault.vault)
    blob = db.execute("SELECT material FROM key_versions WHERE name='k1'").fetchone()[0]
    db.execute("UPDATE key_versions SET material=? WHERE name='k2'", (blob,))
    db.commit()
    db.close()
    assert vault("decrypt", input=ct).code == 5
    assert vault("encrypt", "--key", "k2", input=b"x").code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_row_copied_from_other_vault_fails(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"mine")
    other = dict(vault.env, KMS_CLI_VAULT=str(tmp_path / "other.db"))
    vault.ok("init", env=other)  # same master key, different vault id and root
    vault.ok("secret", "put", "s", input=b"theirs", env=other)
    src = sqlite3.connect(tmp_path / "other.db")
    blob = src.execute("SELECT value FROM secret_versions WHERE name='s'").fetchone()[0]
    src.close()
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE secret_versions SET value=? WHERE name='s'", (blob,))
    db.commit()
    db.close()
    assert vault("secret", "get", "s").code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_slot_copied_from_other_vault_fails(vault, tmp_path):
    other = dict(vault.env, KMS_CLI_VAULT=str(tmp_path / "other.db"))
    vault.ok("init", env=other)
    src = sqlite3.connect(tmp_path / "other.db")
    row = src.execute("SELECT blob, tag FROM slots WHERE id=1").fetchone()
    src.close()
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE slots SET blob=?, tag=? WHERE id=1", row)
    db.commit()
    db.close()
    r = vault("key", "list")
    assert r.code == 4


@pytest.mark.sqlite_only("copies the vault file")
def test_copied_vault_file_works_with_same_key(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"v")
    shutil.copy(vault.vault, tmp_path / "copy.db")
    assert vault.ok("secret", "get", "s", env={"KMS_CLI_VAULT": str(tmp_path / "copy.db")}).out == b"v"


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_secret_ttl_cannot_be_stretched_in_the_file(vault):
    vault.ok("secret", "put", "t", "--ttl", "1h", input=b"v")
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE secret_versions SET expires = expires + 86400 * 365 WHERE name='t'")
    db.commit()
    db.close()
    assert vault("secret", "get", "t").code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_key_state_cannot_be_edited_in_the_file(vault):
    vault.ok("key", "create", "k")
    ct = vault.ok("encrypt", "--key", "k", input=b"x").out
    vault.ok("key", "revoke", "k", "--reason", "compromised")
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE key_versions SET state='active', revoked=NULL WHERE name='k'")  # un-revoke behind our back
    db.commit()
    db.close()
    r = vault("decrypt", input=ct)
    assert r.code == 5 and "failed authentication" in r.err
    assert vault("encrypt", "--key", "k", input=b"x").code == 5


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_disabled_key_cannot_be_enabled_in_the_file(vault):
    vault.ok("key", "create", "k")
    vault.ok("key", "disable", "k")
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE keys SET state='active' WHERE name='k'")
    db.commit()
    db.close()
    assert vault("encrypt", "--key", "k", input=b"x").code == 5


def test_namespaces_differ_by_case_in_lists_and_exports(vault):
    """`app` and `APP` are two namespaces: listing or exporting one never shows the other's names."""
    vault.ok("secret", "put", "APP/x", input=b"theirs")
    vault.ok("secret", "put", "app/y", input=b"mine")
    vault.ok("key", "create", "APP/k")
    vault.ok("key", "create", "app/k2")
    assert [s["name"] for s in vault.ok("--namespace", "app", "--json", "secret", "list").json()] == ["y"]
    assert vault.ok("--namespace", "app", "secret", "export", "--format", "json").json() == {"y": "mine"}
    assert [k["name"] for k in vault.ok("--namespace", "app", "--json", "key", "list").json()] == ["k2"]
    assert [s["name"] for s in vault.ok("--json", "secret", "list").json()] == ["APP/x", "app/y"]


def test_lists_are_in_byte_order_whatever_the_database_collation(vault):
    """Names sort by their bytes, as on a file (uppercase first, punctuation by code point), also on a
    PostgreSQL database whose collation sorts otherwise (the test database's is ICU en-US)."""
    names = ["b", "a_b", "Z", "aB"]
    for n in names:
        vault.ok("secret", "put", n, input=b"v")
        vault.ok("key", "create", n)
        vault.ok("policy", "set", n, "--rotate-every", "encrypt=90d")
    want = sorted(names)  # code points: the bytes of UTF-8
    assert want == ["Z", "aB", "a_b", "b"]  # en-US: a_b, aB, b, Z
    assert [s["name"] for s in vault.ok("--json", "secret", "list").json()] == want
    assert list(vault.ok("secret", "export", "--format", "json").json()) == want
    assert [k["name"] for k in vault.ok("--json", "key", "list").json()] == want
    assert [p["namespace"] for p in vault.ok("--json", "policy", "show").json()] == want
