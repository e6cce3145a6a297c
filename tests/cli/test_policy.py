"""Rotation policies through the real CLI (spec section 9): set/show/rm, inheritance by the nearest
enclosing namespace, `key rotate --due` by policy with its grace, health, tampering."""

from __future__ import annotations

import sqlite3
import time

import pytest


def test_set_show_rm_shapes_and_merge(vault):
    p = vault.ok("--json", "policy", "set", "app", "--rotate-every", "encrypt=90d", "--grace", "30d").json()
    assert p == {"namespace": "app", "rotate_every": {"encrypt": "P90D"}, "grace": "P30D"}
    # a later set replaces the purposes it names and keeps the others
    p = vault.ok("--json", "policy", "set", "app", "--rotate-every", "sign=365d").json()
    assert p == {"namespace": "app", "rotate_every": {"encrypt": "P90D", "sign": "P365D"}, "grace": "P30D"}
    vault.ok("policy", "set", "app/prod", "--rotate-every", "encrypt=30d")
    assert [x["namespace"] for x in vault.ok("--json", "policy", "show").json()] == ["app", "app/prod"]
    assert vault.ok("--json", "policy", "show", "app/prod").json()["grace"] is None
    assert "app: encrypt every P90D, sign every P365D" in vault.ok("policy", "show").text
    assert vault.ok("--json", "policy", "rm", "app/prod").json()["removed"]["namespace"] == "app/prod"
    assert vault("policy", "show", "app/prod").code == 3
    assert vault("policy", "rm", "app/prod").code == 3
    entries = [(e["op"], e["result"]) for e in vault.ok("--json", "audit", "log").json_lines()]
    assert entries.count(("policy.set", "ok")) == 3 and entries.count(("policy.rm", "ok")) == 1
    assert ("policy.rm", "denied") in entries  # the refused one is recorded too


def test_bad_input_is_a_usage_error(vault):
    for args in (["--rotate-every", "decrypt=1d"], ["--rotate-every", "encrypt"], ["--rotate-every", "encrypt=0s"],
                 ["--rotate-every", "encrypt=1d", "--rotate-every", "encrypt=2d"], []):
        r = vault("policy", "set", "app", *args)
        assert r.code == 2 and r.err.startswith("kms-cli: error:"), (args, r.err)
    assert vault("policy", "set", "a//b", "--grace", "1d").code == 2


def test_keys_take_the_nearest_enclosing_policy(vault):
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=90d", "--rotate-every", "sign=365d")
    vault.ok("policy", "set", "app/prod", "--rotate-every", "encrypt=30d")
    vault.ok("key", "create", "app/prod/db")
    vault.ok("key", "create", "app/prod/release", "--algorithm", "ed25519")
    vault.ok("key", "create", "app/dev/db")
    vault.ok("key", "create", "other/db")
    vault.ok("key", "create", "app/prod/own", "--rotate-every", "7d")
    show = {n: vault.ok("--json", "key", "show", n).json() for n in
            ("app/prod/db", "app/prod/release", "app/dev/db", "other/db", "app/prod/own")}
    assert (show["app/prod/db"]["rotate_every"], show["app/prod/db"]["rotation_policy"]) == ("P30D", "app/prod")
    # app/prod has no sign schedule: the nearest policy that has one is app's
    assert (show["app/prod/release"]["rotate_every"], show["app/prod/release"]["rotation_policy"]) == ("P365D", "app")
    assert show["app/dev/db"]["rotate_every"] == "P90D"
    assert show["other/db"]["rotate_every"] is None and show["other/db"]["next_rotation"] is None
    assert (show["app/prod/own"]["rotate_every"], show["app/prod/own"]["rotation_policy"]) == ("P7D", None)


def test_rotate_due_by_policy_gives_the_policys_grace(vault):
    vault.ok("key", "create", "app/db")
    vault.ok("key", "create", "app/other", "--rotate-every", "1000d")
    vault.ok("key", "create", "elsewhere/db")
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=1s", "--grace", "30d")
    time.sleep(1.2)
    dry = vault.ok("--json", "key", "rotate", "--due", "--dry-run").json()
    assert dry == [{"action": "rotate", "name": "app/db", "version": 2, "policy": "app", "grace": "P30D"}]
    assert vault.ok("--json", "key", "show", "app/db").json()["primary_version"] == 1  # nothing changed
    assert "would rotate app/db to version 2 (policy app" in vault.ok("key", "rotate", "--due", "--dry-run").text
    r = vault.ok("key", "rotate", "--due")
    assert r.text == "rotated app/db to version 2 (policy app, old versions decrypt for P30D)\n"
    k = vault.ok("--json", "key", "show", "app/db").json()
    assert k["primary_version"] == 2 and k["versions"][0]["grace_until"] is not None
    entry = [e for e in vault.ok("--json", "audit", "log", "--op", "key.rotate").json_lines()][-1]
    assert entry["target"] == "app/db" and entry["detail"]["policy"] == "app" and entry["detail"]["grace"] == 30 * 86400
    assert vault.ok("--json", "key", "rotate", "--due").json() == []  # the next period starts from version 2


@pytest.mark.sqlite_only("reads the keys table in the SQLite file")
def test_rotate_due_reports_destructions(vault):
    vault.ok("key", "create", "gone")
    vault.ok("key", "destroy", "gone", "--after", "1s")
    time.sleep(1.2)
    assert vault.ok("--json", "key", "rotate", "--due", "--dry-run").json() == [{"action": "destroy", "name": "gone"}]
    # a dry run changes nothing (read the file: any other command carries out a due destruction first)
    db = sqlite3.connect(vault.vault)
    assert db.execute("SELECT state FROM keys WHERE name = 'gone'").fetchone()[0] == "destroy-scheduled"
    db.close()
    assert vault.ok("--json", "key", "rotate", "--due").json() == [{"action": "destroy", "name": "gone"}]
    assert vault.ok("--json", "key", "show", "gone").json()["state"] == "destroyed"


def test_health_warns_about_keys_overdue_by_policy(vault):
    vault.ok("key", "create", "app/db")
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=1s")
    time.sleep(1.2)
    r = vault("health")
    assert r.code == 10 and "app/db (policy app)" in r.out.decode()
    vault.ok("key", "rotate", "--due")
    assert vault("health").code == 0


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_an_edited_policy_row_is_refused_and_health_fails(vault):
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=90d", "--grace", "30d")
    db = sqlite3.connect(vault.vault)
    db.execute("UPDATE policies SET grace = 1")  # a shorter grace, written outside kms-cli
    db.commit()
    r = vault("policy", "show", "app")
    assert r.code == 5 and "failed authentication" in r.err
    assert vault("key", "create", "app/db").code == 5  # key show reads the policies
    h = vault("--json", "health")
    assert h.code == 5 and any(c["name"] == "vault.rows" and c["status"] == "fail" for c in h.json()["checks"])


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_a_removed_policy_put_back_is_refused(vault):
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=90d")
    db = sqlite3.connect(vault.vault)
    row = db.execute("SELECT * FROM policies").fetchone()
    db.close()
    vault.ok("policy", "rm", "app")
    db = sqlite3.connect(vault.vault)
    db.execute("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    db.commit()
    r = vault("policy", "show", "app")
    assert r.code == 5 and "older copy" in r.err


def test_master_rotate_keeps_policies_valid(vault):
    vault.ok("policy", "set", "app", "--rotate-every", "encrypt=90d")
    vault.ok("master", "rotate")
    assert vault.ok("--json", "policy", "show", "app").json()["rotate_every"] == {"encrypt": "P90D"}
    assert vault.ok("audit", "verify").code == 0


def test_namespaced_policy_is_relative(vault):
    vault.ok("--namespace", "acme", "policy", "set", "prod", "--rotate-every", "encrypt=30d")
    assert vault.ok("--json", "policy", "show", "acme/prod").json()["rotate_every"] == {"encrypt": "P30D"}
    assert [p["namespace"] for p in vault.ok("--namespace", "acme", "--json", "policy", "show").json()] == ["prod"]
    vault.ok("--namespace", "acme", "key", "create", "prod/db")
    assert vault.ok("--namespace", "acme", "--json", "key", "show", "prod/db").json()["rotate_every"] == "P30D"
