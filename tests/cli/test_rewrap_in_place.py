"""`rewrap --in-place PATH... [--recursive] [--dry-run]` (spec section 9, issue 13) through the real CLI.

Counts {"rewrapped", "current", "skipped", "failed"}; only the header changes (the payload bytes stay
the same); each file replaced atomically with its mode kept; a header that fails authentication is
exit 5 with the file untouched; a SIGKILLed run leaves every file old-and-valid or new-and-valid and
a second run finishes the job; symlinks inside a tree are not followed; through the agent too.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kmshelp import Kms, base_env

COUNTS = ("rewrapped", "current", "skipped", "failed")


def _header_len(data: bytes) -> int:
    import io

    from kms_cli import envelope

    src = io.BytesIO(data)
    envelope.read_header(src)
    return src.tell()


def _encrypt(vault: Kms, path: Path, text: str, *extra) -> None:
    vault.ok("encrypt", "--key", "k", "-o", str(path), *extra, input=text)


def _counts(r) -> dict:
    out = r.json()
    assert list(out) == list(COUNTS)
    return out


def _snapshot(paths) -> dict:
    return {p: p.read_bytes() for p in paths}


def _version(path: Path) -> int:
    import base64
    import io

    from kms_cli import envelope

    data = path.read_bytes()
    if data.startswith(b"-----BEGIN"):
        data = base64.b64decode(b"".join(data.splitlines()[1:-1]))
    return envelope.read_header(io.BytesIO(data)).version


def _tree(vault: Kms, tmp: Path) -> dict:
    """A tree: stale binary and armored files, a current one, another vault's, plain files."""
    root = tmp / "data"
    (root / "a" / "b").mkdir(parents=True)
    vault.ok("key", "create", "k")
    files = {}
    for i, where in enumerate(("s1.kms", "a/s2.kms", "a/b/s3.kms")):
        files[where] = (root / where, f"stale {i}")
        _encrypt(vault, root / where, f"stale {i}")
    files["a/armored.asc"] = (root / "a/armored.asc", "armored")
    _encrypt(vault, root / "a/armored.asc", "armored", "--armor")
    os.chmod(root / "a/b/s3.kms", 0o640)
    os.chmod(root / "a/armored.asc", 0o644)
    vault.ok("key", "rotate", "k")
    files["current.kms"] = (root / "current.kms", "current")
    _encrypt(vault, root / "current.kms", "current")
    other = Kms(tmp, {**base_env(tmp), "KMS_CLI_VAULT": str(tmp / "other.db")})
    other.ok("init")
    other.ok("key", "create", "k")
    other.ok("encrypt", "--key", "k", "-o", str(root / "a/foreign.kms"), input="foreign")
    (root / "notes.txt").write_text("not a ciphertext\n")
    (root / "a/b/empty").write_bytes(b"")
    (root / "a/b/pem.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return {"root": root, "files": files, "other": other}


@pytest.mark.sqlite_only("the walk over a tree: the same on both engines")
def test_mixed_tree_dry_run_then_rewrap_then_all_current(vault, tmp_path):
    t = _tree(vault, tmp_path)
    root = t["root"]
    everything = [p for p in root.rglob("*") if p.is_file()]
    before = _snapshot(everything)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in everything}

    r = vault("rewrap", "--in-place", "--recursive", "--dry-run", "--json", str(root))
    assert r.code == 0, r.err
    assert _counts(r) == {"rewrapped": 4, "current": 1, "skipped": 4, "failed": 0}
    assert _snapshot(everything) == before, "--dry-run changed a file"
    r = vault("rewrap", "--in-place", "-r", "--dry-run", str(root))
    assert r.code == 0 and r.out == b""
    assert "would rewrap 4 files; 1 already current, 4 skipped" in r.err

    r = vault("rewrap", "--in-place", "-r", "--json", str(root))
    assert r.code == 0, r.err
    assert _counts(r) == {"rewrapped": 4, "current": 1, "skipped": 4, "failed": 0}
    for rel in ("notes.txt", "a/b/empty", "a/b/pem.pem", "a/foreign.kms", "current.kms"):
        assert (root / rel).read_bytes() == before[root / rel], f"{rel} was touched"
    for p in everything:
        assert stat.S_IMODE(p.stat().st_mode) == modes[p], f"{p}: mode not kept"
    for rel in ("s1.kms", "a/s2.kms", "a/b/s3.kms"):
        p = root / rel
        new, old = p.read_bytes(), before[p]
        assert new != old
        # only the header changed: the payload bytes are the same
        assert new[_header_len(new):] == old[_header_len(old):]
        assert _version(p) == 2
    assert (root / "a/armored.asc").read_bytes().startswith(b"-----BEGIN KMS-CLI ENCRYPTED FILE-----\n")
    assert _version(root / "a/armored.asc") == 2
    for p, text in t["files"].values():
        assert vault.ok("decrypt", "-i", str(p)).out.decode() == text
    assert not [p for p in root.rglob(".kms-cli-*")], "a temporary file was left behind"

    r = vault("rewrap", "--in-place", "-r", str(root))
    assert r.code == 0
    assert "rewrapped 0 files; 5 already current, 4 skipped" in r.err

    # the audit: one entry for the batch and key version, with the number of files, not one per file
    log = vault.ok("audit", "log", "--json").json_lines()
    rewraps = [e for e in log if e["op"] == "rewrap"]
    assert [e["detail"] for e in rewraps] == [
        {"dry_run": True, "files": 4, "from_version": 1, "in_place": True, "to_version": 2},
        {"dry_run": True, "files": 4, "from_version": 1, "in_place": True, "to_version": 2},
        {"files": 4, "from_version": 1, "in_place": True, "to_version": 2},
    ]
    assert all(e["target"] == "k" and e["version"] == 2 and e["result"] == "ok" for e in rewraps)


def test_files_given_one_by_one_and_plurals(vault, tmp_path):
    vault.ok("key", "create", "k")
    a, b = tmp_path / "a.kms", tmp_path / "b.kms"
    _encrypt(vault, a, "A")
    vault.ok("key", "rotate", "k")
    _encrypt(vault, b, "B")
    r = vault("rewrap", "--in-place", str(a), str(b))
    assert r.code == 0
    assert "rewrapped 1 file; 1 already current, 0 skipped" in r.err
    assert vault.ok("decrypt", "-i", str(a)).out == b"A"


def test_tampered_header_is_exit_5_and_untouched(vault, tmp_path):
    vault.ok("key", "create", "k")
    d = tmp_path / "d"
    d.mkdir()
    for i in range(3):
        _encrypt(vault, d / f"f{i}.kms", f"v{i}")
    bad = d / "f1.kms"
    data = bytearray(bad.read_bytes())
    n = _header_len(bytes(data))
    data[n - 1] ^= 1  # the last byte of the wrapped data key
    bad.write_bytes(bytes(data))
    vault.ok("key", "rotate", "k")
    tampered = bad.read_bytes()

    r = vault("--json", "rewrap", "--in-place", "-r", str(d))
    assert r.code == 5, r.err
    assert _counts(r) == {"rewrapped": 2, "current": 0, "skipped": 0, "failed": 1}
    assert bad.read_bytes() == tampered, "a file that failed authentication was changed"
    assert f"{bad}: the ciphertext header failed authentication" in r.err
    err = json.loads(r.err.splitlines()[-1])["error"]
    assert err["exit"] == 5 and err["code"] == "integrity"
    assert vault.ok("decrypt", "-i", str(d / "f0.kms")).out == b"v0"
    # the dry run finds it too, and the failure is audited
    r = vault("rewrap", "--in-place", "-r", "--dry-run", str(d))
    assert r.code == 5 and "1 failed" in r.err
    log = vault.ok("audit", "log", "--json").json_lines()
    failed = [e for e in log if e["op"] == "rewrap" and e["result"] != "ok"]
    assert len(failed) == 2 and all(e["error"] == "integrity" and e["target"] == "k" for e in failed)


def test_revoked_version_is_counted_failed_exit_6(vault, tmp_path):
    vault.ok("key", "create", "k")
    f = tmp_path / "f.kms"
    _encrypt(vault, f, "x")
    vault.ok("key", "rotate", "k")
    vault.ok("key", "revoke", "k", "--version", "1", "--reason", "test")
    before = f.read_bytes()
    r = vault("--json", "rewrap", "--in-place", str(f))
    assert r.code == 6
    assert _counts(r)["failed"] == 1
    assert f.read_bytes() == before


@pytest.mark.sqlite_only("usage errors before the vault is used")
def test_usage_errors_change_nothing(vault, tmp_path):
    vault.ok("key", "create", "k")
    d = tmp_path / "d"
    d.mkdir()
    f = d / "f.kms"
    _encrypt(vault, f, "x")
    vault.ok("key", "rotate", "k")
    before = f.read_bytes()
    r = vault("rewrap", "--in-place", str(d))
    assert r.code == 2 and "is a directory" in r.err and "--recursive" in r.err
    r = vault("rewrap", "--in-place", str(f), str(tmp_path / "missing"))
    assert r.code == 3 and "no such file or directory" in r.err
    # options are read among the paths too (PATH... is interspersed, unlike exec's CMD)
    r = vault("--json", "rewrap", "--in-place", str(f), "--dry-run")
    assert r.code == 0 and r.json()["rewrapped"] == 1 and f.read_bytes() == before
    r = vault("rewrap", "--in-place", "-o", str(tmp_path / "out"), str(f))
    assert r.code == 2
    r = vault("rewrap", "--in-place")
    assert r.code == 2
    r = vault("rewrap", "--recursive", str(d))
    assert r.code == 2 and "--in-place" in r.err
    assert f.read_bytes() == before


@pytest.mark.sqlite_only("the walk over a tree: the same on both engines")
def test_symlinks_inside_a_tree_are_not_followed(vault, tmp_path):
    vault.ok("key", "create", "k")
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    outside.mkdir()
    _encrypt(vault, tree / "in.kms", "in")
    _encrypt(vault, outside / "out.kms", "out")
    (tree / "link-file.kms").symlink_to(outside / "out.kms")
    (tree / "link-dir").symlink_to(outside)
    vault.ok("key", "rotate", "k")
    before = (outside / "out.kms").read_bytes()
    r = vault("--json", "rewrap", "--in-place", "-r", str(tree))
    assert r.code == 0, r.err
    assert _counts(r) == {"rewrapped": 1, "current": 0, "skipped": 2, "failed": 0}
    assert (outside / "out.kms").read_bytes() == before
    assert (tree / "link-file.kms").is_symlink() and (tree / "link-dir").is_symlink()
    # a symlink named on the command line is followed: the file it names is replaced, the link stays
    r = vault("--json", "rewrap", "--in-place", str(tree / "link-file.kms"))
    assert _counts(r)["rewrapped"] == 1
    assert (tree / "link-file.kms").is_symlink()
    assert (outside / "out.kms").read_bytes() != before
    assert vault.ok("decrypt", "-i", str(outside / "out.kms")).out == b"out"


def _valid_old_or_new(vault: Kms, before: dict, texts: dict) -> int:
    """Every file is its old bytes or a complete new ciphertext (same payload, new header, decrypts)."""
    changed = 0
    for p, old in before.items():
        new = p.read_bytes()
        if new == old:
            continue
        changed += 1
        assert new[_header_len(new):] == old[_header_len(old):], f"{p}: half-written"
        assert vault.ok("decrypt", "-i", str(p)).out.decode() == texts[p]
    return changed


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(".kms-cli-*")]


@pytest.mark.sqlite_only("SIGKILL and the file swap: the same on both engines")
def test_sigkill_mid_file_then_run_again_finishes(vault, tmp_path):
    vault.ok("key", "create", "k")
    root = tmp_path / "d"
    root.mkdir()
    texts = {}
    for i in range(12):
        p = root / f"f{i:02}.kms"
        texts[p] = f"text {i} " * 4000  # a payload of a few chunks
        _encrypt(vault, p, texts[p])
    vault.ok("key", "rotate", "k")
    before = _snapshot(texts)
    # SIGKILL once 5 files were replaced, with the 6th one's temporary file half-written
    r = vault("rewrap", "--in-place", "-r", str(root), env={"KMS_CLI_TEST_CRASH_AT": "rewrap:5"})
    assert r.code == -signal.SIGKILL
    assert _valid_old_or_new(vault, before, texts) == 5
    # the first command after it removed the killed run's temporary file (there was one)
    assert not _temps(root)
    r = vault("--json", "rewrap", "--in-place", "-r", str(root))
    assert r.code == 0, r.err
    assert _counts(r) == {"rewrapped": 7, "current": 5, "skipped": 0, "failed": 0}
    assert _valid_old_or_new(vault, before, texts) == 12
    assert not _temps(root)


@pytest.mark.sqlite_only("SIGKILL and the file swap: the same on both engines")
def test_temporary_file_exists_after_sigkill_until_next_command(vault, tmp_path):
    vault.ok("key", "create", "k")
    f = tmp_path / "f.kms"
    _encrypt(vault, f, "x")
    vault.ok("key", "rotate", "k")
    r = vault("rewrap", "--in-place", str(f), env={"KMS_CLI_TEST_CRASH_AT": "rewrap:0"})
    assert r.code == -signal.SIGKILL
    assert len(_temps(tmp_path)) == 1, "the hook should leave the temporary file of a killed run"
    vault.ok("key", "list")
    assert not _temps(tmp_path)


@pytest.mark.sqlite_only("SIGKILL and the file swap: the same on both engines")
def test_external_sigkill_at_a_random_moment(vault, tmp_path):
    vault.ok("key", "create", "k")
    root = tmp_path / "d"
    root.mkdir()
    texts = {}
    for i in range(600):  # encrypted once, copied: the rewrap of each still is a separate file
        texts[root / f"f{i:03}.kms"] = "same text"
    first = root / "f000.kms"
    _encrypt(vault, first, "same text")
    data = first.read_bytes()
    for p in texts:
        p.write_bytes(data)
    vault.ok("key", "rotate", "k")
    before = _snapshot(texts)
    proc = subprocess.Popen([sys.executable, "-m", "kms_cli", "rewrap", "--in-place", "-r", str(root)],
                            env=vault.env, cwd=vault.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(p.read_bytes() != before[p] for p in list(texts)[:300]) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    changed = [p for p in texts if p.read_bytes() != before[p]]
    assert len(changed) < 600, "the run ended before it was killed"
    for p in texts:  # old or complete-new: same payload after the header
        new = p.read_bytes()
        assert new[_header_len(new):] == before[p][_header_len(before[p]):]
    for p in changed[:3] + [p for p in texts if p not in changed][:2]:
        assert vault.ok("decrypt", "-i", str(p)).out == b"same text"
    r = vault("--json", "rewrap", "--in-place", "-r", str(root))
    assert r.code == 0, r.err
    c = _counts(r)
    assert c["rewrapped"] + c["current"] == 600 and c["failed"] == 0 and c["skipped"] == 0
    assert c["current"] >= len(changed)
    r = vault("--json", "rewrap", "--in-place", "-r", str(root))
    assert _counts(r) == {"rewrapped": 0, "current": 600, "skipped": 0, "failed": 0}
    assert not _temps(root)


def test_through_the_agent(vault, tmp_path):
    vault.ok("key", "create", "k")
    d = tmp_path / "d"
    d.mkdir()
    for i in range(3):
        _encrypt(vault, d / f"f{i}.kms", f"v{i}")
    os.chmod(d / "f0.kms", 0o644)
    vault.ok("key", "rotate", "k")
    vault.ok("unlock")
    try:
        # no master key in the environment: only the agent can run it; paths relative to the caller
        r = vault("--json", "rewrap", "--in-place", "-r", "d", env={"KMS_CLI_MASTER_KEY": None})
        assert r.code == 0, r.err
        assert _counts(r) == {"rewrapped": 3, "current": 0, "skipped": 0, "failed": 0}
        assert stat.S_IMODE((d / "f0.kms").stat().st_mode) == 0o644
        for i in range(3):
            assert vault.ok("decrypt", "-i", str(d / f"f{i}.kms"),
                            env={"KMS_CLI_MASTER_KEY": None}).out == f"v{i}".encode()
    finally:
        vault.ok("agent", "stop")
