"""`token create|list|revoke` through the real CLI (spec section 10): printed once, stored as a keyed
hash only, authenticated rows, audited, kept valid across `master rotate`."""

from __future__ import annotations

import sqlite3

import pytest


def test_create_prints_the_token_once_and_stores_only_a_hash(vault):
    r = vault.ok("token", "create", "billing", "--allow", "decrypt,encrypt", "--namespace", "app", "--ttl", "90d")
    token = r.text.strip()
    assert token.startswith("kms.") and len(token) == 4 + 43
    assert "shown once" in r.err and token not in r.err
    listing = vault.ok("--json", "token", "list").json()
    assert listing == [{**listing[0], "name": "billing", "allow": ["encrypt", "decrypt"], "namespace": "app",
                        "state": "active", "last_used": None, "revoked": None}]
    raw = vault.vault.read_bytes()
    assert token.encode() not in raw and token[4:].encode() not in raw
    assert token not in vault.ok("--json", "audit", "log").text
    entry = [e for e in vault.ok("--json", "audit", "log").json_lines() if e["op"] == "token.create"][0]
    assert entry["target"] == "token:billing" and entry["detail"]["allow"] == ["encrypt", "decrypt"]
    assert vault("token", "create", "billing").code == 8


def test_defaults_ops_namespace_and_bad_input(vault):
    info = vault.ok("--json", "--namespace", "team", "token", "create", "t1").json()
    assert "secret.write" not in info["allow"] and "key.rotate" not in info["allow"] and "decrypt" in info["allow"]
    assert info["namespace"] == "team" and info["token"].startswith("kms.")
    for bad in (["--allow", "root"], ["--ttl", "soon"], ["--ttl", "0s"], ["--namespace", "../x"]):
        r = vault("token", "create", "t2", *bad)
        assert r.code == 2 and "Traceback" not in r.err, bad
    assert vault("token", "create", "bad name").code == 2
    assert vault("token", "revoke", "nobody").code == 3


def test_revoke_and_rotation_keep_rows_authenticated(vault):
    vault.ok("token", "create", "a")
    vault.ok("token", "create", "b")
    vault.ok("token", "revoke", "a")
    states = {t["name"]: t["state"] for t in vault.ok("--json", "token", "list").json()}
    assert states == {"a": "revoked", "b": "active"}
    vault.ok("master", "rotate")
    assert {t["name"]: t["state"] for t in vault.ok("--json", "token", "list").json()} == states
    assert vault.ok("audit", "verify").code == 0


@pytest.mark.parametrize("edit", [
    "UPDATE tokens SET revoked = NULL WHERE name = 'a'",          # un-revoke
    "UPDATE tokens SET ops = ops || ',secret.write' WHERE name = 'b'",  # grant more
    "UPDATE tokens SET namespace = '' WHERE name = 'b'",           # widen
    "UPDATE tokens SET expires = expires + 86400 WHERE name = 'b'",  # extend
])
def test_an_edited_token_row_is_refused(vault, edit):
    vault.ok("token", "create", "a")
    vault.ok("token", "create", "b", "--namespace", "app")
    vault.ok("token", "revoke", "a")
    conn = sqlite3.connect(vault.vault)
    conn.execute(edit)
    conn.commit()
    conn.close()
    r = vault("token", "list")
    assert r.code == 5 and "failed authentication" in r.err
