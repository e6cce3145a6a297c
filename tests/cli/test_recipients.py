"""Recipient slots (spec section 7) through the real CLI: age X25519, the post-quantum hybrid and
ssh-ed25519 recipients; identities from --identity, KMS_CLI_IDENTITY and config.toml; interop with
the Debian `age`/`age-keygen` and `ssh-keygen` binaries."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess

import pytest

NO_KEY = {"KMS_CLI_MASTER_KEY": None}
needs_age = pytest.mark.skipif(shutil.which("age") is None or shutil.which("age-keygen") is None,
                               reason="the age and age-keygen binaries are not installed")
needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")


def _identity(vault, path, *extra) -> str:
    return vault.ok("identity", "generate", *extra, "-o", str(path)).text.strip()


def test_identity_generate(vault, tmp_path):
    path = tmp_path / "id.txt"
    recipient = _identity(vault, path)
    assert recipient.startswith("age1") and not recipient.startswith("age1pq1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert f"# public key: {recipient}" in text and "AGE-SECRET-KEY-1" in text
    before = path.read_bytes()
    r = vault("identity", "generate", "-o", str(path))
    assert r.code == 8 and path.read_bytes() == before
    r = vault.ok("identity", "generate")  # to stdout, the recipient on stderr (as age-keygen)
    assert r.out.startswith(b"# created: ") and "recipient: age1" in r.err
    assert _identity(vault, tmp_path / "pq.txt", "--pq").startswith("age1pq1")


def test_a_teammate_opens_the_vault_with_an_identity(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"shared")
    alice = tmp_path / "alice.txt"
    vault.ok("master", "add", _identity(vault, alice))
    listing = vault.ok("master", "list").text
    assert "age1" in listing
    assert vault.ok("--identity", str(alice), "secret", "get", "s", env=NO_KEY).out == b"shared"
    assert vault.ok("secret", "get", "s", env={**NO_KEY, "KMS_CLI_IDENTITY": str(alice)}).out == b"shared"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'identity = ["{alice}"]\n')
    assert vault.ok("secret", "get", "s", env={**NO_KEY, "KMS_CLI_CONFIG": str(cfg)}).out == b"shared"


def test_the_post_quantum_hybrid_recipient(vault, tmp_path):
    vault.ok("secret", "put", "s", input=b"pq")
    pq = tmp_path / "pq.txt"
    vault.ok("master", "add", _identity(vault, pq, "--pq"))
    assert vault.ok("--identity", str(pq), "secret", "get", "s", env=NO_KEY).out == b"pq"


def test_no_matching_identity_is_exit_4_naming_what_was_tried(vault, tmp_path):
    vault.ok("master", "add", _identity(vault, tmp_path / "alice.txt"))
    bob = tmp_path / "bob.txt"
    _identity(vault, bob)
    r = vault("--identity", str(bob), "secret", "list", env=NO_KEY)
    assert r.code == 4 and str(bob) in r.err and "age1" in r.err
    assert "AGE-SECRET-KEY" not in r.err


def test_bad_recipients_and_identities(vault, tmp_path):
    for bad in ("age1notvalid", "ssh-rsa AAAAB3NzaC1yc2E", "ssh-ed25519 !!!", "age1pq1xyz"):
        r = vault("master", "add", bad)
        assert r.code == 2 and r.err.startswith("kms-cli: error:") and "Traceback" not in r.err, bad
    vault.ok("master", "add", _identity(vault, tmp_path / "alice.txt"))
    r = vault("--identity", str(tmp_path), "secret", "list", env=NO_KEY)
    assert r.code == 2 and "is a directory" in r.err
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("# comment\nAGE-SECRET-KEY-1BROKEN\n")
    r = vault("--identity", str(garbage), "secret", "list", env=NO_KEY)
    assert r.code == 2 and "line 2" in r.err and "BROKEN" not in r.err
    truncated = tmp_path / "trunc.txt"
    truncated.write_text((tmp_path / "alice.txt").read_text()[:-20])
    assert vault("--identity", str(truncated), "secret", "list", env=NO_KEY).code == 2
    r = vault("--identity", str(tmp_path / "missing.txt"), "secret", "list", env=NO_KEY)
    assert r.code == 2 and "no identity file" in r.err


def test_an_identity_file_others_can_read_is_warned_about(vault, tmp_path):
    alice = tmp_path / "alice.txt"
    vault.ok("master", "add", _identity(vault, alice))
    alice.chmod(0o644)
    r = vault.ok("--identity", str(alice), "secret", "list", env=NO_KEY)
    assert "readable by other users" in r.err


@needs_age
@pytest.mark.sqlite_only("reads a slot's blob from the SQLite file")
def test_interop_with_age_binaries(vault, tmp_path):
    """An identity made by age-keygen opens a recipient slot; a slot is an age file that `age -d`
    reads with the identity; what `age -r` encrypts to a kms-cli identity opens with it."""
    keyfile = tmp_path / "agekey.txt"
    subprocess.run(["age-keygen", "-o", str(keyfile)], check=True, capture_output=True)
    keyfile.chmod(0o600)
    recipient = subprocess.run(["age-keygen", "-y", str(keyfile)], check=True, capture_output=True, text=True).stdout.strip()
    vault.ok("secret", "put", "s", input=b"v")
    vault.ok("master", "add", recipient)
    assert vault.ok("--identity", str(keyfile), "secret", "get", "s", env=NO_KEY).out == b"v"
    db = sqlite3.connect(vault.vault)
    blob = db.execute("SELECT blob FROM slots WHERE uri = ?", (recipient,)).fetchone()[0]
    db.close()
    (tmp_path / "slot.age").write_bytes(blob)
    root = subprocess.run(["age", "-d", "-i", str(keyfile), str(tmp_path / "slot.age")], check=True,
                          capture_output=True).stdout
    assert len(root) == 32
    ours = tmp_path / "ours.txt"
    ours_recipient = _identity(vault, ours)
    enc = subprocess.run(["age", "-r", ours_recipient], input=b"from age", check=True, capture_output=True).stdout
    dec = subprocess.run(["age", "-d", "-i", str(ours)], input=enc, check=True, capture_output=True).stdout
    assert dec == b"from age"  # age itself reads the identity file kms-cli wrote
    vault.ok("master", "add", ours_recipient)
    assert vault.ok("--identity", str(ours), "secret", "get", "s", env=NO_KEY).out == b"v"


@needs_ssh
def test_ssh_ed25519_recipients_and_protected_keys(vault, tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-C", "alice@laptop", "-f", str(key)],
                   check=True)
    vault.ok("secret", "put", "s", input=b"ssh")
    vault.ok("master", "add", (tmp_path / "id_ed25519.pub").read_text())
    assert "alice@laptop" in vault.ok("master", "list").text
    ok = vault("--identity", str(key), "secret", "get", "s", env={**NO_KEY, "KMS_CLI_IDENTITY_PASSPHRASE": "correct horse"})
    if ok.code == 2 and "bcrypt" in ok.err:
        pytest.skip("bcrypt (the ssh extra) is not installed")
    assert ok.code == 0 and ok.out == b"ssh"
    r = vault("--identity", str(key), "secret", "get", "s", env={**NO_KEY, "KMS_CLI_IDENTITY_PASSPHRASE": "wrong"})
    assert r.code == 4 and "Traceback" not in r.err
    r = vault("--identity", str(key), "secret", "get", "s", env=NO_KEY)
    assert r.code == 4 and "KMS_CLI_IDENTITY_PASSPHRASE" in r.err


def test_unlock_hands_a_recipient_vault_to_the_agent(vault, tmp_path):
    alice = tmp_path / "alice.txt"
    vault.ok("secret", "put", "s", input=b"agent")
    vault.ok("master", "add", _identity(vault, alice))
    vault.ok("--identity", str(alice), "unlock", env=NO_KEY)
    try:
        assert vault.ok("secret", "get", "s", env=NO_KEY).out == b"agent"  # no identity needed now
    finally:
        vault.ok("agent", "stop")
    if vault.backend == "sqlite":
        assert os.path.exists(vault.vault)


@pytest.mark.sqlite_only("keeps a copy of the vault file")
def test_remove_with_rotate_shuts_out_the_removed_holder(vault, tmp_path):
    """`master remove SLOT --rotate`: the slot goes and the root key changes in one transaction.
    The removed holder's copy of the old slot (or the root key it unsealed) opens nothing new."""
    alice = tmp_path / "alice.txt"
    vault.ok("master", "add", _identity(vault, alice))
    vault.ok("secret", "put", "s", input=b"before")
    stolen = tmp_path / "stolen.db"
    stolen.write_bytes(open(vault.vault, "rb").read())  # what alice could have kept: the whole file
    r = vault.ok("master", "remove", "2")
    assert "master rotate" in r.err  # without --rotate: the hint
    sid = vault.ok("--json", "master", "add", alice.read_text().split("# public key: ")[1].split()[0]).json()["slot"]
    r = vault.ok("--json", "master", "remove", str(sid), "--rotate")
    assert r.json()["slot"] == sid and r.json()["rotated"]["slots"] == 1
    vault.ok("secret", "put", "s", input=b"after")
    assert vault("--identity", str(alice), "secret", "get", "s", env=NO_KEY).code == 4
    # the old file alice kept opens with her identity, but the current vault's rows are sealed anew
    env = {**NO_KEY, "KMS_CLI_VAULT": str(stolen)}
    assert vault.ok("--identity", str(alice), "secret", "get", "s", env=env).out == b"before"
    assert vault.ok("audit", "verify").code == 0
    entries = [(e["op"], e["target"]) for e in vault.ok("--json", "audit", "log").json_lines()]
    assert ("master.remove", str(sid)) in entries
    assert [s["slot"] for s in vault.ok("--json", "master", "list").json()] == [1]
    assert vault("master", "remove", "1", "--rotate").code == 6  # never the last slot


def test_a_recipients_file_adds_every_line_or_none(vault, tmp_path):
    alice, bob = tmp_path / "alice.txt", tmp_path / "bob.txt"
    ra, rb = _identity(vault, alice), _identity(vault, bob)
    good = tmp_path / "team.txt"
    good.write_bytes(("\ufeff# the team\r\n" + ra + "\r\n\r\n" + rb + "  # bob\r\n").encode().replace(
        b"  # bob", b""))
    vault.ok("secret", "put", "s", input=b"team")
    added = vault.ok("--json", "master", "add", "--recipients-file", str(good)).json()
    assert [a["source"] for a in added] == [ra, rb]
    for who in (alice, bob):
        assert vault.ok("--identity", str(who), "secret", "get", "s", env=NO_KEY).out == b"team"
    slots_before = vault.ok("--json", "master", "list").json()
    bad = tmp_path / "bad.txt"
    carol = _identity(vault, tmp_path / "carol.txt")
    bad.write_text(f"{carol}\nnot-a-recipient\n")
    r = vault("master", "add", "-R", str(bad))
    assert r.code == 2 and "line 2" in r.err
    assert vault.ok("--json", "master", "list").json() == slots_before  # nothing added
    assert vault("master", "add", "-R", str(good)).code == 8  # already there: none added
    assert vault("master", "add").code == 2
    entries = [e["op"] for e in vault.ok("--json", "audit", "log").json_lines()]
    assert entries.count("master.add") == 2 and "master.add-recipients" in entries


@needs_ssh
def test_a_control_character_in_an_ssh_comment_is_refused(vault, tmp_path):
    """A source is shown as it is (master list, audit entries, messages): an ssh-ed25519 line whose
    comment holds a NUL or an escape sequence is exit 2 on every backend (PostgreSQL text cannot
    even hold a NUL), and nothing is added."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "x", "-f", str(tmp_path / "id")], check=True)
    kind, key = (tmp_path / "id.pub").read_text().split()[:2]
    slots = lambda: [(s["slot"], s["source"]) for s in vault.ok("--json", "master", "list").json()]  # noqa: E731
    before = slots()
    for comment in ("al\x00ice", "\x1b[2Jbob", "carol\x7f"):
        team = tmp_path / "team.txt"
        team.write_bytes(f"# team\n{kind} {key} {comment}\n".encode())
        r = vault("master", "add", "-R", str(team))
        assert r.code == 2 and "line 2" in r.err and "control character" in r.err, (comment, r.err)
        assert "\x1b" not in r.err and "\x00" not in r.err
    r = vault("master", "add", f"{kind} {key} eve\x1b]0;owned\x07")
    assert r.code == 2 and "control character" in r.err and "\x1b" not in r.err
    assert slots() == before == [(1, "env:KMS_CLI_MASTER_KEY")]


@pytest.mark.sqlite_only("edits the slots table in the SQLite file")
def test_labels_name_who_holds_each_slot(vault, tmp_path):
    """`master add --label`: for every kind of slot, listed, audited on add and remove, covered by
    the slot-set MAC (an edited label is refused at unlock); a recipients file's comment labels."""
    ra = _identity(vault, tmp_path / "alice.txt")
    vault.ok("master", "add", ra, "--label", "alice (laptop)")
    vault.ok("master", "add", "env:OTHER_KEY", "--label", "cron", env={"OTHER_KEY": "22" * 32})
    listing = vault.ok("--json", "master", "list").json()
    assert [(s["slot"], s["label"]) for s in listing] == [(1, None), (2, "alice (laptop)"), (3, "cron")]
    assert listing[1]["source"] == ra  # the recipient in full, so people can check it
    table = vault.ok("master", "list").text
    assert "LABEL" in table and "alice (laptop)" in table and ra in table
    for bad in ("", "two\nlines", "x" * 101, "tab\there"):
        r = vault("master", "add", "env:THIRD", "--label", bad, env={"THIRD": "33" * 32})
        assert r.code == 2 and "label" in r.err and "Traceback" not in r.err
    team = tmp_path / "team.txt"
    rb, rc = _identity(vault, tmp_path / "bob.txt"), _identity(vault, tmp_path / "carol.txt")
    team.write_text(f"# the team\n\n# bob\n{rb}\n{rc}\n")
    added = vault.ok("--json", "master", "add", "-R", str(team), "--label", "team").json()
    assert [a["label"] for a in added] == ["bob", "team"]
    vault.ok("master", "remove", "2")
    log = vault.ok("--json", "audit", "log").json_lines()
    adds = [e["detail"].get("label") for e in log if e["op"] == "master.add"]
    assert adds == ["alice (laptop)", "cron", "bob", "team"]
    removed = [e for e in log if e["op"] == "master.remove"][-1]
    assert removed["detail"]["label"] == "alice (laptop)" and removed["detail"]["source"] == ra
    r = vault.ok("--json", "master", "remove", "3", "--rotate")
    removed = [e for e in vault.ok("--json", "audit", "log").json_lines() if e["op"] == "master.remove"][-1]
    assert removed["detail"]["label"] == "cron" and removed["detail"]["rotate"] is True
    conn = sqlite3.connect(vault.vault)
    conn.execute("UPDATE slots SET label = 'mallory' WHERE label = 'bob'")
    conn.commit()
    conn.close()
    r = vault("secret", "list")
    assert r.code == 5 and "slots" in r.err


def test_fifty_recipients_and_no_match_is_one_short_line(vault, tmp_path):
    """The exit-4 message names a few recipients shortened, counts the rest, and the identities offered."""
    lines = [_identity(vault, tmp_path / f"id{i}.txt") for i in range(8)]
    team = tmp_path / "team.txt"
    team.write_text("\n".join(lines) + "\n")
    vault.ok("master", "add", "-R", str(team))
    stranger = tmp_path / "stranger.txt"
    _identity(vault, stranger)
    r = vault("--identity", str(stranger), "secret", "list", env=NO_KEY)
    assert r.code == 4
    first = r.err.splitlines()[0]
    assert "any of the 8 recipients" in first and "and 3 more" in first and str(stranger) in first
    assert lines[0] not in first and lines[0][:12] + "…" + lines[0][-6:] in first
    assert "slot 1 (env:KMS_CLI_MASTER_KEY): not configured here" in first
    assert len(first.replace(str(stranger), "")) < 350  # short, whatever the identity file's path
    r = vault("secret", "list", env=NO_KEY)
    assert r.code == 4 and "no identity given for the recipient slots" in r.err and "--identity FILE" in r.err
    assert vault.ok("--identity", str(tmp_path / "id7.txt"), "secret", "list", env=NO_KEY).code == 0
