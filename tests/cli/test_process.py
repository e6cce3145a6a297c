"""exec, env, inject and read through the real CLI (issue 5)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kmshelp import MASTER_KEY

AWKWARD = "it's \"quoted\" $HOME `uname` \\ back\nslash and\ttab"


@pytest.fixture
def secrets(vault):
    vault.ok("secret", "put", "app/db-password", input=AWKWARD.encode())
    vault.ok("secret", "put", "app/api.token", input=b"tok-123456")
    return vault


def test_exec_injects_and_scrubs_master_key(secrets):
    r = secrets.ok("exec", "--secret", "app/db-password", "--secret", "app/api.token=TOKEN", "--",
                   sys.executable, "-c",
                   "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
                   "('DB_PASSWORD', 'TOKEN', 'KMS_CLI_MASTER_KEY', 'PATH')}))")
    env = json.loads(r.out)
    assert env["DB_PASSWORD"] == AWKWARD and env["TOKEN"] == "tok-123456"
    assert env["KMS_CLI_MASTER_KEY"] is None and env["PATH"]


@pytest.mark.sqlite_only("the child's argv: the same on both engines")
def test_exec_never_uses_a_shell(secrets):
    r = secrets.ok("exec", "-s", "app/api.token", "--", "echo", "$API_TOKEN", "&&", "false")
    assert r.out == b"$API_TOKEN && false\n"


def test_exec_all_prefix_and_collision(secrets):
    r = secrets.ok("--namespace", "app", "exec", "--all", "--prefix", "APP_", "--", "env")
    assert b"APP_DB_PASSWORD=" in r.out and b"APP_API_TOKEN=tok-123456" in r.out
    secrets.ok("secret", "put", "other/api-token", input=b"x")
    r = secrets("exec", "-s", "app/api.token", "-s", "other/api-token", "--", "true")
    assert r.code == 2 and "app/api.token" in r.err and "other/api-token" in r.err


@pytest.mark.sqlite_only("the child's environment: the same on both engines")
def test_exec_pristine_and_clobber(secrets):
    env = {"FOO_VISIBLE": "1", "API_TOKEN": "old"}
    r = secrets.ok("exec", "--pristine", "-s", "app/api.token", "--", "env", env=env)
    assert b"FOO_VISIBLE" not in r.out and b"PATH=" in r.out and b"API_TOKEN=tok-123456" in r.out
    r = secrets.ok("exec", "-s", "app/api.token", "--", "env", env=env)
    assert b"API_TOKEN=tok-123456" in r.out and "API_TOKEN" in r.err  # overwritten with a warning
    r = secrets("exec", "--no-clobber", "-s", "app/api.token", "--", "true", env=env)
    assert r.code == 8 and "API_TOKEN" in r.err and "old" not in r.err


@pytest.mark.sqlite_only("the child's exit: the same on both engines")
def test_exec_exit_codes(secrets, tmp_path):
    assert secrets("exec", "-s", "app/api.token", "--", "sh", "-c", "exit 7").code == 7
    assert secrets("exec", "-s", "app/api.token", "--", "does-not-exist-anywhere").code == 127
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o600)
    assert secrets("exec", "-s", "app/api.token", "--", str(script)).code == 126
    assert secrets("exec", "-s", "app/api.token").code == 2
    r = secrets("exec", "-s", "missing/secret", "--", "sh", "-c", "touch ran")
    assert r.code == 3 and not (tmp_path / "ran").exists()
    assert secrets("exec", "--mask", "-s", "app/api.token", "--", "sh", "-c", "kill -TERM $$").code == 128 + 15


@pytest.mark.sqlite_only("exec --mask: the same on both engines")
def test_exec_mask_pieces(secrets):
    code = ("import sys, time\n"
            "for part in ('tok-', '123', '456'):\n"
            "    sys.stdout.write(part); sys.stdout.flush(); time.sleep(0.2)\n"
            "print(' and tok-123456 again', file=sys.stderr)\n")
    r = secrets.ok("exec", "--mask", "-s", "app/api.token", "--", sys.executable, "-c", code)
    assert b"tok-123456" not in r.out and b"***" in r.out
    assert "tok-123456" not in r.err and "***" in r.err


def _wait_for(path, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.sqlite_only("signals and the env file: the same on both engines")
def test_sigterm_reaches_child_and_env_file_removed(secrets, tmp_path):
    marker, ready, seen = tmp_path / "got-term", tmp_path / "ready", tmp_path / "envfile-path"
    child = ("import os, signal, sys, time\n"
             f"open({str(seen)!r}, 'w').write(os.environ['KMS_CLI_ENV_FILE'])\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
             f"open({str(ready)!r}, 'w').close()\n"
             "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "exec", "-s", "app/api.token", "--env-file-out",
                          str(tmp_path), "--", sys.executable, "-c", child], env=secrets.env, cwd=tmp_path)
    assert _wait_for(ready)
    env_file = seen.read_text()
    assert os.path.exists(env_file) and os.stat(env_file).st_mode & 0o777 == 0o600
    # no secret on any process's command line, at any point
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            assert b"tok-123456" not in cmdline and MASTER_KEY.encode() not in cmdline
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    assert marker.exists()
    assert not os.path.exists(env_file)


@pytest.mark.sqlite_only("signals and the env file: the same on both engines")
def test_env_file_removed_after_child_killed(secrets, tmp_path):
    out = tmp_path / "secrets.env"
    r = secrets("exec", "-s", "app/api.token", "--env-file-out", str(out), "--", "sh", "-c",
                'cat "$KMS_CLI_ENV_FILE"; kill -KILL $$')
    assert r.code == 128 + 9
    assert b"API_TOKEN" in r.out
    assert not out.exists()


@pytest.mark.sqlite_only("shell quoting: the same on both engines")
def test_env_sh_survives_eval(secrets):
    sh = secrets.ok("env", "-s", "app/db-password", "-s", "app/api.token").text
    p = subprocess.run(["sh", "-c", sh + '\nprintf "%s|%s" "$DB_PASSWORD" "$API_TOKEN"'], capture_output=True,
                       text=True)
    assert p.stdout == AWKWARD + "|tok-123456"


def test_env_formats(secrets, tmp_path):
    doc = json.loads(secrets.ok("env", "--all", "--namespace", "app", "--format", "json").out)
    assert doc == {"DB_PASSWORD": AWKWARD, "API_TOKEN": "tok-123456"}
    # AWKWARD holds ' with $ and backticks: no dotenv quoting is literal for both python-dotenv and sh
    # (what dotenv does write is tested in tests/cli/test_export_safety.py)
    r = secrets("env", "--all", "--namespace", "app", "--format", "dotenv")
    assert r.code == 2 and r.out == b"" and "DB_PASSWORD" in r.err and AWKWARD not in r.err
    gh = tmp_path / "github_env"
    r = secrets.ok("env", "--all", "--namespace", "app", "--format", "github", env={"GITHUB_ENV": str(gh)})
    assert "::add-mask::tok-123456" in r.text
    text = gh.read_text()
    assert "API_TOKEN=tok-123456\n" in text and "DB_PASSWORD<<" in text
    assert secrets("env", "--all", "--format", "github", env={"GITHUB_ENV": None}).code == 2


def test_inject(secrets, tmp_path):
    secrets.ok("secret", "put", "app/api.token", input=b"tok-v2")
    tpl = b"token={{ kms://app/api.token }}\nold={{kms://app/api.token?version=1}}\nkeep {{ not a ref }} \xff\n"
    (tmp_path / "t.tpl").write_bytes(tpl)
    secrets.ok("inject", "-i", "t.tpl", "-o", "out.conf")
    assert (tmp_path / "out.conf").read_bytes() == b"token=tok-v2\nold=tok-123456\nkeep {{ not a ref }} \xff\n"
    assert os.stat(tmp_path / "out.conf").st_mode & 0o777 == 0o600
    (tmp_path / "bad.tpl").write_bytes(b"a={{ kms://app/api.token }} b={{ kms://app/nope }}")
    r = secrets("inject", "-i", "bad.tpl", "-o", "bad.out")
    assert r.code == 3 and not (tmp_path / "bad.out").exists()


def test_read(secrets):
    secrets.ok("secret", "put", "app/api.token", input=b"tok-v2")
    assert secrets.ok("read", "kms://app/api.token").out == b"tok-v2"
    assert secrets.ok("read", "kms://app/api.token?version=1").out == b"tok-123456"
    assert secrets("read", "app/api.token").code == 2
    assert secrets("read", "kms://app/missing").code == 3


def test_exec_audited_without_values(secrets):
    secrets.ok("exec", "-s", "app/api.token", "--", "true")
    log = secrets.ok("--json", "audit", "log", "--op", "exec").text.strip().splitlines()
    entry = json.loads(log[-1])
    assert entry["op"] == "exec" and entry["target"] == "app/api.token" and entry["result"] == "ok"
    assert "tok-123456" not in secrets.ok("audit", "export").text
