"""`restore --force` is crash-safe (issue 10, section 4): killed at any step of its swap, it leaves the old
or the new vault at the path, never none, and the next command finishes or rolls it back.

The kills use the documented test hook KMS_CLI_TEST_CRASH_AT=restore:<step> (the restoring process
SIGKILLs itself there); see kms_cli/vault/backup.py.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

# (step, the vault found at the path afterwards)
STEPS = [("journal", "old"), ("kept", "old"), ("wal", "old"), ("replaced", "new")]


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory)
                  if n.startswith(".kms-cli-") or ".bak-" in n or n.endswith(".restore-journal"))


@pytest.fixture
def two_states(vault):
    """A vault whose secret s is "current", and a backup b.db in which it is "backed-up"."""
    vault.ok("secret", "put", "s", input=b"backed-up")
    vault.ok("backup", "-o", "b.db")
    vault.ok("secret", "put", "s", input=b"current")
    return vault


@pytest.mark.parametrize("step,after", STEPS, ids=[s for s, _ in STEPS])
def test_restore_killed_at_each_step_leaves_a_vault_and_is_settled_by_the_next_command(two_states, tmp_path,
                                                                                       step, after):
    vault = two_states
    r = vault("restore", "b.db", "--force", env={"KMS_CLI_TEST_CRASH_AT": f"restore:{step}"})
    assert r.code == -signal.SIGKILL, r.err
    # at the path, on its own (no WAL beside it), a whole vault
    assert vault.vault.exists()
    db = sqlite3.connect(f"file:{vault.vault}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM meta WHERE k = 'vault_id'").fetchone() == (1,)
    db.close()
    expected = {"old": b"current", "new": b"backed-up"}[after]
    assert vault.ok("secret", "get", "s").out == expected  # the next command finished or rolled back
    assert leftovers(tmp_path) == []
    vault.ok("audit", "verify")
    # and nothing stands in the way of the next restore
    vault.ok("restore", "b.db", "--force")
    assert vault.ok("secret", "get", "s").out == b"backed-up"
    assert leftovers(tmp_path) == []


def test_restore_itself_settles_an_interrupted_restore_first(two_states, tmp_path):
    vault = two_states
    assert vault("restore", "b.db", "--force", env={"KMS_CLI_TEST_CRASH_AT": "restore:wal"}).code == -signal.SIGKILL
    assert (tmp_path / "vault.db.restore-journal").exists()
    vault.ok("restore", "b.db", "--force")
    assert vault.ok("secret", "get", "s").out == b"backed-up"
    assert leftovers(tmp_path) == []


def test_the_hint_for_a_vault_lost_by_an_older_restore_points_at_the_kept_copy(vault, tmp_path):
    """What an earlier kms-cli left when killed between its two renames: no vault, only the .bak."""
    vault.ok("secret", "put", "s", input=b"keep me")
    kept = tmp_path / "vault.db.bak-20260101T000000Z"
    db = sqlite3.connect(vault.vault)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.rename(vault.vault, kept)
    r = vault("secret", "get", "s")
    assert r.code == 3
    assert f"rename it to {vault.vault}" in r.err and str(kept) in r.err
    assert kept.exists()  # and nothing removed it
    os.rename(kept, vault.vault)
    assert vault.ok("secret", "get", "s").out == b"keep me"


def test_signal_during_the_checks_of_a_restore_changes_nothing(two_states, tmp_path):
    vault = two_states
    db = sqlite3.connect(tmp_path / "b.db", isolation_level=None)  # a large backup: copying it takes a while
    db.execute("CREATE TABLE ballast (b BLOB)")
    db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
               "INSERT INTO ballast SELECT zeroblob(1048576) FROM c")
    db.close()
    before = vault.vault.read_bytes()
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "restore", "b.db", "--force"], env=vault.env,
                         cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(n.startswith(".kms-cli-restore-") and os.path.getsize(tmp_path / n) > 0
                  for n in os.listdir(tmp_path)):
        assert p.poll() is None and time.monotonic() < deadline, "the restore ended before it could be signalled"
        time.sleep(0.005)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 128 + signal.SIGTERM, p.stderr.read().decode()
    assert leftovers(tmp_path) == []
    assert vault.vault.read_bytes() == before
    assert vault.ok("secret", "get", "s").out == b"current"
