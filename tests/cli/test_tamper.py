"""Editing the vault file never resurrects or rolls back state (issue 10 §2-3).

An attacker with write access to the file edits rows with sqlite3; every command that would
use or rewrite an edited row refuses with exit 5, `health` names the edit, and `audit verify`
detects a log shorter than the state it vouches for.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest


def sql(kms, *statements, params=()):
    conn = sqlite3.connect(kms.vault)
    try:
        for st in statements:
            conn.execute(st, params)
        conn.commit()
    finally:
        conn.close()


def one(kms, query, params=()):
    conn = sqlite3.connect(kms.vault)
    try:
        return conn.execute(query, params).fetchone()
    finally:
        conn.close()


def health_fails(kms, *names):
    r = kms("--json", "health")
    assert r.code == 5, (r.code, r.err)
    failed = {c["name"]: c["detail"] for c in r.json()["checks"] if c["status"] == "fail"}
    for name in names:
        assert name in failed, failed
    return failed


# -- keys: a revoked version stays revoked --------------------------------------------------

def test_unrevoked_version_is_not_re_maced_by_a_later_revoke_or_rotation(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"under version 1")
    vault.ok("encrypt", "--key", "k", "-i", tmp_path / "p", "-o", tmp_path / "c1")
    vault.ok("key", "rotate", "k")
    vault.ok("key", "revoke", "k", "--version", "1", "--reason", "leaked")
    assert vault("decrypt", "-i", tmp_path / "c1").code == 6
    sql(vault, "UPDATE key_versions SET state = 'decrypt-only', revoked = NULL WHERE name = 'k' AND version = 1")
    # caught on use
    assert vault("decrypt", "-i", tmp_path / "c1").code == 5
    # and never laundered: neither revoking another version nor a master rotation re-MACs it
    r = vault("key", "revoke", "k", "--version", "2", "--reason", "x")
    assert r.code == 5 and "failed authentication" in r.err
    assert vault("master", "rotate").code == 5
    assert vault("decrypt", "-i", tmp_path / "c1").code == 5
    assert "key" in " ".join(health_fails(vault, "vault.rows").values())


@pytest.mark.parametrize("edit", [
    "UPDATE keys SET state = 'active' WHERE name = 'k'",                   # re-enable a disabled key
    "UPDATE keys SET primary_version = 1 WHERE name = 'k'",                # roll the primary back
    "UPDATE keys SET rotate_every = NULL, next_rotation = NULL WHERE name = 'k'",
    "UPDATE key_versions SET grace_until = NULL WHERE name = 'k'",
    "UPDATE key_versions SET seq = 1 WHERE name = 'k' AND version = 2",
    "DELETE FROM key_versions WHERE name = 'k' AND version = 1",
])
def test_edited_key_rows_fail_on_use_and_in_health(vault, edit):
    vault.ok("key", "create", "k", "--rotate-every", "90d")
    vault.ok("key", "rotate", "k", "--grace", "30d")
    vault.ok("key", "disable", "k")
    sql(vault, edit)
    assert vault("key", "show", "k").code == 5
    assert vault("key", "enable", "k").code == 5
    health_fails(vault, "vault.rows")


# -- secrets: the head cannot be rolled back, a deleted secret cannot come back ---------------

def test_secret_head_rolled_back_is_refused(vault):
    vault.ok("secret", "put", "s", input=b"old")
    vault.ok("secret", "put", "s", input=b"new")
    sql(vault, "UPDATE secrets SET last_version = 1")
    r = vault("secret", "get", "s")
    assert r.code == 5 and r.out == b""
    assert vault("secret", "put", "s", input=b"newer").code == 5  # not re-MACed either
    health_fails(vault, "vault.rows")


def test_deleted_secret_cannot_be_resurrected(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"gone")
    backup = tmp_path / "before-rm.db"
    vault.ok("backup", "-o", backup)
    vault.ok("secret", "rm", "s")
    # put the old version rows back and the old head (a row that once was authentic)
    sql(vault, f"ATTACH '{backup}' AS old", "INSERT INTO secret_versions SELECT * FROM old.secret_versions",
        "DELETE FROM secrets", "INSERT INTO secrets SELECT * FROM old.secrets")
    r = vault("secret", "get", "s")
    assert r.code == 5 and r.out == b"" and "older copy" in r.err
    assert vault("secret", "put", "s", input=b"x").code == 5
    health_fails(vault, "vault.rows")


@pytest.mark.parametrize("edit", [
    "UPDATE secrets SET deleted = 1",
    "UPDATE secrets SET seq = 1",
    "UPDATE secret_versions SET tags = '{\"env\":\"prod\"}'",
    "UPDATE secret_versions SET expires = NULL",
    "UPDATE secret_versions SET created = 0",
])
def test_edited_secret_rows_fail(vault, edit):
    vault.ok("secret", "put", "s", "--ttl", "30d", "--tag", "env=dev", input=b"v")
    sql(vault, edit)
    assert vault("secret", "get", "s").code in (3, 5) if "deleted" in edit else vault("secret", "get", "s").code == 5
    health_fails(vault, "vault.rows")


# -- slots: a removed slot cannot be put back --------------------------------------------------

def test_removed_slot_put_back_is_refused(vault, tmp_path):
    second = {"SECOND": "22" * 32}
    vault.ok("master", "add", "env:SECOND", env=second)
    backup = tmp_path / "two-slots.db"
    vault.ok("backup", "-o", backup)
    vault.ok("master", "remove", "2", env=second)
    sql(vault, f"ATTACH '{backup}' AS old", "INSERT INTO slots SELECT * FROM old.slots WHERE id = 2")
    r = vault("--unlock", "env:SECOND", "secret", "list", env=second)
    assert r.code == 5 and "slots" in r.err
    assert vault("secret", "list").code == 5


def test_tampered_slot_is_an_integrity_failure_in_health(vault):
    vault.ok("master", "add", "env:SECOND", env={"SECOND": "22" * 32})
    sql(vault, "UPDATE slots SET blob = zeroblob(length(blob)) WHERE id = 2")
    failed = health_fails(vault, "slot.2")
    assert "authentication" in failed["slot.2"]


def test_flipped_vault_id_and_invalid_head_bytes_are_exit_5(vault):
    sql(vault, "UPDATE meta SET v = 'zz' || substr(v, 3) WHERE k = 'vault_id'")
    assert vault("secret", "list").code == 5
    assert vault("health").code == 5


def test_invalid_byte_in_audit_head_is_exit_5(vault):
    vault.ok("secret", "put", "s", input=b"v")
    sql(vault, "UPDATE audit_head SET mac = CAST(x'ff00' AS TEXT)")
    r = vault("audit", "verify")
    assert r.code == 5 and "internal error" not in r.err
    assert vault("health").code == 5


# -- the audit log cannot be emptied, cut or swapped for an older copy --------------------------

def test_emptied_audit_log_is_detected(vault):
    vault.ok("secret", "put", "s", input=b"v")
    sql(vault, "DELETE FROM audit", "DELETE FROM audit_head")
    r = vault("audit", "verify")
    assert r.code == 5 and "truncated" in r.err
    health_fails(vault, "audit.chain")


def test_older_audit_tables_copied_in_are_detected(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"v1")
    backup = tmp_path / "old.db"
    vault.ok("backup", "-o", backup)
    vault.ok("secret", "put", "s", input=b"v2")
    vault.ok("key", "create", "k")
    sql(vault, f"ATTACH '{backup}' AS old", "DELETE FROM audit", "INSERT INTO audit SELECT * FROM old.audit",
        "DELETE FROM audit_head", "INSERT INTO audit_head SELECT * FROM old.audit_head")
    r = vault("audit", "verify")
    assert r.code == 5 and "truncated" in r.err and "older log" in r.err


# -- the audit is fail-closed: no plaintext before the entry is durable ------------------------

@pytest.mark.parametrize("damage", [
    "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END",
    "UPDATE audit_head SET seal = CAST(x'ff' AS TEXT)",
])
def test_decrypt_to_stdout_prints_nothing_without_its_entry(vault, tmp_path, damage):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"top secret plaintext")
    vault.ok("encrypt", "--key", "k", "-i", tmp_path / "p", "-o", tmp_path / "c")
    sql(vault, damage)
    r = vault("decrypt", "-i", tmp_path / "c")
    assert r.code != 0 and b"top secret" not in r.out and r.out == b""


def test_a_stream_that_fails_after_its_entry_records_the_failure(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"x" * 100_000)
    vault.ok("encrypt", "--key", "k", "-i", tmp_path / "p", "-o", tmp_path / "c")
    data = bytearray((tmp_path / "c").read_bytes())
    data[-100] ^= 1
    (tmp_path / "c").write_bytes(bytes(data))
    assert vault("decrypt", "-i", tmp_path / "c", "-o", tmp_path / "out").code == 5
    entries = [e for e in vault.ok("--json", "audit", "log", "--op", "decrypt").json_lines()]
    assert [e["result"] for e in entries][-2:] == ["ok", "error"]
    assert entries[-1]["error"] == "integrity"


def test_audit_verify_reports_damage_while_another_process_writes(vault):
    import subprocess
    import sys

    for i in range(50):
        vault.ok("secret", "put", f"s{i}", input=b"v")
    sql(vault, "UPDATE audit SET target = 'x' WHERE seq = 10")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, time, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE'); c.execute(\"INSERT INTO meta VALUES ('busy', '1')\")\n"
        "time.sleep(3); c.execute('ROLLBACK')\n"), str(vault.vault)])
    try:
        import time

        time.sleep(0.5)
        r = vault("audit", "verify", timeout=30)
        assert r.code == 5 and "seq 10" in r.err, (r.code, r.err)
    finally:
        writer.wait()


# -- health names every edit: one field flip at a time, every state column ---------------------

FLIPS = [(t, c) for t, cols in {
    "keys": ("name", "algorithm", "state", "state_before", "description", "labels", "rotate_every", "next_rotation",
             "primary_version", "created", "updated", "destroy_at", "mac", "seq"),
    "key_versions": ("version", "state", "material", "public", "fingerprint", "created", "superseded",
                     "grace_until", "revoked", "revoke_reason", "destroyed", "mac", "seq"),
    "secrets": ("name", "last_version", "deleted", "created", "updated", "mac", "seq"),
    "secret_versions": ("version", "value", "created", "expires", "tags", "mac", "seq"),
    "slots": ("id", "uri", "blob", "tag", "label"),
}.items() for c in cols] + [("meta", k) for k in ("vault_id", "slots_mac", "slots_seq", "auth")]


def _flip(kms, table: str, column: str) -> None:
    conn = sqlite3.connect(kms.vault)
    try:
        if table == "meta":
            (v,) = conn.execute("SELECT v FROM meta WHERE k = ?", (column,)).fetchone()
            new = ("0" if v[0] != "0" else "1") + v[1:]
            conn.execute("UPDATE meta SET v = ? WHERE k = ?", (new, column))
        else:
            rowid, value = conn.execute(f"SELECT rowid, {column} FROM {table} ORDER BY rowid DESC LIMIT 1").fetchone()
            if value is None:
                new = 1
            elif isinstance(value, bytes):
                new = bytes([value[0] ^ 1]) + value[1:]
            elif isinstance(value, (int, float)):
                new = value + 1
            else:
                new = value + "x" if column != "state" else ("disabled" if value == "active" else "active")
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (new, rowid))
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    from kmshelp import Kms, base_env

    tmp = tmp_path_factory.mktemp("populated")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("master", "add", "env:SECOND", env={"SECOND": "22" * 32})
    kms.ok("key", "create", "k", "--rotate-every", "90d", "--description", "d", "--label", "a=b")
    kms.ok("key", "create", "sig", "--algorithm", "ed25519")
    kms.ok("key", "rotate", "k", "--grace", "30d")
    kms.ok("key", "revoke", "k", "--version", "1", "--reason", "old")
    kms.ok("secret", "put", "s", "--ttl", "30d", "--tag", "t=1", input=b"v")
    kms.ok("health")
    return kms


@pytest.mark.parametrize("table,column", FLIPS, ids=[f"{t}.{c}" for t, c in FLIPS])
def test_health_reports_every_field_flip(populated, tmp_path, table, column):
    from kmshelp import Kms

    shutil.copy(populated.vault, tmp_path / "vault.db")
    kms = Kms(tmp_path, {**populated.env, "KMS_CLI_VAULT": str(tmp_path / "vault.db"),
                         "SECOND": "22" * 32})
    _flip(kms, table, column)
    r = kms("--json", "health")
    if (table, column) == ("meta", "vault_id"):
        # another valid vault id: every slot is sealed to the real one, so no source opens it and
        # nothing keyless can tell that from a wrong master key (an invalid id is exit 5: above)
        assert r.code in (4, 5), r.err
        return
    assert r.code == 5, (table, column, r.code, r.err)
