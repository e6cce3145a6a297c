"""`secret edit NAME` through the real CLI (issue 13, spec section 4), with scripted editors: what is
stored, exit codes, the file's and directory's modes seen from inside the editor, what the editor
is given (argv, environment), and that nothing is left behind after a failure, ^C, SIGTERM or
SIGKILL, with and without the agent."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agenthelp import UNLOCK_ENV, audit, passphrase_vault, stop_agent, unlock

VALUE = b"s3cr3t-edit-value-7d1e"
NEW = b"n3w-edit-value-42c9"


def _script(tmp: Path, name: str, body: str) -> str:
    """A python editor script: it records what it saw in $EDIT_LOG (one JSON object), then runs `body`
    with `path` the file to edit."""
    path = tmp / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""\
        import json, os, stat, sys, time
        path = sys.argv[-1]
        st, dst = os.stat(path), os.stat(os.path.dirname(path))
        seen = {"argv": sys.argv[1:], "mode": stat.S_IMODE(st.st_mode), "dir_mode": stat.S_IMODE(dst.st_mode),
                "content": open(path, "rb").read().decode("latin-1"), "env": dict(os.environ),
                "pid": os.getpid()}
        with open(os.environ["EDIT_LOG"], "w") as f:
            json.dump(seen, f)
        """) + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def _seen(tmp: Path) -> dict:
    return json.loads((tmp / "edit.log").read_text())


@pytest.fixture
def ed(vault, tmp_path):
    """The vault with secret app/cert.pem = VALUE (tags k=v); editors log to tmp/edit.log; the
    private directory goes under tmp/run (standing in for $XDG_RUNTIME_DIR)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    vault.env.update({"XDG_RUNTIME_DIR": str(run), "EDIT_LOG": str(tmp_path / "edit.log")})
    vault.env.pop("VISUAL", None)
    vault.ok("secret", "put", "app/cert.pem", "--tag", "k=v", input=VALUE)
    return vault


def _versions(kms, name="app/cert.pem") -> list[dict]:
    return kms.ok("--json", "secret", "history", name).json()


def _pending(kms) -> list[str]:
    d = Path(kms.env["XDG_STATE_HOME"]) / "kms-cli" / "pending"
    return sorted(os.listdir(d)) if d.exists() else []


def _no_leftovers(kms, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert os.listdir(run) == [], f"left in the private directory's parent: {os.listdir(run)}"
    assert _pending(kms) == []
    _nowhere_on_disk(tmp_path)


def _nowhere_on_disk(tmp_path: Path, value: bytes = NEW) -> None:
    """Neither the stored value nor the edited one is in any file under the test's directory
    (HOME, working directory, the vault's sealed rows aside) nor in the temporary directory's kms-cli dirs."""
    import tempfile

    for root, _dirs, files in os.walk(tmp_path):
        for f in files:
            p = os.path.join(root, f)
            if p.startswith(str(tmp_path / "vault.db")) or f in ("edit.log",) or f.endswith((".py", ".sh")):
                continue
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            assert VALUE not in data and value not in data, f"a value landed in {p}"
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("kms-cli-edit-")
                and os.stat(os.path.join(tempfile.gettempdir(), n)).st_uid == os.getuid()
                and os.path.getmtime(os.path.join(tempfile.gettempdir(), n)) > time.time() - 600]


# -- what is stored ------------------------------------------------------------------------------

def test_rewritten_value_is_a_new_version_with_tags_kept(ed, tmp_path):
    editor = _script(tmp_path, "rewrite.py", f"""
        open(path, "wb").write({NEW!r})
    """)
    n = len(audit(ed))
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 0, r.err
    assert "stored app/cert.pem version 2" in r.err
    entries = audit(ed)[n + 1:]  # a read, then a put: nothing else
    assert [(e["op"], e["target"], e["version"], e["result"]) for e in entries] == [
        ("secret.get", "app/cert.pem", 1, "ok"), ("secret.put", "app/cert.pem", 2, "ok")]
    assert ed.ok("secret", "get", "app/cert.pem").out == NEW
    versions = _versions(ed)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[-1]["tags"] == {"k": "v"} and versions[-1]["expires"] is None  # as `secret put` without options
    seen = _seen(tmp_path)
    # the file: 0600 in a 0700 directory of its own under $XDG_RUNTIME_DIR, named after the last segment
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    path = Path(seen["argv"][-1])
    assert path.is_absolute() and path.name == "cert.pem"
    assert path.parent.parent == tmp_path / "run" and path.parent.name.startswith("kms-cli-edit-")
    assert seen["content"].encode("latin-1") == VALUE
    # the value is in neither argv nor the environment; the master key is not in the environment
    assert seen["argv"] == [str(path)]
    assert not any(VALUE.decode() in v for v in seen["env"].values())
    assert "KMS_CLI_MASTER_KEY" not in seen["env"]
    assert not path.parent.exists()
    _no_leftovers(ed, tmp_path)


def test_editor_that_changes_nothing_stores_nothing(ed, tmp_path):
    editor = _script(tmp_path, "noop.py", "")
    r = ed("--json", "secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 0, r.err
    assert r.json() == {"name": "app/cert.pem", "version": 1, "changed": False}
    assert [v["version"] for v in _versions(ed)] == [1]
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 0 and "unchanged" in r.err
    _no_leftovers(ed, tmp_path)


@pytest.mark.sqlite_only("the editor's file: the same on both engines")
def test_final_newline_added_by_the_editor_is_not_a_change(ed, tmp_path):
    """The stored value has no final newline: an editor that saves it with one changes nothing;
    an edit that ends in a newline is stored without it."""
    same = _script(tmp_path, "eol.py", """
        open(path, "ab").write(b"\\n")
    """)
    assert ed("secret", "edit", "app/cert.pem", env={"EDITOR": same}).code == 0
    assert [v["version"] for v in _versions(ed)] == [1]
    with_eol = NEW + b"\n"
    changed = _script(tmp_path, "eol2.py", f"""
        open(path, "wb").write({with_eol!r})
    """)
    assert ed("secret", "edit", "app/cert.pem", env={"EDITOR": changed}).code == 0
    assert ed.ok("secret", "get", "app/cert.pem").out == NEW
    # a value that has a final newline keeps the file's bytes as they are
    ed.ok("secret", "put", "app/nl", input=b"line\n")
    two = _script(tmp_path, "two.py", """
        open(path, "wb").write(b"line\\nmore\\n")
    """)
    assert ed("secret", "edit", "app/nl", env={"EDITOR": two}).code == 0
    assert ed.ok("secret", "get", "app/nl").out == b"line\nmore\n"


@pytest.mark.sqlite_only("which editor runs: the same on both engines")
def test_visual_wins_and_is_split_like_a_shell_word_list(ed, tmp_path):
    editor = _script(tmp_path, "my editor.py", f"""
        open(path, "wb").write({NEW!r})
    """)
    r = ed("secret", "edit", "app/cert.pem",
           env={"VISUAL": f"'{editor}' --wait -c 'set x'", "EDITOR": "/bin/false"})
    assert r.code == 0, r.err
    argv = _seen(tmp_path)["argv"]
    assert argv[:3] == ["--wait", "-c", "set x"] and argv[3].endswith("/cert.pem")
    assert ed.ok("secret", "get", "app/cert.pem").out == NEW


@pytest.mark.sqlite_only("the editor's file: the same on both engines")
def test_editor_replacing_the_file_by_rename_and_leaving_swap_files(ed, tmp_path):
    editor = _script(tmp_path, "rename.py", f"""
        d = os.path.dirname(path)
        open(os.path.join(d, ".cert.pem.swp"), "wb").write(b"swap:" + open(path, "rb").read())
        os.rename(path, path + "~")  # vim's backup with backupcopy=no
        tmp = os.path.join(d, "4913")
        open(tmp, "wb").write({NEW!r})
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    """)
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 0, r.err
    assert ed.ok("secret", "get", "app/cert.pem").out == NEW
    assert not Path(_seen(tmp_path)["argv"][-1]).parent.exists()
    _no_leftovers(ed, tmp_path)


# -- failures: nothing stored, nothing left ----------------------------------------------------

@pytest.mark.sqlite_only("the editor's exit: the same on both engines")
def test_editor_exiting_non_zero_stores_nothing_exit_2(ed, tmp_path):
    editor = _script(tmp_path, "fail.py", f"""
        open(path, "wb").write({NEW!r})
        sys.exit(1)
    """)
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 2
    assert r.err.startswith("kms-cli: error: the editor exited with status 1; nothing stored")
    assert [v["version"] for v in _versions(ed)] == [1]
    _no_leftovers(ed, tmp_path)
    r = ed("--json", "secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert json.loads(r.err.splitlines()[-1])["error"]["exit"] == 2


@pytest.mark.sqlite_only("the editor's exit: the same on both engines")
def test_editor_killed_by_a_signal_stores_nothing(ed, tmp_path):
    editor = _script(tmp_path, "die.py", f"""
        open(path, "wb").write({NEW!r})
        os.kill(os.getpid(), 9)
    """)
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": editor})
    assert r.code == 2 and "the editor was killed by SIGKILL" in r.err
    assert [v["version"] for v in _versions(ed)] == [1]
    _no_leftovers(ed, tmp_path)


def test_emptied_file_and_removed_file_store_nothing(ed, tmp_path):
    empty = _script(tmp_path, "empty.py", """
        open(path, "wb").close()
    """)
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": empty})
    assert r.code == 2 and "empty" in r.err and "secret rm" in r.err
    gone = _script(tmp_path, "gone.py", """
        os.unlink(path)
    """)
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": gone})
    assert r.code == 2 and "removed the file" in r.err
    assert [v["version"] for v in _versions(ed)] == [1]
    _no_leftovers(ed, tmp_path)


def test_missing_secret_is_exit_3_with_a_hint_and_no_editor(ed, tmp_path):
    editor = _script(tmp_path, "never.py", "")
    r = ed("secret", "edit", "app/nope", env={"EDITOR": editor})
    assert r.code == 3
    assert r.err.splitlines() == ["kms-cli: error: no secret named 'app/nope'",
                                  "kms-cli: hint: create it with `kms-cli secret put app/nope`"]
    assert not (tmp_path / "edit.log").exists()
    _no_leftovers(ed, tmp_path)


@pytest.mark.sqlite_only("which editor runs: the same on both engines")
def test_editor_not_found_is_127_before_anything_is_read(ed, tmp_path):
    n = len(audit(ed))
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": "no-such-editor-anywhere --wait"})
    assert r.code == 127 and "no-such-editor-anywhere" in r.err
    assert audit(ed)[n + 1:] == []  # no secret.get
    r = ed("secret", "edit", "app/cert.pem", env={"EDITOR": "'unclosed"})
    assert r.code == 2 and "$EDITOR" in r.err


@pytest.mark.sqlite_only("which editor runs: the same on both engines")
def test_default_editor_is_vi_and_says_so(ed, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vi = _script(bindir, "vi", "")
    assert vi
    r = ed("secret", "edit", "app/cert.pem",
           env={"EDITOR": None, "VISUAL": None, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.code == 0, r.err
    assert "neither VISUAL nor EDITOR is set: editing with vi" in r.err
    assert _seen(tmp_path)["argv"][-1].endswith("/cert.pem")


def test_wrong_passphrase_fails_before_the_editor(tmp_path):
    kms = passphrase_vault(tmp_path, "pv")
    kms.env["EDIT_LOG"] = str(tmp_path / "edit.log")
    kms.ok("secret", "put", "a", input=VALUE, env=UNLOCK_ENV)
    editor = _script(tmp_path, "never.py", "")
    r = kms("secret", "edit", "a", env={"EDITOR": editor, "KMS_CLI_PASSPHRASE": "wrong"})
    assert r.code == 4
    assert not (tmp_path / "edit.log").exists()


# -- signals -------------------------------------------------------------------------------------

def _sleeping_editor(tmp_path: Path, rename: bool = False) -> str:
    """Writes NEW (by rename if asked), records its pid, then sleeps until killed."""
    write = f"""
        tmp = path + ".new"
        open(tmp, "wb").write({NEW!r})
        os.rename(tmp, path)
    """ if rename else f"""
        open(path, "wb").write({NEW!r})
    """
    return _script(tmp_path, "sleepy.py", write + """
        open(os.environ["EDIT_LOG"] + ".ready", "w").write(str(os.getpid()))
        time.sleep(120)
    """)


def _start(kms, tmp_path, editor, *args):
    env = dict(kms.env, EDITOR=editor)
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", *args, "secret", "edit", "app/cert.pem"], env=env,
                         cwd=kms.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = tmp_path / "edit.log.ready"
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text()):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the editor did not start"
        time.sleep(0.02)
    return p, int(ready.read_text())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.sqlite_only("signals and clean-up: the same on both engines")
def test_signal_while_editing_stops_the_editor_and_removes_everything(ed, tmp_path, sig):
    p, editor_pid = _start(ed, tmp_path, _sleeping_editor(tmp_path))
    private = Path(_seen(tmp_path)["argv"][-1]).parent
    assert private.exists()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, err
    assert b"kms-cli: error:" in err
    assert not _alive(editor_pid), "the editor outlived kms-cli"
    assert not private.exists()
    assert [v["version"] for v in _versions(ed)] == [1]
    _no_leftovers(ed, tmp_path)


@pytest.mark.sqlite_only("signals and clean-up: the same on both engines")
def test_sigkill_leaves_the_directory_to_the_next_command_once_the_editor_is_gone(ed, tmp_path):
    p, editor_pid = _start(ed, tmp_path, _sleeping_editor(tmp_path, rename=True))
    private = Path(_seen(tmp_path)["argv"][-1]).parent
    try:
        p.kill()
        p.wait(timeout=30)  # the editor, still running, holds the pipes open
        p.stdout.close()
        p.stderr.close()
        assert _pending(ed), "no marker for the private directory"
        ed.ok("secret", "list")
        assert private.exists(), "swept while the editor still had the file"
    finally:
        os.kill(editor_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(editor_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    ed.ok("secret", "list")  # the next command's sweep: the renamed file too, and the directory
    assert not private.exists()
    assert [v["version"] for v in _versions(ed)] == [1]
    _no_leftovers(ed, tmp_path)


# -- through the agent ---------------------------------------------------------------------------

@pytest.fixture
def held(tmp_path):
    kms = passphrase_vault(tmp_path, "agent")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    kms.env.update({"XDG_RUNTIME_DIR": str(run), "EDIT_LOG": str(tmp_path / "edit.log")})
    kms.ok("secret", "put", "app/cert.pem", "--tag", "k=v", input=VALUE, env=UNLOCK_ENV)
    unlock(kms)
    try:
        yield kms
    finally:
        stop_agent(kms)


def test_edit_through_the_agent(held, tmp_path):
    """No passphrase in the environment: only the agent can serve it (else exit 4). The editor
    runs in the agent's process for the command, with the client's streams and environment."""
    editor = _script(tmp_path, "rewrite.py", f"""
        open(path, "wb").write({NEW!r})
    """)
    n = len(audit(held))
    r = held("secret", "edit", "app/cert.pem", env={"EDITOR": editor, "CLIENT_ONLY": "1"})
    assert r.code == 0, r.err
    assert "stored app/cert.pem version 2" in r.err
    seen = _seen(tmp_path)
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert seen["env"].get("CLIENT_ONLY") == "1" and "KMS_CLI_PASSPHRASE" not in seen["env"]
    assert Path(seen["argv"][-1]).parent.parent == tmp_path / "run"
    assert held.ok("secret", "get", "app/cert.pem").out == NEW
    entries = audit(held)[n + 1:]
    assert [(e["op"], e["version"]) for e in entries if e["target"] == "app/cert.pem"][:2] == [
        ("secret.get", 1), ("secret.put", 2)]
    fail = _script(tmp_path, "fail.py", "sys.exit(3)\n")
    assert held("secret", "edit", "app/cert.pem", env={"EDITOR": fail}).code == 2
    assert os.listdir(tmp_path / "run") == []


def test_sigterm_through_the_agent(held, tmp_path):
    p, editor_pid = _start(held, tmp_path, _sleeping_editor(tmp_path))
    private = Path(_seen(tmp_path)["argv"][-1]).parent
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM, err
    deadline = time.monotonic() + 10
    while (_alive(editor_pid) or private.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(editor_pid) and not private.exists()
    assert os.listdir(tmp_path / "run") == []
    assert [v["version"] for v in held.ok("--json", "secret", "history", "app/cert.pem").json()] == [1]


# -- where the file goes -----------------------------------------------------------------------

def test_private_dir_falls_back_to_the_temporary_directory_with_a_warning(tmp_path, monkeypatch):
    from kms_cli import editing

    warnings = []
    monkeypatch.setattr(editing, "_private_base", lambda environ: None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    d = editing.make_private_dir({}, warnings.append)
    try:
        assert Path(d).parent == tmp_path and stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert warnings and "may reach a disk" in warnings[0]
    finally:
        os.rmdir(d)
    run = tmp_path / "xdg"
    run.mkdir(mode=0o700)
    monkeypatch.undo()
    assert editing._private_base({"XDG_RUNTIME_DIR": str(run)}) == str(run)
    assert editing._private_base({"XDG_RUNTIME_DIR": "relative"}) in ("/dev/shm", None)
