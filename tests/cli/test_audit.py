"""The audit log through the real CLI: every op and refusal, no values, tamper detection, filters, follow, prune."""

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from kmshelp import Kms, base_env

FIELDS = ["seq", "time", "actor", "op", "target", "version", "result", "error"]


def export(kms, *args, **kw) -> list[dict]:
    out = kms.ok("audit", "export", *args, **kw).out.decode()
    return [json.loads(line) for line in out.splitlines()]


def find(entries, op, **match):
    return [e for e in entries if e["op"] == op and all(e.get(k) == v for k, v in match.items())]


def test_every_operation_and_refusal_is_logged(vault):
    vault.ok("key", "create", "k")
    vault.ok("key", "rotate", "k")
    ct = vault.ok("encrypt", "--key", "k", input=b"plain").out
    assert vault.ok("decrypt", input=ct).out == b"plain"
    vault.ok("key", "revoke", "k", "--version", "1", "--reason", "test")
    assert vault("key", "rotate", "nope").code == 3
    vault.ok("secret", "put", "app/s", input=b"v1")
    vault.ok("secret", "get", "app/s")
    assert vault("secret", "get", "app/missing").code == 3
    vault.ok("secret", "put", "app/short", "--ttl", "1s", input=b"v")
    time.sleep(1.1)
    assert vault("secret", "get", "app/short").code == 6
    wrong = {"KMS_CLI_MASTER_KEY": "33" * 32}
    assert vault("secret", "get", "app/s", env=wrong).code == 4
    assert vault("secret", "get", "app/s", env=wrong).code == 4

    entries = export(vault)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    for e in entries:
        assert list(e)[:8] == FIELDS and list(e)[-2:] == ["prev", "mac"]
        assert set(e["actor"]) == {"user", "host", "pid", "ci"} and e["actor"]["ci"] is None
    ops = [(e["op"], e["target"], e["version"], e["result"], e["error"]) for e in entries]
    assert ops[:13] == [
        ("vault.init", None, None, "ok", None),
        ("key.create", "k", 1, "ok", None),
        ("key.rotate", "k", 2, "ok", None),
        ("encrypt", "k", 2, "ok", None),
        ("decrypt", "k", 2, "ok", None),
        ("key.revoke", "k", 1, "ok", None),
        ("key.rotate", "nope", None, "denied", "not_found"),
        ("secret.put", "app/s", 1, "ok", None),
        ("secret.get", "app/s", 1, "ok", None),
        ("secret.get", "app/missing", None, "denied", "not_found"),
        ("secret.put", "app/short", 1, "ok", None),
        ("secret.get", "app/short", 1, "denied", "forbidden"),
        ("unlock.failed", None, None, "denied", "unlock_failed"),
    ]
    folded = entries[12]
    assert folded["detail"]["count"] == 2 and folded["detail"]["slots"] == [1]
    assert folded["detail"]["first"] <= folded["detail"]["last"]
    assert len(entries) == 13  # the export's own entry follows its snapshot
    # folded once, before the entry of the command that unlocked next; not repeated after
    again = export(vault)
    assert again[13]["op"] == "audit.export" and len(find(again, "unlock.failed")) == 1


@pytest.mark.sqlite_only("reads the audit rows and bytes of the SQLite file")
def test_no_value_in_audit_rows_export_or_vault_file(vault, tmp_path):
    marker = b"MARKER-7d1e0b52-value"
    vault.ok("secret", "put", "db/password", input=marker)
    assert vault.ok("secret", "get", "db/password").out == marker
    vault.ok("--json", "secret", "get", "db/password")
    vault.ok("key", "create", "k")
    ct = vault.ok("encrypt", "--key", "k", input=marker).out
    vault.ok("decrypt", input=ct)
    vault.ok("exec", "--secret", "db/password=PW", "--", sys.executable, "-c", "pass")
    vault.ok("audit", "export", "-o", "audit.jsonl")
    exported = (tmp_path / "audit.jsonl").read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "audit.jsonl").st_mode) == 0o600
    assert b"db/password" in exported and marker not in exported
    assert marker.hex().encode() not in exported
    rows = sqlite3.connect(vault.vault).execute("SELECT entry, op, target, mac FROM audit").fetchall()
    assert rows and not any(marker.decode() in str(r) for r in rows)
    for suffix in ("", "-wal"):
        if os.path.exists(str(vault.vault) + suffix):
            assert marker not in open(str(vault.vault) + suffix, "rb").read()


def test_log_filters_human_and_json_lines(vault):
    vault.ok("secret", "put", "a/one", input=b"1")
    vault.ok("secret", "put", "a/two", input=b"2")
    vault.ok("secret", "get", "a/one")
    vault.ok("key", "create", "a/key")
    lines = vault.ok("--json", "audit", "log", "--op", "secret.put").out.decode().splitlines()
    assert [json.loads(x)["target"] for x in lines] == ["a/one", "a/two"]
    got = [json.loads(x) for x in vault.ok("--json", "audit", "log", "--target", "a/one").out.decode().splitlines()]
    assert [(e["op"], e["target"]) for e in got] == [("secret.put", "a/one"), ("secret.get", "a/one")]
    assert vault.ok("--json", "audit", "log", "--op", "secret.*", "--since", "1h").out.count(b"\n") == 3
    r = vault.ok("audit", "log", "--op", "nothing.matches")
    assert r.out == b"" and "no audit entries match" in r.err
    human = vault.ok("audit", "log").text.splitlines()
    assert human[0].split("\t")[:4] == ["SEQ", "TIME", "ACTOR", "OP"]
    assert any("\tkey.create\ta/key\t1\tok" in line for line in human)
    # the log is its own entry, with the filter as its target
    last = export(vault)[-2]
    assert (last["op"], last["result"]) == ("audit.log", "ok")
    # export has the same shape as --json
    logged = vault.ok("--json", "audit", "log").out.decode().splitlines()
    exported = vault.ok("audit", "export").out.decode().splitlines()
    assert logged == exported[: len(logged)]


def test_log_in_a_namespace_shows_nothing_outside_it(vault):
    vault.ok("secret", "put", "acme/prod/db", input=b"1")
    vault.ok("secret", "put", "other/x", input=b"2")
    vault.ok("--namespace", "acme/prod", "secret", "get", "db")
    got = [json.loads(x) for x in vault.ok("--json", "--namespace", "acme/prod", "audit", "log").out.splitlines()]
    assert [(e["op"], e["target"]) for e in got] == [("secret.put", "acme/prod/db"), ("secret.get", "acme/prod/db")]
    assert vault("--namespace", "acme", "audit", "prune", "--before", "1d").code == 2


def test_follow_prints_entries_as_they_land(vault):
    env = dict(vault.env)
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "--json", "audit", "log", "--follow"], env=env,
                         cwd=vault.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = json.loads(p.stdout.readline())
        assert first["op"] == "vault.init"
        vault.ok("secret", "put", "followed", input=b"x")
        line = json.loads(p.stdout.readline())  # the follower's own audit.log entry is not echoed
        assert (line["op"], line["target"]) == ("secret.put", "followed")
        vault.ok("key", "create", "k2")
        assert json.loads(p.stdout.readline())["op"] == "key.create"
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
            p.stdout.close()
            p.stderr.close()
    assert p.returncode == 0


def test_verify_counts_the_chain_before_its_own_entry(vault):
    vault.ok("secret", "put", "s", input=b"x")
    assert vault.ok("audit", "verify").text == "ok: 2 entries, chain and head intact\n"
    assert vault.ok("audit", "verify").text == "ok: 3 entries, chain and head intact\n"
    doc = vault.ok("--json", "audit", "verify").json()
    assert doc == {"ok": True, "entries": 4, "first_seq": 1, "last_seq": 4}
    assert [e["op"] for e in export(vault)][-3:] == ["audit.verify"] * 3


# -- tampering, each edited directly in SQLite -----------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A vault with seqs 1..6 (init, key create, put, get, get, key create), built once."""
    tmp = tmp_path_factory.mktemp("template")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("key", "create", "a")
    kms.ok("secret", "put", "s", input=b"value")
    kms.ok("secret", "get", "s")
    db = sqlite3.connect(kms.vault)
    head4 = db.execute("SELECT seq, mac, seal FROM audit_head").fetchone()
    db.close()
    kms.ok("secret", "get", "s")
    kms.ok("key", "create", "b")
    db = sqlite3.connect(kms.vault)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copies below take the main file only
    db.close()
    return kms.vault, head4


def _swap(db, a, b):
    cols = "entry, mac, op, target, time"
    ra = db.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (a,)).fetchone()
    rb = db.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (b,)).fetchone()
    db.execute("UPDATE audit SET entry = ?, mac = ?, op = ?, target = ?, time = ? WHERE seq = ?", (*rb, a))
    db.execute("UPDATE audit SET entry = ?, mac = ?, op = ?, target = ?, time = ? WHERE seq = ?", (*ra, b))


TAMPER = {
    "edited field": (lambda db, h: db.execute(
        "UPDATE audit SET entry = replace(entry, '\"op\":\"secret.get\"', '\"op\":\"secret.list\"') "
        "WHERE seq = 4"), 4, "altered"),
    "edited result": (lambda db, h: db.execute(
        "UPDATE audit SET entry = replace(entry, '\"result\":\"ok\"', '\"result\":\"denied\"') WHERE seq = 3"),
        3, "altered"),
    "deleted middle entry": (lambda db, h: db.execute("DELETE FROM audit WHERE seq = 3"), 3, "missing"),
    "swapped entries": (lambda db, h: _swap(db, 3, 4), 3, "reordered"),
    "deleted newest entries": (lambda db, h: db.execute("DELETE FROM audit WHERE seq >= 5"), 5, "truncated"),
    "replaced head": (lambda db, h: db.execute(
        "UPDATE audit_head SET mac = (SELECT mac FROM audit WHERE seq = 4), seq = 4"), 4, "head mismatch"),
    "stale sealed head": (lambda db, h: db.execute("UPDATE audit_head SET seq = ?, mac = ?, seal = ?", h),
                          5, "head mismatch"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_verify_catches_tampering(template, tmp_path, case):
    path, head4 = template
    edit, seq, kind = TAMPER[case]
    kms = Kms(tmp_path, base_env(tmp_path))
    shutil.copy(path, kms.vault)
    db = sqlite3.connect(kms.vault, isolation_level=None)
    edit(db, head4)
    db.close()
    r = kms("audit", "verify")
    assert r.code == 5, r.err
    assert f"audit chain broken at seq {seq}: {kind} (" in r.err


@pytest.mark.sqlite_only("edits the audit rows in the SQLite file")
def test_prune_keeps_a_verifiable_chain_and_tampering_after_it_is_caught(vault):
    for i in range(3):
        vault.ok("secret", "put", f"old{i}", input=b"x")
    time.sleep(2.1)  # times have one-second resolution: the old entries end a whole second before the cutoff
    vault.ok("secret", "put", "new", input=b"x")
    info = vault.ok("--json", "audit", "prune", "--before", "1s").json()
    assert info["pruned"] == 4 and info["checkpoint"] == 4  # init + three puts
    entries = export(vault)
    assert entries[0]["op"] == "audit.checkpoint" and entries[0]["seq"] == 4
    assert entries[0]["detail"]["pruned"] == 4
    assert [e["op"] for e in entries[1:]] == ["secret.put", "audit.prune"]
    assert entries[2]["detail"]["pruned"] == 4
    assert vault.ok("audit", "verify").text == "ok: 4 entries, chain and head intact (from the checkpoint at seq 4)\n"
    db = sqlite3.connect(vault.vault, isolation_level=None)
    db.execute("DELETE FROM audit WHERE seq = 5")
    db.close()
    r = vault("audit", "verify")
    assert r.code == 5 and "seq 5: missing" in r.err
    # a damaged chain is never pruned away
    r = vault("audit", "prune", "--before", "0s")
    assert r.code == 5
    assert sqlite3.connect(vault.vault).execute("SELECT MIN(seq) FROM audit").fetchone()[0] == 4
