"""The agent through the real CLI (issue 12, spec section 6): its contract, a passphrase vault
unlocked once serving every kind of command, the timers, forgetting, and same-uid only.

Every vault here is a passphrase vault whose passphrase only `unlock` is given: a command that
silently ran without the agent would exit 4, so a pass means the agent served it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from agenthelp import (NO_KEYS, PASSPHRASE, UNLOCK_ENV, agent_pids, alive, audit, fields, frame, held,  # noqa: F401
                       passphrase_vault, pvault, raw_request, sock_path, status, status_json, stop_agent, unlock,
                       wait_gone)
from kmshelp import ROOT

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- 1. the contract ---------------------------------------------------------------------------

def test_status_without_agent_is_exit_3(pvault):
    r = pvault("agent", "status")
    assert r.code == 3 and r.out == b"" and r.err.startswith("kms-cli: error: ")
    r = pvault("--json", "agent", "status")
    assert r.code == 3 and json.loads(r.err.splitlines()[-1])["error"]["exit"] == 3


def test_start_listens_then_exit_8_then_stop_removes_everything(pvault):
    r = pvault.ok("agent", "start", timeout=30)
    path = sock_path(pvault)
    # it returned once it listens: the socket answers at once, with the modes of the spec
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    info = status_json(pvault)
    assert info == {"socket": str(path), "pid": info["pid"], "vaults": []}
    pid = info["pid"]
    assert alive(pid) and str(pid) in r.err
    again = pvault("agent", "start", timeout=30)
    assert again.code == 8 and "kms-cli: error:" in again.err
    assert status_json(pvault)["pid"] == pid  # the running one is untouched
    pvault.ok("agent", "stop")
    assert wait_gone(pid), "agent stop: the process is still alive"
    assert not path.exists(), "agent stop left its socket file behind"
    assert pvault("agent", "status").code == 3
    r = pvault("secret", "list", env=UNLOCK_ENV)
    assert r.code == 0 and "warning" not in r.err  # no stale socket to warn about


def test_socket_dir_made_0700(pvault):
    path = sock_path(pvault)
    assert not path.parent.exists()
    unlock(pvault)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_unlock_starts_agent_and_says_what_is_held(pvault):
    assert status(pvault) is None
    r = unlock(pvault, "--idle", "10m", "--max", "2h")
    info = status_json(pvault)
    assert alive(info["pid"])
    assert set(info) == {"socket", "pid", "vaults"}
    assert info["socket"] == str(sock_path(pvault)) and isinstance(info["pid"], int)
    [v] = info["vaults"]
    assert set(v) == {"vault", "id", "unlocked", "idle_expires", "expires"}
    assert v["vault"] == os.path.realpath(pvault.vault)
    assert re.fullmatch(r"[0-9a-f]{32}", v["id"])
    for k in ("unlocked", "idle_expires", "expires"):
        assert RFC3339_UTC.match(v[k]), v[k]
    assert abs(_ts(v["expires"]) - _ts(v["unlocked"]) - 7200) <= 1
    assert abs(_ts(v["idle_expires"]) - _ts(v["unlocked"]) - 600) <= 2
    assert abs(_ts(v["unlocked"]) - time.time()) < 30
    # the message names the vault and the time it is held until (stderr, nothing on stdout)
    assert r.out == b""
    assert str(os.path.realpath(pvault.vault)) in r.err and v["expires"] in r.err
    # the vault id the agent reports is the vault's (the unlock entry is in that vault's log)
    ops = [e["op"] for e in audit(pvault)]
    assert "agent.unlock" in ops


def test_unlock_reuses_a_running_agent(pvault):
    pvault.ok("agent", "start")
    pid = status_json(pvault)["pid"]
    unlock(pvault)
    assert status_json(pvault)["pid"] == pid and len(status_json(pvault)["vaults"]) == 1


def test_lock_exit_0_without_agent_or_vault(pvault, tmp_path):
    assert pvault("lock").code == 0
    assert pvault("lock", "--all").code == 0
    assert agent_pids(pvault) == []  # lock never starts an agent
    pvault.ok("agent", "start")
    assert pvault("lock").code == 0  # held nothing
    assert pvault("lock", "--all").code == 0


def test_lock_forgets_this_vault_only_and_lock_all_every_one(tmp_path):
    a = passphrase_vault(tmp_path, "a")
    b = passphrase_vault(tmp_path, "b")
    b.env["KMS_CLI_AGENT_SOCK"] = a.env["KMS_CLI_AGENT_SOCK"]
    try:
        unlock(a)
        unlock(b)
        assert len(status_json(a)["vaults"]) == 2
        a.ok("secret", "put", "x", input=b"1")
        b.ok("secret", "put", "x", input=b"2")
        a.ok("lock")
        assert [v["vault"] for v in status_json(a)["vaults"]] == [os.path.realpath(b.vault)]
        assert a("secret", "get", "x").code == 4  # forgotten: falls back, no passphrase here
        assert b.ok("secret", "get", "x").out == b"2"
        b.ok("lock", "--all")
        assert status_json(a)["vaults"] == []
        assert b("secret", "get", "x").code == 4
        # agent.lock entries in each vault's log, by the locking process
        # an agent.lock entry in each vault's log (audit log lists the entries before its own)
        assert [e["op"] for e in audit(a)][-1] == "agent.lock"
        assert [e["op"] for e in audit(b)][-2:] == ["secret.get", "agent.lock"]
    finally:
        stop_agent(a)


def test_no_agent_flag_and_env_bypass(held):
    held.ok("secret", "put", "db", input=b"pw")
    assert held.ok("secret", "get", "db").out == b"pw"
    r = held("--no-agent", "secret", "get", "db")
    assert r.code == 4 and r.out == b""
    r = held("secret", "get", "db", env={"KMS_CLI_NO_AGENT": "1"})
    assert r.code == 4 and r.out == b""
    # 0 and empty mean "use it"
    assert held.ok("secret", "get", "db", env={"KMS_CLI_NO_AGENT": "0"}).out == b"pw"
    # after `--` a --no-agent belongs to the child
    r = held.ok("exec", "-s", "db", "--", "sh", "-c", 'echo "$DB" "$0"', "--no-agent")
    assert r.out == b"pw --no-agent\n"


def test_stop_forgets_and_writes_agent_lock(held):
    pid = status_json(held)["pid"]
    r = held.ok("agent", "stop")
    assert "1 vault" in r.err
    assert wait_gone(pid)
    assert held("secret", "list").code == 4
    entries = audit(held)
    lock = [e for e in entries if e["op"] == "agent.lock"]
    assert len(lock) == 1 and lock[0]["result"] == "ok"


# -- 2. unlock once: every kind of command on a passphrase vault ----------------------------------

def test_secrets_keys_through_agent(held):
    held.ok("secret", "put", "app/db", input=b"s3cret")
    held.ok("secret", "put", "app/db", input=b"s3cret-2")
    assert held.ok("secret", "get", "app/db").out == b"s3cret-2"
    assert held.ok("secret", "get", "app/db", "--version", "1").out == b"s3cret"
    assert held.ok("--json", "secret", "get", "app/db").json() == {"name": "app/db", "version": 2,
                                                                   "value": "s3cret-2"}
    assert b"app/db" in held.ok("secret", "list").out
    assert held.ok("read", "kms://app/db?version=1").out == b"s3cret"
    held.ok("key", "create", "k")
    held.ok("key", "rotate", "k")
    show = held.ok("--json", "key", "show", "k").json()
    assert [v["version"] for v in show["versions"]] == [1, 2]


def test_encrypt_decrypt_relative_paths_use_client_cwd(held, tmp_path):
    held.ok("key", "create", "k")
    work = tmp_path / "work"
    work.mkdir()
    small = b"hello agent\n"
    big = os.urandom(3 << 20) + b"tail"
    (work / "small.txt").write_bytes(small)
    (work / "big.bin").write_bytes(big)

    def run(*args, env=None, **kw):
        p = subprocess.run([sys.executable, "-m", "kms_cli", *args], env=env or held.env, cwd=work,
                           capture_output=True, timeout=60, **kw)
        assert p.returncode == 0, p.stderr.decode()
        return p

    for name in ("small.txt", "big.bin"):
        run("encrypt", "--key", "k", "-i", name, "-o", name + ".enc")
        assert (work / (name + ".enc")).exists() and not (tmp_path / (name + ".enc")).exists()
        assert stat.S_IMODE(os.stat(work / (name + ".enc")).st_mode) == 0o600
        run("decrypt", "-i", name + ".enc", "-o", name + ".out")
        assert (work / (name + ".out")).read_bytes() == (work / name).read_bytes()
    # pipes: stdin/stdout are the client's
    ct = run("encrypt", "--key", "k", input=big).stdout
    assert run("decrypt", input=ct).stdout == big
    assert run("--no-agent", "decrypt", input=ct, env={**held.env, **UNLOCK_ENV}).stdout == big


def test_sign_verify_env_inject(held, tmp_path):
    held.ok("key", "create", "sig", "--algorithm", "ed25519")
    (tmp_path / "msg").write_bytes(b"message")
    held.ok("sign", "--key", "sig", "-i", "msg", "-o", "msg.sig")
    held.ok("verify", "--key", "sig", "--signature", "msg.sig", "-i", "msg")
    (tmp_path / "msg").write_bytes(b"messagf")
    assert held("verify", "--key", "sig", "--signature", "msg.sig", "-i", "msg").code == 5
    held.ok("secret", "put", "app/api-token", input=b"tok 'q'")
    r = held.ok("env", "--secret", "app/api-token", "--format", "sh")
    out = subprocess.run(["sh", "-c", r.text + 'printf %s "$API_TOKEN"'], capture_output=True).stdout
    assert out == b"tok 'q'"
    assert json.loads(held.ok("env", "--secret", "app/api-token", "--format", "json").out) == {"API_TOKEN": "tok 'q'"}
    (tmp_path / "t.tmpl").write_text("token={{ kms://app/api-token }}\n")
    held.ok("inject", "-i", "t.tmpl", "-o", "t.out")
    assert (tmp_path / "t.out").read_bytes() == b"token=tok 'q'\n"
    assert held.ok("inject", input="x {{ kms://app/api-token }} y").out == b"x tok 'q' y"


def test_exec_through_agent(held, tmp_path):
    held.ok("secret", "put", "app/db-password", input=b"pw!")
    r = held.ok("exec", "-s", "app/db-password", "--", sys.executable, "-c",
                "import os,json; print(json.dumps([os.environ.get('DB_PASSWORD'), os.environ.get('KMS_CLI_PASSPHRASE'),"
                " os.getcwd()]))", env=UNLOCK_ENV)
    assert json.loads(r.out) == ["pw!", None, str(tmp_path)]
    assert held("exec", "-s", "app/db-password", "--", "sh", "-c", "exit 7").code == 7
    assert held("exec", "-s", "app/db-password", "--", "does-not-exist-anywhere").code == 127
    # signal death maps exactly as without the agent (kms-cli replaced by CMD: dies of the signal;
    # --mask supervises: 128+N)
    plain = held("exec", "-s", "app/db-password", "--", "sh", "-c", "kill -TERM $$").code
    masked = held("exec", "--mask", "-s", "app/db-password", "--", "sh", "-c", "kill -TERM $$").code
    env = {**UNLOCK_ENV, "KMS_CLI_NO_AGENT": "1"}
    plain_local = held("exec", "-s", "app/db-password", "--", "sh", "-c", "kill -TERM $$", env=env).code
    masked_local = held("exec", "--mask", "-s", "app/db-password", "--", "sh", "-c", "kill -TERM $$", env=env).code
    assert (plain, masked) == (plain_local, masked_local)
    assert masked == 128 + signal.SIGTERM and plain in (-signal.SIGTERM, 128 + signal.SIGTERM)
    r = held.ok("exec", "--mask", "-s", "app/db-password", "--", "sh", "-c", 'echo "[$DB_PASSWORD]"')
    assert r.out == b"[***]\n"
    # the child is the client's: its parent is the client process, not the agent
    r = held.ok("exec", "-s", "app/db-password", "--", "sh", "-c", "echo $PPID")
    assert int(r.out) not in agent_pids(held)


def test_exec_env_file_out_through_agent(held, tmp_path):
    held.ok("secret", "put", "app/db-password", input=b"pw!")
    r = held.ok("exec", "-s", "app/db-password", "--env-file-out", "e.env", "--", "sh", "-c",
                'cat "$KMS_CLI_ENV_FILE"; ls -l "$KMS_CLI_ENV_FILE" | cut -c1-10')
    assert b"DB_PASSWORD" in r.out and b"-rw-------" in r.out
    assert not (tmp_path / "e.env").exists()


def test_audit_actor_is_the_calling_process(held):
    held.ok("secret", "put", "a", input=b"v")
    n = len(audit(held))
    # the shell's pid is the one that exec's kms-cli: the entry must name it, not an agent process
    p = subprocess.run(["sh", "-c", f'echo $$; exec "{sys.executable}" -m kms_cli secret get a'], env=held.env,
                       cwd=held.tmp, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pid_line, value = p.stdout.split(b"\n", 1)
    assert value == b"v"
    entries = audit(held)
    assert [e["op"] for e in entries[n:]] == ["audit.log", "secret.get"]  # the previous listing's own entry first
    get = entries[n + 1]
    assert get["op"] == "secret.get" and get["target"] == "a" and get["result"] == "ok"
    assert get["actor"]["pid"] == int(pid_line)
    assert get["actor"]["pid"] not in agent_pids(held)
    assert get["actor"]["user"] == entries[0]["actor"]["user"] and get["actor"]["host"] == os.uname().nodename


def test_audit_log_through_agent_and_unlock_lock_entries(held):
    held.ok("secret", "put", "a", input=b"v")
    entries = held.ok("--json", "audit", "log").json_lines()
    ops = [e["op"] for e in entries]
    assert ops[:3] == ["vault.init", "agent.unlock", "secret.put"]
    held.ok("lock")
    ops = [e["op"] for e in audit(held)]
    assert ops[-2:] == ["audit.log", "agent.lock"]  # the listing stops before its own entry
    assert held.ok("audit", "verify", env=UNLOCK_ENV).code == 0


# -- 3. timers --------------------------------------------------------------------------------------

def test_idle_timeout_forgets(pvault):
    pvault.ok("secret", "put", "a", input=b"v", env=UNLOCK_ENV)
    unlock(pvault, "--idle", "1s")
    assert pvault.ok("secret", "get", "a").out == b"v"
    time.sleep(1.6)
    assert pvault("secret", "get", "a").code == 4
    assert status_json(pvault)["vaults"] == []
    assert "agent.lock" in [e["op"] for e in audit(pvault)]


@pytest.mark.slow
def test_use_restarts_idle_and_max_ends_it_anyway(pvault):
    pvault.ok("secret", "put", "a", input=b"v", env=UNLOCK_ENV)
    unlock(pvault, "--idle", "2s", "--max", "4s")
    start = time.monotonic()
    before = _ts(status_json(pvault)["vaults"][0]["idle_expires"])
    # used every ~0.7 s: alive well past the idle time
    while time.monotonic() - start < 3.0:
        assert pvault.ok("secret", "get", "a").out == b"v"
        time.sleep(0.5)
    assert _ts(status_json(pvault)["vaults"][0]["idle_expires"]) > before
    # ... but forgotten at the hard limit whatever the use
    while time.monotonic() - start < 4.6:
        pvault("secret", "get", "a")
        time.sleep(0.2)
    assert pvault("secret", "get", "a").code == 4
    assert status_json(pvault)["vaults"] == []


# -- 4. forgetting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["add", "rotate"])
def test_slots_change_forgets(pvault, change):
    pvault.ok("secret", "put", "a", input=b"v", env=UNLOCK_ENV)
    unlock(pvault)
    if change == "add":
        pvault.ok("master", "add", "env:OTHER_KEY", env={"OTHER_KEY": "22" * 32})
    else:
        pvault.ok("master", "rotate", env=UNLOCK_ENV)
    assert status_json(pvault)["vaults"] == []
    # the next command unlocks as usual: without a key, exit 4; with the passphrase, it works
    assert pvault("secret", "get", "a").code == 4
    assert pvault.ok("secret", "get", "a", env=UNLOCK_ENV).out == b"v"
    if change == "add":
        assert pvault.ok("secret", "get", "a", env={"OTHER_KEY": "22" * 32}).out == b"v"


def test_replaced_vault_file_is_never_served(pvault, tmp_path):
    pvault.ok("secret", "put", "a", input=b"old vault value", env=UNLOCK_ENV)
    unlock(pvault)
    other = passphrase_vault(tmp_path, "other")  # same passphrase, another vault (another root key)
    other.ok("secret", "put", "a", input=b"new vault value", env=UNLOCK_ENV)
    backup = tmp_path / "held.db.bak"
    shutil.move(pvault.vault, backup)
    shutil.move(other.vault, pvault.vault)
    try:
        r = pvault("secret", "get", "a")
        assert r.code == 4 and b"old vault value" not in r.out  # fell back: no passphrase here
        assert pvault.ok("secret", "get", "a", env=UNLOCK_ENV).out == b"new vault value"
        assert status_json(pvault)["vaults"] == []
    finally:
        shutil.move(pvault.vault, other.vault)
        shutil.move(backup, pvault.vault)
    # the original file is back, but the agent forgot it: unlock again to be served
    assert pvault("secret", "get", "a").code == 4
    unlock(pvault)
    assert pvault.ok("secret", "get", "a").out == b"old vault value"


def test_other_vault_path_not_held_runs_locally(held, tmp_path):
    """A request for a vault the agent does not hold runs in the client, the same as without an agent."""
    held.ok("secret", "put", "a", input=b"held")
    other = passphrase_vault(tmp_path, "other")
    other.env["KMS_CLI_AGENT_SOCK"] = held.env["KMS_CLI_AGENT_SOCK"]
    other.ok("secret", "put", "a", input=b"mine", env=UNLOCK_ENV)
    for args in (("secret", "get", "a"), ("secret", "get", "nope"), ("--json", "secret", "list")):
        via = other(*args, env=UNLOCK_ENV)
        local = other(*args, env={**UNLOCK_ENV, "KMS_CLI_NO_AGENT": "1"})
        assert (via.code, via.out, via.err) == (local.code, local.out, local.err)
    assert other("secret", "get", "a").code == 4  # not served: the agent holds another vault


# -- 5. same uid only ---------------------------------------------------------------------------------

NOBODY_CLIENT = textwrap.dedent("""
    import os, socket, struct, sys
    path = sys.argv[1]
    def frame(*f):
        body = b"".join(b"%d:%s," % (len(x), x) for x in f)
        return struct.pack(">I", len(body)) + body
    out = []
    for req in (frame(b"status", b"kms-cli-agent/1"), frame(b"lock", b"kms-cli-agent/1", b""),
                frame(b"stop", b"kms-cli-agent/1")):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(req)
        except OSError:
            pass
        data = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        except OSError:
            pass
        out.append(data.hex())
        s.close()
    print(" ".join(out) if all(out) else "|".join(out))
""")


def test_another_uid_is_refused(pvault, tmp_path):
    if shutil.which("runuser") is None or os.getuid() != 0:
        pytest.skip("needs root and runuser to run a client as nobody")
    python = "/usr/bin/python3"  # the venv's interpreter lives under /root, which nobody cannot enter
    if not os.access(python, os.X_OK):
        pytest.skip("no system python3 for a client run as nobody")
    import tempfile

    # a socket nobody can reach (pytest's tmp dirs are 0700): its own directory under /tmp
    top = tempfile.mkdtemp(prefix="kms-agent-uid-")
    os.chmod(top, 0o755)
    pvault.env["KMS_CLI_AGENT_SOCK"] = os.path.join(top, "agent", "agent.sock")
    held = pvault
    unlock(held)
    held.ok("secret", "put", "a", input=b"top secret")
    path = sock_path(held)
    os.chmod(path.parent, 0o777)
    os.chmod(path, 0o777)
    script = os.path.join(top, "nobody_client.py")
    with open(script, "w") as f:
        f.write(NOBODY_CLIENT)
    os.chmod(script, 0o644)
    try:
        p = subprocess.run(["runuser", "-u", "nobody", "--", python, script, str(path)],
                           capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr.decode()
        answers = [bytes.fromhex(h) for h in re.split(r"[ |]", p.stdout.decode().strip())]
        assert len(answers) == 3
        for a in answers:
            if a:  # an error frame, never a status or a served request
                f = fields(a)
                assert f[0] == b"error", f
        assert all(b"top secret" not in a and b'"vaults"' not in a for a in answers)
        # the CLI's thin client run as nobody (stdlib only up to the agent's answer): refused, it
        # says so in one warning and falls back; the agent served nothing
        env = {"PATH": "/usr/bin:/bin", "HOME": top, "PYTHONPATH": str(ROOT), "KMS_CLI_VAULT": str(held.vault),
               "KMS_CLI_AGENT_SOCK": str(path), "XDG_STATE_HOME": top, "NO_COLOR": "1"}
        p = subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                            python, "-m", "kms_cli", "secret", "get", "a"],
                           capture_output=True, timeout=30, cwd="/")
        assert p.returncode != 0 and b"top secret" not in p.stdout
        warnings = [line for line in p.stderr.decode().splitlines() if line.startswith("kms-cli: warning:")]
        # refused at accept: the error frame, or a closed connection while it still sent (EPIPE)
        assert len(warnings) == 1 and "the agent" in warnings[0], p.stderr.decode()
        # still held and serving its own user; nobody's stop/lock did nothing
        assert len(status_json(held)["vaults"]) == 1
        assert held.ok("secret", "get", "a").out == b"top secret"
    finally:
        stop_agent(held)
        shutil.rmtree(top, ignore_errors=True)


def test_restore_through_agent_forgets(held):
    held.ok("secret", "put", "a", input=b"before")
    held.ok("backup", "-o", "b.bak")
    held.ok("secret", "put", "a", input=b"after")
    # the backup's check unlocks the backup with the usual sources: here the passphrase
    held.ok("restore", "b.bak", "--force", env=UNLOCK_ENV)
    assert status_json(held)["vaults"] == []  # restored: forgotten, the next command unlocks as usual
    assert held("secret", "get", "a").code == 4
    assert held.ok("secret", "get", "a", env=UNLOCK_ENV).out == b"before"


def test_restore_through_agent_with_held_key_only(held):
    held.ok("secret", "put", "a", input=b"before")
    held.ok("backup", "-o", "b.bak")
    r = held("restore", "b.bak", "--force")
    assert r.code == 0, r.err


def test_agent_start_timers_are_the_defaults_of_later_unlocks(pvault):
    pvault.ok("agent", "start", "--idle", "20m", "--max", "3h")
    unlock(pvault)
    [v] = status_json(pvault)["vaults"]
    assert abs(_ts(v["idle_expires"]) - _ts(v["unlocked"]) - 1200) <= 2
    assert abs(_ts(v["expires"]) - _ts(v["unlocked"]) - 3 * 3600) <= 1
    unlock(pvault, "--idle", "1m")  # unlock's own option wins
    [v] = status_json(pvault)["vaults"]
    assert abs(_ts(v["idle_expires"]) - _ts(v["unlocked"]) - 60) <= 2
