"""Key lifecycle through the real CLI: create, list, show, rotate, revoke, disable, destroy."""

import sqlite3
import time

import pytest


def test_create_show_json_shape(vault):
    k = vault.ok("--json", "key", "create", "app/db", "--description", "db key", "--label", "team=core").json()
    assert k["name"] == "app/db" and k["algorithm"] == "aes-256-gcm" and k["state"] == "active"
    s = vault.ok("key", "show", "app/db", "--json").json()
    assert [v["version"] for v in s["versions"]] == [1]
    assert s["versions"][0]["state"] == "active" and s["versions"][0]["created"].endswith("Z")
    assert s["labels"] == {"team": "core"} and s["description"] == "db key"
    assert "material" not in str(s)


def test_list_json_has_no_versions(vault):
    vault.ok("key", "create", "a")
    vault.ok("key", "create", "b", "--algorithm", "chacha20-poly1305")
    items = vault.ok("--json", "key", "list").json()
    assert [i["name"] for i in items] == ["a", "b"]
    assert all("versions" not in i for i in items)
    assert items[1]["algorithm"] == "chacha20-poly1305"


def test_human_list_and_show(vault):
    vault.ok("key", "create", "a")
    assert "a" in vault.ok("key", "list").text
    out = vault.ok("key", "show", "a").text
    assert "aes-256-gcm" in out and "active" in out


def test_unknown_algorithm_lists_accepted(vault):
    r = vault("key", "create", "x", "--algorithm", "des")
    assert r.code == 2
    assert "aes-256-gcm" in r.err and "chacha20-poly1305" in r.err


def test_duplicate_key_exit_8(vault):
    vault.ok("key", "create", "a")
    assert vault("key", "create", "a").code == 8


def test_missing_key_exit_3(vault):
    assert vault("key", "show", "nope").code == 3
    assert vault("key", "rotate", "nope").code == 3


def test_invalid_names_exit_2(vault):
    for bad in ("../x", "/abs", "a//b", "a/./b", "sp ace", "x" * 300):
        r = vault("key", "create", bad)
        assert r.code == 2, bad


def test_rotate_keeps_old_versions_decrypting(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"hello")
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c1")
    k = vault.ok("--json", "key", "rotate", "k").json()
    assert k["primary_version"] == 2
    states = [v["state"] for v in k["versions"]]
    assert states == ["decrypt-only", "active"]
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c2")
    assert vault.ok("decrypt", "-i", "c1").out == b"hello"
    assert vault.ok("decrypt", "-i", "c2").out == b"hello"


def test_rotate_with_grace_expires_old_version(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"x")
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c1")
    vault.ok("key", "rotate", "k", "--grace", "2s")
    assert vault.ok("decrypt", "-i", "c1").out == b"x"
    time.sleep(2.2)
    r = vault("decrypt", "-i", "c1")
    assert r.code == 6 and "grace" in r.err
    s = vault.ok("--json", "key", "show", "k").json()
    assert s["versions"][0]["state"] == "expired"


def test_rotate_compromise_revokes_old(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"x")
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c1")
    vault.ok("key", "rotate", "k")
    vault.ok("key", "rotate", "k", "--reason", "compromise")
    s = vault.ok("--json", "key", "show", "k").json()
    assert [v["state"] for v in s["versions"]] == ["revoked", "revoked", "active"]
    assert vault("decrypt", "-i", "c1").code == 6


def test_rewrap_moves_to_current_version(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"data" * 10000)
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c1")
    vault.ok("key", "rotate", "k", "--grace", "1h")
    vault.ok("rewrap", "-i", "c1", "-o", "c2")
    vault.ok("key", "revoke", "k", "--version", "1", "--reason", "retired")
    assert vault("decrypt", "-i", "c1").code == 6
    assert vault.ok("decrypt", "-i", "c2").out == b"data" * 10000


def test_revoke_all_versions(vault, tmp_path):
    vault.ok("key", "create", "k")
    r = vault("key", "revoke", "k")
    assert r.code == 2 and "--reason" in r.err
    vault.ok("key", "revoke", "k", "--reason", "leaked")
    s = vault.ok("--json", "key", "show", "k").json()
    assert s["state"] == "revoked" and s["versions"][0]["revoke_reason"] == "leaked"
    (tmp_path / "p").write_bytes(b"x")
    assert vault("encrypt", "--key", "k", "-i", "p").code == 6
    assert vault("key", "revoke", "k", "--version", "9", "--reason", "x").code == 3


def test_disable_enable(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"x")
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c")
    vault.ok("key", "disable", "k")
    assert vault("encrypt", "--key", "k", "-i", "p").code == 6
    assert vault("decrypt", "-i", "c").code == 6
    vault.ok("key", "enable", "k")
    assert vault.ok("decrypt", "-i", "c").out == b"x"


@pytest.mark.sqlite_only("reads key_versions in the SQLite file")
def test_destroy_window_and_cancel(vault, tmp_path):
    vault.ok("key", "create", "k")
    (tmp_path / "p").write_bytes(b"x")
    vault.ok("encrypt", "--key", "k", "-i", "p", "-o", "c")
    s = vault.ok("--json", "key", "destroy", "k").json()
    assert s["state"] == "destroy-scheduled" and s["destroy_at"]
    assert vault("decrypt", "-i", "c").code == 6
    vault.ok("key", "cancel-destroy", "k")
    assert vault.ok("decrypt", "-i", "c").out == b"x"
    vault.ok("key", "destroy", "k", "--after", "1s")
    time.sleep(1.2)
    s = vault.ok("--json", "key", "show", "k").json()
    assert s["state"] == "destroyed"
    assert all(v["state"] == "destroyed" for v in s["versions"])
    assert vault("decrypt", "-i", "c").code == 6
    assert vault("key", "cancel-destroy", "k").code == 6
    db = sqlite3.connect(vault.vault)
    assert db.execute("SELECT COUNT(*) FROM key_versions WHERE material IS NOT NULL").fetchone()[0] == 0


def test_rotate_due(vault):
    vault.ok("key", "create", "sched", "--rotate-every", "1s")
    vault.ok("key", "create", "manual")
    time.sleep(1.2)
    r = vault.ok("key", "rotate", "--due")
    assert "sched" in r.text and "manual" not in r.text
    assert vault.ok("--json", "key", "show", "sched").json()["primary_version"] == 2
    assert vault.ok("--json", "key", "rotate", "--due").json() == []


def test_iso_duration_accepted(vault):
    k = vault.ok("--json", "key", "create", "k", "--rotate-every", "P90D").json()
    assert k["rotate_every"] == "P90D"
    assert vault("key", "create", "j", "--rotate-every", "soon").code == 2
