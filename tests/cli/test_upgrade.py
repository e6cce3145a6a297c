"""A vault written by the previous kms-cli (schema 1, no row seqs or secret MACs) upgrades once,
at its first unlock, after its key rows verify under their old MACs."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


def _legacy(kms):
    shutil.copy(DATA / "legacy-schema1.db", kms.vault)
    kms.vault.chmod(0o600)


def test_legacy_vault_upgrades_and_keeps_everything(kms):
    _legacy(kms)
    assert kms.ok("secret", "get", "app/db").out == b"v2"
    assert kms.ok("secret", "get", "app/db", "--version", "1").out == b"old-value"
    assert kms.ok("decrypt", "-i", DATA / "legacy-schema1.ct").out == b"hello\n"
    show = kms.ok("--json", "key", "show", "k").json()
    assert [v["state"] for v in show["versions"]] == ["revoked", "active"]
    ops = [e["op"] for e in kms.ok("--json", "audit", "log").json_lines()]
    assert ops.count("vault.upgrade") == 1
    kms.ok("audit", "verify")
    kms.ok("health")
    conn = sqlite3.connect(kms.vault)
    assert conn.execute("SELECT v FROM meta WHERE k = 'auth'").fetchone()[0] == "2"
    conn.close()


def test_legacy_vault_with_an_edited_key_row_does_not_upgrade(kms):
    _legacy(kms)
    conn = sqlite3.connect(kms.vault)
    conn.execute("UPDATE key_versions SET state = 'active', revoked = NULL WHERE version = 1")
    conn.commit()
    conn.close()
    r = kms("secret", "get", "app/db")
    assert r.code == 5 and "failed authentication" in r.err


def test_removing_the_auth_marker_of_an_upgraded_vault_is_refused(kms):
    _legacy(kms)
    kms.ok("secret", "get", "app/db")
    conn = sqlite3.connect(kms.vault)
    conn.execute("DELETE FROM meta WHERE k = 'auth'")
    conn.execute("UPDATE secrets SET last_version = 1")
    conn.commit()
    conn.close()
    assert kms("secret", "get", "app/db").code == 5
