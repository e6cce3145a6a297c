"""A vault on a real PostgreSQL server, through the real CLI (spec section 8, issue 15).

Concurrent writers from many processes, a client SIGKILLed inside a large import, the server
stopped in the middle of a command and restarted between two, an unreachable or silent server, a
password refused in the URI, TLS with verify-full, statements bounded by KMS_CLI_TIMEOUT, and two
vaults in one database. Every server is real (tests/servers/postgres.py); nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kmshelp import Kms, base_env

pytestmark = pytest.mark.server

PUT = [sys.executable, "-m", "kms_cli", "secret", "put"]


# -- helpers ---------------------------------------------------------------------------------

def runner(tmp: Path, cluster, uri: str, **env: str) -> Kms:
    """A Kms runner on `uri` with the cluster's PGPASSFILE and its own HOME under `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    e = base_env(tmp)
    e.update(cluster.env, KMS_CLI_VAULT=uri, **env)
    return Kms(tmp, e)


def admin(cluster, db: str = "kms"):
    """A superuser connection over the cluster's Unix socket (autocommit)."""
    import psycopg

    return psycopg.connect(host=cluster.sock, port=cluster.port, user="postgres", dbname=db, autocommit=True)


def schema_of(kms: Kms) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(kms.env["KMS_CLI_VAULT"]).query)["vault"][-1]


def secret_names(kms: Kms) -> set[str]:
    return {s["name"] for s in kms.ok("--json", "secret", "list").json()}


def audit(kms: Kms) -> list[dict]:
    return kms.ok("--json", "audit", "log").json_lines()


def one_line_error(err: str) -> None:
    """A clean failure: `kms-cli: error: ...` (and at most a hint), never a traceback."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("kms-cli: error: "), err
    assert all(l.startswith(("kms-cli: error: ", "kms-cli: hint: ")) for l in lines), err
    assert sum(l.startswith("kms-cli: error: ") for l in lines) == 1, err


def wait_for_write_txn(cluster, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until a kms-cli session holds a write transaction that has written rows (an xid)."""
    deadline = time.monotonic() + timeout
    with admin(cluster) as conn:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before it was caught writing"
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kms-cli' "
                               "AND backend_xid IS NOT NULL").fetchone()
            if row[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no kms-cli write transaction seen")


def dotenv(n: int, tag: str = "") -> bytes:
    return "".join(f"K{i:05d}=value-{tag}{i}\n" for i in range(n)).encode()


# -- 1. concurrent writers: nothing lost, versions without gaps, one chain ----------------------

WRITER = r"""
import io, sys
from kms_cli.cli.entry import run

n, who = int(sys.argv[1]), sys.argv[2]
for i in range(n):  # 25 commands through the CLI's entry point, each its own connection and transaction
    sys.stdin = io.TextIOWrapper(io.BytesIO(f"value-{who}-{i}".encode()))
    code = run(["secret", "put", f"w{who}/s{i}"])
    if code != 0:
        sys.exit(code)
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_and_keep_one_chain(pg_vault, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = [subprocess.Popen([sys.executable, str(script), "25", str(w)], env=pg_vault.env, cwd=tmp_path,
                                stderr=subprocess.PIPE) for w in range(4)]
    # 20 processes racing on one name: each waits on its stdin, then all are released at once
    shared = [subprocess.Popen([*PUT, "shared"], env=pg_vault.env, cwd=tmp_path, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(20)]
    values = {p.pid: f"shared-{p.pid}".encode() for p in shared}
    for p in shared:
        p.stdin.write(values[p.pid])
    for p in shared:
        p.stdin.close()
    for p in shared:
        p.wait(timeout=120)
        assert p.returncode == 0, p.stderr.read().decode()
    for w in writers:
        assert w.wait(timeout=240) == 0, w.stderr.read().decode()

    assert secret_names(pg_vault) == {f"w{w}/s{i}" for w in range(4) for i in range(25)} | {"shared"}
    history = pg_vault.ok("--json", "secret", "history", "shared").json()
    assert sorted(h["version"] for h in history) == list(range(1, 21))

    entries = audit(pg_vault)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    puts = [e for e in entries if e["op"] == "secret.put"]
    assert all(e["result"] == "ok" for e in puts)
    assert sorted((e["target"], e["version"]) for e in puts if e["target"] != "shared") == \
        sorted((f"w{w}/s{i}", 1) for w in range(4) for i in range(25))
    # the shared name: one entry per process (its pid), versions 1..20 each exactly once
    by_version = {e["version"]: e["actor"]["pid"] for e in puts if e["target"] == "shared"}
    assert sorted(by_version) == list(range(1, 21))
    assert set(by_version.values()) == set(values)
    for v in (1, 7, 20):  # the value of a version is what the process that wrote it sent
        assert pg_vault.ok("secret", "get", "shared", "--version", str(v)).out == values[by_version[v]]
    assert pg_vault.ok("secret", "get", "shared").out == values[by_version[20]]
    assert pg_vault.ok("secret", "get", "w3/s24").out == b"value-3-24"
    pg_vault.ok("audit", "verify")


# -- 2. SIGKILL inside a large import: all or nothing --------------------------------------------

@pytest.mark.slow
def test_sigkill_during_a_large_import_leaves_all_or_nothing(pg_vault, pg_cluster, tmp_path):
    pg_vault.ok("secret", "put", "before", input="kept")
    n = 20_000
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "import", "-"], env=pg_vault.env,
                         cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(dotenv(n))
    p.stdin.close()
    wait_for_write_txn(pg_cluster, p)
    time.sleep(0.3)
    assert p.poll() is None, "the import finished before it could be killed: make it larger"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    names = secret_names(pg_vault)
    assert names - {"before"} in (set(), {f"K{i:05d}" for i in range(n)})
    assert "before" in names
    # the dead client's transaction and its lock are gone: the next writer does not wait
    start = time.monotonic()
    pg_vault.ok("secret", "put", "after", input="v", env={"KMS_CLI_TIMEOUT": "5"})
    assert time.monotonic() - start < 10
    pg_vault.ok("audit", "verify")
    ops = [e["op"] for e in audit(pg_vault)]
    assert ops.count("secret.import") == (1 if len(names) > 1 else 0)
