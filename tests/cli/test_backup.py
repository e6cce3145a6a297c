"""`backup` and `restore` through the real CLI: consistency under writers, checks before replacing, --force."""

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import threading
import time

import pytest

from conftest import Kms, base_env

OTHER_KEY = "22" * 32


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".kms-cli-") or ".bak-" in n)


def ops(kms, **kw) -> list[dict]:
    return [json.loads(x) for x in kms.ok("audit", "export", **kw).out.splitlines()]


def test_backup_restore_round_trip(vault, tmp_path):
    vault.ok("key", "create", "k")
    ct = vault.ok("encrypt", "--key", "k", input=b"data").out
    vault.ok("secret", "put", "s", input=b"value")
    info = vault.ok("--json", "backup", "-o", "b.db").json()
    backup = tmp_path / "b.db"
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert info["head"] == 4 and info["file"] == "b.db"
    assert leftovers(tmp_path) == []
    entry = ops(vault)[-1]
    assert entry["op"] == "vault.backup" and entry["detail"] == {"head": 4}
    # sealed: a copy opens only with the vault's master key
    shutil.copy(backup, tmp_path / "copy.db")
    assert vault("--vault", "copy.db", "secret", "get", "s", env={"KMS_CLI_MASTER_KEY": OTHER_KEY}).code == 4
    assert vault.ok("--vault", "copy.db", "secret", "get", "s").out == b"value"
    env = {"KMS_CLI_VAULT": str(tmp_path / "new" / "vault.db")}
    # restore where no vault exists: no --force needed
    out = vault.ok("--json", "restore", str(backup), env=env).json()
    assert out["vault_id"] == info["vault_id"] and out["kept"] is None and out["entries"] == 4
    assert vault.ok("secret", "get", "s", env=env).out == b"value"
    assert vault.ok("decrypt", input=ct, env=env).out == b"data"
    restored = ops(vault, env=env)
    assert [e["op"] for e in restored[:5]] == ["vault.init", "key.create", "encrypt", "secret.put", "vault.restore"]
    assert restored[4]["detail"] == {"head": 4}
    vault.ok("audit", "verify", env=env)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "vault.db").st_mode) == 0o600


def test_restore_over_existing_needs_force_and_keeps_bak_until_next_command(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"old")
    vault.ok("backup", "-o", "b.db")
    vault.ok("secret", "put", "s", input=b"newer")
    before = digest(vault.vault)
    r = vault("restore", "b.db")
    assert r.code == 8 and "--force" in r.err
    assert digest(vault.vault) == before and leftovers(tmp_path) == []
    r = vault.ok("restore", "b.db", "--force")
    assert "kept as" in r.err
    baks = leftovers(tmp_path)
    assert len(baks) == 1 and baks[0].startswith("vault.db.bak-")
    assert digest(tmp_path / baks[0]) == before  # the old vault, WAL folded in, moved aside whole
    assert vault.ok("secret", "get", "s").out == b"old"
    assert leftovers(tmp_path) == []  # the next successful command deleted it
    vault.ok("audit", "verify")


def test_restore_of_another_vault_needs_force_and_says_so(vault, tmp_path):
    other = {"KMS_CLI_VAULT": str(tmp_path / "o.db")}
    vault.ok("init", env=other)
    vault.ok("backup", "-o", "other.db", env=other)
    assert vault("restore", "other.db").code == 8
    r = vault.ok("restore", "other.db", "--force")
    assert "another vault" in r.err


@pytest.fixture(scope="module")
def backup_template(tmp_path_factory):
    """A vault with a key and two secrets, and its backup: built once, copied by each test."""
    tmp = tmp_path_factory.mktemp("backup-template")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("key", "create", "k")
    kms.ok("secret", "put", "a", input=b"alpha")
    kms.ok("secret", "put", "b", input=b"beta")
    kms.ok("backup", "-o", "b.db")
    db = sqlite3.connect(kms.vault)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return tmp


@pytest.fixture
def backup_file(kms, tmp_path, backup_template):
    shutil.copy(backup_template / "vault.db", kms.vault)
    shutil.copy(backup_template / "b.db", tmp_path / "b.db")
    return tmp_path / "b.db"


def _refused(vault, tmp_path, path, code=5):
    before = digest(vault.vault)
    r = vault("restore", str(path), "--force")
    assert r.code == code, r.err
    assert digest(vault.vault) == before
    assert leftovers(tmp_path) == []
    assert vault.ok("secret", "get", "a").out == b"alpha"
    return r


def test_truncated_backup_is_refused(kms, tmp_path, backup_file):
    vault = kms
    data = backup_file.read_bytes()
    backup_file.write_bytes(data[: len(data) // 2])
    r = _refused(vault, tmp_path, backup_file)
    assert "refusing to restore" in r.err


def test_backup_with_a_flipped_byte_in_a_sealed_value_is_refused(kms, tmp_path, backup_file):
    vault = kms
    db = sqlite3.connect(backup_file, isolation_level=None)
    blob = bytearray(db.execute("SELECT value FROM secret_versions WHERE name = 'b'").fetchone()[0])
    blob[-5] ^= 1
    db.execute("UPDATE secret_versions SET value = ? WHERE name = 'b'", (bytes(blob),))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    r = _refused(vault, tmp_path, backup_file)
    assert "failed authentication" in r.err


def test_backup_with_a_broken_audit_chain_is_refused(kms, tmp_path, backup_file):
    vault = kms
    db = sqlite3.connect(backup_file, isolation_level=None)
    db.execute("DELETE FROM audit WHERE seq = 2")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    r = _refused(vault, tmp_path, backup_file)
    assert "seq 2: missing" in r.err


def test_foreign_and_garbage_backups_are_refused(kms, tmp_path, backup_file):
    vault = kms
    other = {"KMS_CLI_VAULT": str(tmp_path / "o.db"), "KMS_CLI_MASTER_KEY": OTHER_KEY}
    vault.ok("init", env=other)
    vault.ok("backup", "-o", "foreign.db", env=other)
    r = _refused(vault, tmp_path, tmp_path / "foreign.db")
    assert "not a backup this master key opens" in r.err
    (tmp_path / "junk.db").write_bytes(os.urandom(8192))
    _refused(vault, tmp_path, tmp_path / "junk.db")
    assert vault("restore", "nope.db", "--force").code == 3
    assert vault("restore", str(vault.vault), "--force").code == 2


def test_restore_refused_while_the_vault_is_in_use(kms, tmp_path, backup_file):
    vault = kms
    db = sqlite3.connect(vault.vault, isolation_level=None)
    db.execute("SELECT 1 FROM meta").fetchone()  # keeps the WAL alive after the next command
    vault.ok("secret", "put", "late", input=b"x")
    db.execute("BEGIN")
    db.execute("SELECT COUNT(*) FROM secrets").fetchone()  # a reader on the WAL
    try:
        r = vault("restore", str(backup_file), "--force")
    finally:
        db.execute("COMMIT")
        db.close()
    assert r.code == 7 and "in use" in r.err
    assert vault.ok("secret", "get", "late").out == b"x"
    assert leftovers(tmp_path) == []


def test_stale_wal_is_never_applied_to_the_restored_vault(kms, tmp_path, backup_file):
    vault = kms
    target = tmp_path / "fresh" / "vault.db"
    target.parent.mkdir()
    # a WAL with real frames, from some other database, lying where the new vault goes
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("PRAGMA wal_autocheckpoint = 0")
    other.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    other.execute("INSERT INTO meta VALUES ('vault_id', 'ffff')")
    (target.parent / "vault.db-wal").write_bytes((tmp_path / "x.db-wal").read_bytes())
    other.close()
    env = {"KMS_CLI_VAULT": str(target)}
    vault.ok("restore", str(backup_file), env=env)
    assert vault.ok("secret", "get", "b", env=env).out == b"beta"
    assert vault("health", env=env).code == 0


def test_backup_during_six_concurrent_writers_restores_consistently(vault, tmp_path):
    acked: list[tuple[str, float]] = []
    attempted: set[str] = set()
    errors: list[str] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"w{w}/s{i}"
            attempted.add(name)
            r = vault("secret", "put", name, input=f"value-{w}-{i}".encode())
            if r.code != 0:
                errors.append(r.err)
                return
            acked.append((name, time.monotonic()))
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        started = time.monotonic()
        before = {name for name, when in list(acked) if when < started}
        vault.ok("backup", "-o", "b.db")
        time.sleep(0.5)  # writers go on after the backup too
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(before) >= 6
    env = {"KMS_CLI_VAULT": str(tmp_path / "restored.db")}
    vault.ok("restore", "b.db", env=env)
    assert vault("health", env=env).code == 0  # integrity_check, slots, audit chain and head
    names = {s["name"] for s in vault.ok("--json", "secret", "list", env=env).json()}
    assert before <= names
    assert names <= attempted  # and nothing else
    for name in sorted(names)[:: max(1, len(names) // 5)]:
        w, i = name[1:].split("/s")
        assert vault.ok("secret", "get", name, env=env).out == f"value-{w}-{i}".encode()
    # every secret in the copy has its audit entry, and no entry lacks its secret
    puts = {e["target"] for e in ops(vault, env=env) if e["op"] == "secret.put"}
    assert puts == names


def test_restore_replaces_a_damaged_vault(kms, tmp_path, backup_file):
    vault = kms
    vault.vault.write_bytes(b"\0" * 4096)
    assert vault("secret", "get", "a").code == 5
    r = vault.ok("restore", str(backup_file), "--force")
    assert "kept as" in r.err
    assert vault.ok("secret", "get", "a").out == b"alpha"
