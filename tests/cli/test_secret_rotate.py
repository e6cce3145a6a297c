"""`secret rotate` through the real CLI: generated values, schedules, outside programs, tampering."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import string
import time

import pytest


def _script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.sqlite_only("generated values: the same on both engines")
def test_generated_values_by_charset(vault):
    vault.ok("secret", "put", "s", input=b"old")
    vault.ok("secret", "rotate", "s")
    v = vault.ok("secret", "get", "s").out.decode()
    assert len(v) == 32 and set(v) <= set(string.ascii_letters + string.digits)
    vault.ok("secret", "rotate", "s", "--charset", "hex", "--length", "64")
    v = vault.ok("secret", "get", "s").out.decode()
    assert len(v) == 64 and set(v) <= set("0123456789abcdef")
    vault.ok("secret", "rotate", "s", "--charset", "base64", "--length", "24")
    assert len(base64.b64decode(vault.ok("secret", "get", "s").out, validate=True)) == 24
    vault.ok("secret", "rotate", "s", "--charset", "ascii", "--length", "200")
    v = vault.ok("secret", "get", "s").out.decode()
    assert len(v) == 200 and " " not in v and all(33 <= ord(c) <= 126 for c in v)
    # the generator is remembered: a plain rotate makes the same kind of value
    vault.ok("secret", "rotate", "s")
    assert len(vault.ok("secret", "get", "s").out) == 200
    assert [h["version"] for h in vault.ok("--json", "secret", "history", "s").json()] == [1, 2, 3, 4, 5, 6]
    values = {vault.ok("secret", "get", "s", "--version", str(n)).out for n in range(1, 7)}
    assert len(values) == 6
    assert vault("secret", "rotate", "s", "--length", "5000").code == 2
    assert vault("secret", "rotate", "missing").code == 3


def test_rotation_keeps_tags_and_the_ttl_length(vault):
    vault.ok("secret", "put", "s", "--tag", "team=web", "--ttl", "30d", input=b"old")
    vault.ok("secret", "rotate", "s")
    latest = vault.ok("--json", "secret", "history", "s").json()[-1]
    assert latest["tags"] == {"team": "web"}
    assert latest["expires"] is not None


def test_due_rotates_only_what_is_due(vault):
    vault.ok("secret", "put", "fast", "--rotate-every", "1s", input=b"a")
    vault.ok("secret", "put", "slow", "--rotate-every", "100d", input=b"b")
    vault.ok("secret", "put", "never", input=b"c")
    time.sleep(1.2)
    assert vault.ok("--json", "secret", "rotate", "--due", "--dry-run").json() == [{"name": "fast", "action": "rotate"}]
    assert vault.ok("secret", "get", "fast").out == b"a"
    r = vault.ok("secret", "rotate", "--due")
    assert r.text == "rotated fast to version 2 (generated)\n"
    assert vault.ok("secret", "get", "fast").out != b"a" and vault.ok("secret", "get", "slow").out == b"b"
    assert vault.ok("--json", "secret", "rotate", "--due").json() == []  # the schedule restarted
    assert vault("secret", "rotate", "--due", "fast").code == 2
    # secret put with a new value restarts the schedule too; put without --rotate-every keeps it
    time.sleep(1.2)
    vault.ok("secret", "put", "fast", input=b"manual")
    assert vault.ok("--json", "secret", "rotate", "--due").json() == []


def test_an_outside_program_rotates_it(vault, tmp_path):
    seen = tmp_path / "stdin-seen"
    program = _script(tmp_path, "rotate-db.sh", f'cat > "{seen}"; printf "new-db-password\\n"\n')
    vault.ok("secret", "put", "db", "--rotate-with", f"{program} --user app", "--rotate-every", "1s", input=b"old-pw")
    time.sleep(1.2)
    r = vault.ok("secret", "rotate", "--due")
    assert r.text == "rotated db to version 2 (by its program)\n"
    assert seen.read_bytes() == b"old-pw"  # the old value on its stdin
    assert vault.ok("secret", "get", "db").out == b"new-db-password"  # one trailing newline dropped
    # no shell: a ; in --rotate-with is an argument, not a second command
    marker = tmp_path / "pwned"
    vault.ok("secret", "put", "x", "--rotate-with", f"{program} ; touch {marker}", input=b"v")
    vault.ok("secret", "rotate", "x")
    assert not marker.exists()
    # a generator asked for explicitly wins over the program
    vault.ok("secret", "rotate", "db", "--charset", "hex", "--length", "8")
    assert len(vault.ok("secret", "get", "db").out) == 8


def test_a_failing_program_leaves_the_secret_unchanged(vault, tmp_path):
    failing = _script(tmp_path, "fail.sh", "cat >/dev/null; echo oops >&2; exit 3\n")
    vault.ok("secret", "put", "db", "--rotate-with", failing, "--rotate-every", "1s", input=b"keep")
    vault.ok("secret", "put", "other", "--rotate-every", "1s", input=b"o")
    r = vault("secret", "rotate", "db")
    assert r.code == 7 and "exited with status 3" in r.err and "unchanged" in r.err
    assert vault.ok("secret", "get", "db").out == b"keep"
    time.sleep(1.2)
    r = vault("--json", "secret", "rotate", "--due")
    assert r.code == 7
    actions = {a["name"]: a for a in r.json()}
    assert actions["db"]["exit"] == 7 and "error" in actions["db"]
    assert actions["other"]["version"] == 2  # one failure does not stop the others
    assert vault.ok("secret", "get", "db").out == b"keep"
    entries = [(e["op"], e["target"], e["result"]) for e in vault.ok("--json", "audit", "log").json_lines()]
    assert ("secret.rotate", "db", "error") in entries and ("secret.rotate", "other", "ok") in entries
    missing = "/nonexistent/rotate"
    vault.ok("secret", "put", "y", "--rotate-with", missing, input=b"v")
    r = vault("secret", "rotate", "y")
    assert r.code == 7 and "not found" in r.err


def test_bad_rotate_with_is_a_usage_error(vault):
    assert vault("secret", "put", "s", "--rotate-with", "'unclosed", input=b"v").code == 2
    assert vault("secret", "put", "s", "--rotate-every", "0s", input=b"v").code == 2


@pytest.mark.sqlite_only("edits rows in the SQLite file")
def test_an_edited_rotation_is_refused(vault):
    vault.ok("secret", "put", "s", "--rotate-every", "30d", input=b"v")
    db = sqlite3.connect(vault.vault)
    rotation = db.execute("SELECT rotation FROM secrets WHERE name = 's'").fetchone()[0]
    db.execute("UPDATE secrets SET rotation = ?", (rotation.replace('"every":2592000', '"every":1'),))
    db.commit()
    db.close()
    r = vault("secret", "get", "s")
    assert r.code == 5 and "failed authentication" in r.err
    assert vault("health").code == 5


@pytest.mark.sqlite_only("reads rows in the SQLite file")
def test_a_secret_without_rotation_keeps_its_pre_rotation_mac(vault):
    """Heads written before schema 4 have no rotation: their MAC is computed as before."""
    vault.ok("secret", "put", "s", input=b"v")
    db = sqlite3.connect(vault.vault)
    assert db.execute("SELECT rotation FROM secrets").fetchone()[0] is None
    db.close()
    assert vault.ok("secret", "get", "s").out == b"v"
    assert os.path.exists(vault.vault)
