"""A vault on PostgreSQL beside the same vault in a SQLite file (issue 15), side by side in one run.

`secret get` latency on two vaults holding the same 1,000 secrets, one a file and one a schema on
a private PostgreSQL server on 127.0.0.1 (TCP, scram-sha-256 with the password in PGPASSFILE,
fsync on), both without the agent (--no-agent: a cold process that connects, unlocks and reads)
and served by the agent (`kms-cli unlock`; the master key is then taken out of the environment,
so a command the agent did not serve fails instead of unlocking quietly): best and median of N
runs, interleaved. Then write throughput: 1, 4 and 16 writer processes, each running
`kms-cli --no-agent secret put` in a loop for a fixed time, in commits per second for each backend;
and the same with the loop inside each writer process (kms_cli's entry point called again and
again: no interpreter start nor driver import per put, so the database's commit path shows).
Target (issue 15): PostgreSQL's `secret get` within 1.5x of SQLite's, without and with the agent.

The server is started here with tests/servers/postgres.py's Cluster (initdb as the `postgres` user
when run as root) and stopped at the end, and so is the agent. Run by `scripts/bench --only
postgres` with the bench venv's interpreter; on its own: `.venv-bench/bin/python
scripts/bench_postgres.py [--quick]` (kms-cli installed with the `postgres` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_agent import stop_agent  # scripts/ is this script's directory, first on sys.path

PY = sys.executable
KMS = [os.path.join(os.path.dirname(PY), "kms-cli")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One writer: `secret put` of fresh names in a loop until the deadline; prints how many it did.
# Every writer says it is ready, then all are given the same deadline (stdin) at once.
WRITER = r"""
import subprocess, sys, time
kms, prefix = sys.argv[1], sys.argv[2]
print("ready", flush=True)
deadline = float(sys.stdin.readline())
n = 0
while time.time() < deadline:
    p = subprocess.run([kms, "--no-agent", "-q", "secret", "put", f"{prefix}/{n}"], input=b"v" * 32,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        sys.exit(1)
    n += 1
print(n)
"""

# The same loop inside one process (the command through kms_cli's entry point, without an
# interpreter start and the driver's import per put): what the database's commit path allows.
WRITER_IN_PROCESS = r"""
import io, os, sys, time
import psycopg, sqlite3
from kms_cli.cli.entry import run
prefix = sys.argv[2]
print("ready", flush=True)
deadline = float(sys.stdin.readline())
out, n = sys.stdout, 0
sys.stdout = open(os.devnull, "w")
while time.time() < deadline:
    sys.stdin = io.TextIOWrapper(io.BytesIO(b"v" * 32))
    code = run(["--no-agent", "-q", "secret", "put", f"{prefix}/{n}"])
    if code != 0:
        sys.exit(code)
    n += 1
out.write(f"{n}\n")
"""


def timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of one run, its output to /dev/null. A failure stops the benchmark, and so does
    anything on stderr (a warning there would mean the agent did not serve the command)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, _ = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    err = p.stderr.read()
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or err.strip():
        raise SystemExit(f"bench: {' '.join(cmd)} failed (exit {code}): {err.decode(errors='replace')}")
    return elapsed


def check(cmd: list[str], env: dict, stdin: bytes | None = None) -> str:
    p = subprocess.run(cmd, env=env, input=stdin if stdin is not None else b"", capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed (exit {p.returncode}): {p.stderr.decode(errors='replace')}")
    return p.stdout.decode()


class Agent:
    """The bench's own agent (its own socket); stopped, or killed, at the end whatever happens."""

    def __init__(self, env: dict):
        self.env, self.pid = env, None

    def unlock(self, env: dict) -> None:
        check(KMS + ["-q", "unlock", "--idle", "1h", "--max", "2h"], env)
        if self.pid is None:
            self.pid = json.loads(check(KMS + ["--json", "agent", "status"], self.env))["pid"]

    def held(self) -> list[str]:
        return [v["vault"] for v in json.loads(check(KMS + ["--json", "agent", "status"], self.env))["vaults"]]

    def stop(self) -> None:
        if self.pid is None:
            return
        stop_agent(self.env, self.pid)
        self.pid = None


def latencies(cmds: dict[str, tuple[list[str], dict]], n: int) -> dict[str, list[float]]:
    """`n` runs of each command, interleaved (one of each per round, the order turning), so that
    drift on a shared machine falls on all alike."""
    for cmd, env in cmds.values():  # warm the page cache and the server's buffers
        timed(cmd, env)
    out: dict[str, list[float]] = {name: [] for name in cmds}
    names = list(cmds)
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            out[name].append(timed(*cmds[name]))
    return out


def throughput(env: dict, writers: int, seconds: float, tag: str, script: str = WRITER) -> float:
    """Commits per second of `writers` processes each running `secret put` for `seconds` (all
    started and ready first: their start-up is not in the figure)."""
    procs = [subprocess.Popen([PY, "-c", script, KMS[0], f"{tag}/w{writers}-{w}"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in range(writers)]
    for p in procs:
        if p.stdout.readline().strip() != b"ready":
            raise SystemExit(f"bench: a writer did not start: {p.stderr.read().decode(errors='replace')}")
    start = time.time()
    for p in procs:
        p.stdin.write(f"{start + seconds}\n".encode())
        p.stdin.flush()
    total = 0
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"bench: a writer failed: {err.decode(errors='replace')}")
        total += int(out)
    return total / (time.time() - start)


def ms(s: float) -> str:
    return f"{s * 1000:6.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secrets", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long each write-throughput run lasts")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds = 5, 3.0
    sys.path.append(ROOT)  # tests/servers/postgres.py (appended: the installed kms_cli stays the one measured)
    from tests.servers.postgres import Cluster, bindir

    if bindir() is None:
        print("  (PostgreSQL is not installed: apt-get install postgresql)")
        return
    work = tempfile.mkdtemp(prefix="kms-cli-bench-pg-", dir=os.environ.get("BENCH_DIR"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_CLI_", "PG"))}
    base.update(HOME=work, XDG_RUNTIME_DIR=os.path.join(work, "run"),
                KMS_CLI_AGENT_SOCK=os.path.join(work, "agent", "agent.sock"))
    os.makedirs(base["XDG_RUNTIME_DIR"], mode=0o700)
    # `unlock` spawns `python -m kms_cli agent start --foreground` in the current directory, and -m
    # puts it first on sys.path: from the checkout the agent would run the checkout's kms_cli.
    os.chdir(work)
    cluster, agent = None, Agent(base)
    try:
        t = time.perf_counter()
        cluster = Cluster().start()
        cluster.createdb("kms")
        version = cluster.psql("SHOW server_version").strip()
        key = {"KMS_CLI_MASTER_KEY": "ab" * 32}
        vaults = {"SQLite": dict(base, KMS_CLI_VAULT=os.path.join(work, "vault.db")),
                  "PostgreSQL": dict(base, KMS_CLI_VAULT=cluster.uri("kms", vault="bench"), **cluster.env)}
        lines = "".join(f"S{i:05d}=value-{i}\n" for i in range(args.secrets)).encode()
        for env in vaults.values():
            check(KMS + ["-q", "init"], {**env, **key})
            check(KMS + ["-q", "secret", "import", "-"], {**env, **key}, stdin=lines)
        print(f"  PostgreSQL {version} on 127.0.0.1 (TCP, scram-sha-256, fsync on) and a SQLite file, "
              f"{args.secrets} secrets each, made in {time.perf_counter() - t:.1f} s", flush=True)

        name = f"S{args.secrets // 2:05d}"
        cold = {b: (KMS + ["--no-agent", "secret", "get", name], {**env, **key}) for b, env in vaults.items()}
        # anchors: what a bare interpreter costs, and what importing the driver alone adds to it
        cold["python -c pass"] = ([PY, "-c", "pass"], base)
        cold["python -c 'import psycopg'"] = ([PY, "-c", "import psycopg"], base)
        got = latencies(cold, args.runs)
        for env in vaults.values():
            agent.unlock({**env, **key})
        held = agent.held()
        if len(held) != 2:
            raise SystemExit(f"bench: the agent holds {held}, not both vaults")
        # served by the agent: no master key here, so a command it did not serve would fail
        warm = {b: (KMS + ["secret", "get", name], env) for b, env in vaults.items()}
        got_agent = latencies(warm, args.runs)
        agent.stop()

        print(f"\n  secret get, ms (best / median of {args.runs}, interleaved)   SQLite          PostgreSQL"
              f"      PostgreSQL / SQLite (median)")
        for anchor in ("python -c pass", "python -c 'import psycopg'"):
            a = got[anchor]
            print(f"  {'anchor: ' + anchor:52s} {ms(min(a))} / {ms(statistics.median(a))}")
        ratios = {}
        for label, figures in (("--no-agent (connect, unlock, read)", got), ("served by the agent", got_agent)):
            s, p = figures["SQLite"], figures["PostgreSQL"]
            ratios[label] = statistics.median(p) / statistics.median(s)
            print(f"  {label:52s} {ms(min(s))} / {ms(statistics.median(s))}  {ms(min(p))} / "
                  f"{ms(statistics.median(p))}   {ratios[label]:.2f}x  (best {min(p) / min(s):.2f}x)", flush=True)

        print(f"\n  secret put --no-agent, commits/s ({args.seconds:g} s per run)   SQLite   PostgreSQL   "
              f"PostgreSQL / SQLite")
        for how, script in (("kms-cli runs", WRITER), ("in-process loop", WRITER_IN_PROCESS)):
            for writers in (1, 4, 16):
                rate = {b: throughput({**env, **key}, writers, args.seconds, f"{how[:2]}", script)
                        for b, env in vaults.items()}
                label = f"{writers:2d} writer process{'es' if writers > 1 else ''}, {how}"
                print(f"  {label:52s} {rate['SQLite']:7.1f}   {rate['PostgreSQL']:10.1f}   "
                      f"{rate['PostgreSQL'] / rate['SQLite']:.2f}x", flush=True)
        for env in vaults.values():
            check(KMS + ["-q", "audit", "verify"], {**env, **key})
        verdict = ", ".join(f"{k}: {'met' if r <= 1.5 else 'NOT met'} ({r:.2f}x)" for k, r in ratios.items())
        print(f"\n  target (PostgreSQL secret get within 1.5x of SQLite) {verdict}; both audit chains verify")
    finally:
        agent.stop()
        if cluster is not None:
            cluster.stop()
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
