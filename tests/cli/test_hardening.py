"""A kms-cli process holding key material cannot dump core (issue 10, section 4), and `exec`'s audit
entry says what the user saw when CMD cannot start (section 3)."""

import glob
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from kmshelp import children


def core_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4]  # the soft limit
    raise AssertionError("no core limit line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_exec_parent_holding_secrets_cannot_dump_core(vault, tmp_path):
    """The issue's reproduction: an `exec --mask` parent killed with SIGSEGV under `ulimit -c unlimited`."""
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"cores are not written to the working directory here (core_pattern {pattern!r})")
    if resource.getrlimit(resource.RLIMIT_CORE)[1] != resource.RLIM_INFINITY:
        pytest.skip("the hard core limit is not unlimited")
    vault.ok("secret", "put", "app/token", input=b"tok-31337")
    cwd = tmp_path / "cores"
    cwd.mkdir()

    def ulimit_c_unlimited():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    kids: list[int] = []
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "exec", "--mask", "-s", "app/token", "--",
                          "sh", "-c", "echo ready; exec sleep 60"],
                         env=vault.env, cwd=cwd, stdout=subprocess.PIPE, preexec_fn=ulimit_c_unlimited)
    try:
        assert p.stdout.readline() == b"ready\n"
        assert core_limit(p.pid) == "0"  # RLIMIT_CORE
        if os.getuid() != 0:  # a non-dumpable process's /proc files are root's
            assert os.stat(f"/proc/{p.pid}/status").st_uid == 0
        # PR_SET_DUMPABLE 0 holds even where the limit is lifted again (or ignored: a core_pattern pipe)
        resource.prlimit(p.pid, resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        kids = children(p.pid)
        os.kill(p.pid, signal.SIGSEGV)
        assert p.wait(timeout=30) == -signal.SIGSEGV
    finally:
        for pid in children(p.pid) + kids:  # the shell's sleep, orphaned when kms-cli died
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(0.2)
    assert glob.glob(str(cwd / "core*")) == [], "kms-cli dumped core with the secrets in its memory"


def _exec_entries(vault) -> list[dict]:
    return [e for e in map(json.loads, vault.ok("audit", "export").out.splitlines()) if e["op"] == "exec"]


def test_exec_of_a_program_that_cannot_start_is_audited_as_an_error(vault, tmp_path):
    vault.ok("secret", "put", "app/token", input=b"tok-1")
    r = vault("exec", "-s", "app/token", "--", "no-such-program-anywhere")
    assert r.code == 127
    assert r.err.splitlines() == ["kms-cli: error: command not found: no-such-program-anywhere"]
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o600)
    r = vault("--json", "exec", "-s", "app/token", "--", str(script))
    assert r.code == 126
    assert json.loads(r.err.splitlines()[-1])["error"]["code"] == "command_not_executable"
    got = [(e["target"], e["result"], e["error"]) for e in _exec_entries(vault)]
    assert got == [("app/token", "error", "command_not_found"), ("app/token", "error", "command_not_executable")]
    # a program that starts: "ok", as before
    vault.ok("exec", "-s", "app/token", "--", "true")
    assert _exec_entries(vault)[-1]["result"] == "ok"
    vault.ok("audit", "verify")
