#!/usr/bin/env python3
"""Benchmark `kms-cli audit verify` on a vault with a large audit log (default 1,000,000 entries).

Builds the vault fast: `kms-cli init`, then every entry is made with AuditLog's own
canonical encoding and MAC and inserted directly, in one transaction, with the
sealed head updated at the end. Then times `python -m kms_cli audit verify`
through the real CLI (process start and unlock included) and prints the result.

    .venv/bin/python scripts/bench_audit.py [--entries N] [--keep DIR] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MASTER_KEY = "42" * 32
INSERT = "INSERT INTO audit (seq, time, entry, op, target, mac) VALUES (?, ?, ?, ?, ?, ?)"
OPS = ("secret.get", "secret.put", "encrypt", "decrypt", "key.rotate", "exec", "key.show", "secret.list")


def build(path: str, entries: int, env: dict) -> None:
    from kms_cli import durations
    from kms_cli.audit import canonical
    from kms_cli.providers.base import SourceOptions
    from kms_cli.vault.core import Options, Vault

    vault = Vault.open(Options(path=path, source=SourceOptions(environ=env)))
    log = vault.audit
    actor = {"user": "bench", "host": "bench-host-01", "pid": 4242, "ci": None}
    store = vault.store
    start = durations.now() - entries  # one entry a second, ending now
    with store.write():
        seq, prev = log.head()
        batch = []
        for n in range(entries):
            seq += 1
            op = OPS[n % len(OPS)]
            entry = {
                "seq": seq,
                "time": durations.rfc3339(start + n),
                "actor": actor,
                "op": op,
                "target": f"acme/prod/service-{n % 97}/db-password",
                "version": n % 7 + 1,
                "result": "ok" if n % 13 else "denied",
                "error": None if n % 13 else "not_found",
                "prev": prev,
            }
            if n % 11 == 0:
                entry["detail"] = {"count": n % 5}
            data = canonical(entry)
            mac = log._fast.hex(data)  # the same HMAC-SHA-256 as append() (tests/unit/test_audit_chain.py)
            batch.append((seq, entry["time"], data.decode(), op, entry["target"], mac))
            prev = mac
            if len(batch) == 50_000:
                store.conn.executemany(INSERT, batch)
                batch = []
        if batch:
            store.conn.executemany(INSERT, batch)
        log._set_head(seq, prev)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    vault.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="build the vault in DIR and keep it")
    args = ap.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="kms-cli-bench-")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "vault.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_CLI_")}
    env.update({"KMS_CLI_VAULT": path, "KMS_CLI_MASTER_KEY": MASTER_KEY, "PYTHONPATH": ROOT, "NO_COLOR": "1"})
    try:
        if os.path.exists(path):
            os.unlink(path)
        cli = [sys.executable, "-m", "kms_cli"]
        subprocess.run(cli + ["init"], env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        build(path, args.entries, env)
        built = time.perf_counter() - t0
        size = os.path.getsize(path)
        print(f"built {args.entries:,} entries in {built:.1f} s ({size / 1e6:.0f} MB)")
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            p = subprocess.run(cli + ["audit", "verify"], env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if p.returncode != 0:
                print(f"audit verify failed (exit {p.returncode}): {p.stderr.strip()}")
                return 1
        print(p.stdout.strip())
        print(f"kms-cli audit verify, {args.entries:,} entries: best {min(times):.2f} s, "
              f"runs {', '.join(f'{t:.2f}' for t in times)} s (wall clock, CLI start and unlock included)")
        return 0 if min(times) < 10 else 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
