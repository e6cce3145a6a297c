"""Concurrency and crash safety: six writers lose nothing; SIGKILL never leaves a half-written vault."""

import os
import signal
import subprocess
import sys
import time

from kmshelp import ROOT

WRITER = r"""
import os, subprocess, sys
n, who = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    p = subprocess.run([sys.executable, "-m", "kms_cli", "secret", "put", f"w{who}/s{i}"],
                       input=f"value-{who}-{i}".encode(), capture_output=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode())
        sys.exit(1)
    print(f"w{who}/s{i}", flush=True)
"""


def test_six_concurrent_writers_lose_nothing(vault, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), "8", str(w)], env=vault.env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        assert b"locked" not in err
    names = {s["name"] for s in vault.ok("--json", "secret", "list").json()}
    assert names == {f"w{w}/s{i}" for w in range(6) for i in range(8)}
    for w in range(6):
        assert vault.ok("secret", "get", f"w{w}/s7").out == f"value-{w}-7".encode()


LOOP = r"""
import sys
sys.argv = ["kms-cli"]
from kms_cli.cli.entry import run
import io
i = 0
while True:
    sys.stdin = io.TextIOWrapper(io.BytesIO(f"v{i}".encode()))
    code = run(["secret", "put", f"k{i % 5}"])
    if code != 0:
        sys.exit(code)
    print(f"k{i % 5} v{i}", flush=True)
    i += 1
"""


def test_sigkill_at_any_instant_keeps_acknowledged_writes(vault, tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = dict(vault.env, PYTHONPATH=str(ROOT))
    for delay in (0.3, 0.45, 0.6, 0.8, 1.1):
        p = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        out = p.communicate()[0].decode().split("\n")
        acked = [l.split() for l in out if l.strip()]
        last = {}
        for name, value in acked:
            last[name] = value
        vault.ok("key", "list")  # opens cleanly
        for name, value in last.items():
            got = vault.ok("secret", "get", name).out.decode()
            assert int(got[1:]) >= int(value[1:]), (name, got, value)
    import sqlite3

    db = sqlite3.connect(vault.vault)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
