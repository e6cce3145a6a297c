"""The numbers behind scripts/bench. Every figure is measured here, in this run, on this machine."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
KMS = [os.path.join(os.path.dirname(PY), "kms-cli")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env, stdin=None, stdout=subprocess.DEVNULL) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in KiB (from wait4's rusage)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    err = p.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {err.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss


def best(cmd, env, n, **kw) -> tuple[float, int]:
    runs = [run(cmd, env, **kw) for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def gib_s(size: int, seconds: float) -> float:
    return size / seconds / (1 << 30)


def openssl_speed(reps: int) -> float | None:
    """`openssl speed`'s one-core AES-256-GCM figure on 16 KiB buffers: the best of `reps` runs,
    the same statistic as every other tool here (it varies from run to run on a shared machine)."""
    if not shutil.which("openssl"):
        return None
    rates = []
    for _ in range(reps):
        out = subprocess.run(["openssl", "speed", "-elapsed", "-seconds", "2", "-bytes", "16384", "-evp", "aes-256-gcm"],
                             capture_output=True, text=True).stdout
        m = re.search(r"^AES-256-GCM\s+([\d.]+)k", out, re.M | re.I)
        if m:
            rates.append(float(m.group(1)) * 1000 / (1 << 30))
    return max(rates) if rates else None


def throughput(work: str, env: dict, size_mb: int, reps: int) -> None:
    size = size_mb << 20
    plain = os.path.join(work, "plain.bin")
    with open(plain, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size_mb):
            f.write(block)
    print(f"\n== throughput: one {size_mb} MiB file in the page cache, best of {reps} ==")
    # Outputs go to /dev/null, for kms-cli and age alike: this measures the tools, not the disk.
    runs: dict[str, tuple[list, list]] = {}  # name -> (command, inputs to keep in the page cache)
    for alg in ("aes-256-gcm", "chacha20-poly1305"):
        subprocess.run(KMS + ["-q", "key", "create", f"bench-{alg}", "--algorithm", alg], env=env, check=True)
        ct = os.path.join(work, f"ct-{alg}")
        run(KMS + ["encrypt", "--key", f"bench-{alg}", "-i", plain, "-o", ct], env)  # the input of decrypt
        runs[f"kms-cli encrypt ({alg})"] = (KMS + ["encrypt", "--key", f"bench-{alg}", "-i", plain, "-o", "/dev/null"], [plain])
        runs[f"kms-cli decrypt ({alg})"] = (KMS + ["decrypt", "-i", ct, "-o", "/dev/null"], [ct])
    age = shutil.which("age")
    if age:
        keyfile = os.path.join(work, "age.key")
        subprocess.run(["age-keygen", "-o", keyfile], capture_output=True, check=True)
        recipient = subprocess.run(["age-keygen", "-y", keyfile], capture_output=True, text=True).stdout.strip()
        act = os.path.join(work, "ct.age")
        run([age, "-r", recipient, "-o", act, plain], env)
        runs["age encrypt"] = ([age, "-r", recipient, "-o", "/dev/null", plain], [plain])
        runs["age decrypt"] = ([age, "-d", "-i", keyfile, "-o", "/dev/null", act], [act])
    # Interleaved: each round runs every tool once, so a slow spell of a shared machine hits them all.
    times: dict[str, list] = {name: [] for name in runs}
    for _ in range(reps):
        for name, (cmd, inputs) in runs.items():
            for path in inputs:  # back into the page cache (memory pressure may have evicted it)
                subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
            times[name].append(run(cmd, env))
    rows = [(name, gib_s(size, min(t for t, _ in ts)), max(r for _, r in ts)) for name, ts in times.items()]
    ossl = openssl_speed(reps)
    for name, rate, rss in rows:
        print(f"  {name:38s} {rate:6.2f} GiB/s   peak RSS {rss / 1024:6.1f} MiB")
    if ossl:
        print(f"  {'openssl speed -evp aes-256-gcm (1 core)':38s} {ossl:6.2f} GiB/s   (best of {reps} runs)")
    kms = {n: r for n, r, _ in rows}
    print("  ratios:")
    if age:
        print(f"    kms-cli encrypt (aes-256-gcm) / age encrypt  {kms['kms-cli encrypt (aes-256-gcm)'] / kms['age encrypt']:.2f}x  (target >= 1.5x)")
        print(f"    kms-cli decrypt (aes-256-gcm) / age decrypt  {kms['kms-cli decrypt (aes-256-gcm)'] / kms['age decrypt']:.2f}x  (target >= 1.5x)")
    if ossl:
        print(f"    kms-cli encrypt (aes-256-gcm) / openssl 1 core  {kms['kms-cli encrypt (aes-256-gcm)'] / ossl:.2f}x  (target >= 0.75x)")
        print(f"    kms-cli decrypt (aes-256-gcm) / openssl 1 core  {kms['kms-cli decrypt (aes-256-gcm)'] / ossl:.2f}x  (target >= 0.75x)")
    peak = max(rss for name, _, rss in rows if name.startswith("kms"))
    print(f"  kms-cli peak RSS {peak / 1024:.1f} MiB (target < 64 MiB at any size)")
    for path in [plain] + [p for _, inputs in runs.values() for p in inputs]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def cold_start(work: str, env: dict, reps: int, count: int) -> None:
    print(f"\n== cold start: `secret get` on a vault with {count} secrets, best and median of {reps} ==")
    # `secret import` puts every line of a dotenv file in one transaction
    lines = "".join(f"S{i:05d}=value-{i}\n" for i in range(count))
    subprocess.run(KMS + ["-q", "secret", "import", "-"], input=lines.encode(), env=env, check=True)
    # The floor: an interpreter that only imports what any secret read needs and does nothing
    # (sqlite3, and cryptography's hash/KDF layer, which brings typing, enum and re with it).
    floor_code = ("import sqlite3; from cryptography.hazmat.primitives import hashes; "
                  "from cryptography.hazmat.primitives.kdf.hkdf import HKDF")
    bare, floor, get = [], [], []
    for _ in range(reps):  # interleaved, so that a slow spell of the machine hits all three
        bare.append(run([PY, "-c", "pass"], env)[0])
        floor.append(run([PY, "-c", floor_code], env)[0])
        get.append(run(KMS + ["secret", "get", f"S{count // 2:05d}"], env)[0])
    b, f, g = min(bare), min(floor), min(get)
    print(f"  python -c pass                   best {b * 1000:6.1f} ms   median {statistics.median(bare) * 1000:6.1f} ms")
    print(f"  python importing the libraries   best {f * 1000:6.1f} ms   median {statistics.median(floor) * 1000:6.1f} ms"
          f"   ({f / b:.2f}x bare: sqlite3 + cryptography's hash/KDF layer, no work)")
    print(f"  kms-cli secret get               best {g * 1000:6.1f} ms   median {statistics.median(get) * 1000:6.1f} ms")
    print(f"  ratio {g / b:.2f}x best, {statistics.median(get) / statistics.median(bare):.2f}x median (target <= 3x)")


def audit_verify(work: str, env: dict) -> None:
    script = os.path.join(ROOT, "scripts", "bench_audit.py")
    if os.path.exists(script):
        print("\n== audit verify: 1,000,000 entries ==")
        subprocess.run([PY, script], env=env, check=True)


def signatures(work: str, env: dict, quick: bool) -> None:
    script = os.path.join(ROOT, "scripts", "bench_sign.py")
    if os.path.exists(script):
        print("\n== sign / verify operations per second ==")
        subprocess.run([PY, script] + (["--quick"] if quick else []), env=env, check=True)


def agent(work: str, env: dict, quick: bool, count: int) -> None:
    """issue 12: `secret get` through the agent beside a bare interpreter, --no-agent and `pass show`,
    on env, passphrase and AWS KMS (moto) vaults; sequential loops; the agent's own latency."""
    script = os.path.join(ROOT, "scripts", "bench_agent.py")
    if os.path.exists(script):
        print("\n== the agent (kms-cli unlock): its own vaults, agent, socket, GNUPGHOME and password store ==")
        subprocess.run([PY, script, "--secrets", str(count)] + (["--quick"] if quick else []), env=env, check=True)


def rewrap_in_place(work: str, env: dict, quick: bool) -> None:
    """issue 13: rewrap --in-place on 10,000 small files and a 1 GiB file, beside cp (scripts/bench_rewrap.py)."""
    script = os.path.join(ROOT, "scripts", "bench_rewrap.py")
    if os.path.exists(script):
        print("\n== rewrap --in-place: time follows the files and the kernel's copy, not the payloads' crypto ==")
        subprocess.run([PY, script] + (["--quick"] if quick else []), env=env, check=True)


def recipients(work: str, env: dict, quick: bool) -> None:
    """issue 14: unlock by identity with 50 recipient slots, beside one slot and `age -d` (scripts/bench_recipients.py)."""
    script = os.path.join(ROOT, "scripts", "bench_recipients.py")
    if os.path.exists(script):
        print("\n== recipient slots: 50 slots and one matching identity, beside one slot and age ==")
        subprocess.run([PY, script] + (["--quick"] if quick else []), env=env, check=True)


def postgres(work: str, env: dict, quick: bool) -> None:
    """issue 15: `secret get` on PostgreSQL beside SQLite (1,000 secrets, with and without the agent) and
    commits/s with 1, 4 and 16 writers, on a private server started for it (scripts/bench_postgres.py)."""
    script = os.path.join(ROOT, "scripts", "bench_postgres.py")
    if os.path.exists(script):
        print("\n== PostgreSQL beside SQLite: secret get (without and with the agent), commits/s with 1, 4, 16 writers ==")
        subprocess.run([PY, script] + (["--quick"] if quick else []), env=env, check=True)


def serve(work: str, env: dict, quick: bool) -> None:
    """issue 16: `kms-cli serve` under wrk (TLS 1.3, keep-alive, 16 connections) beside an OpenBao dev
    server: transit decrypt/encrypt, KV read, a batch of 100 (scripts/bench_serve.py)."""
    script = os.path.join(ROOT, "scripts", "bench_serve.py")
    if os.path.exists(script):
        print("\n== serve: requests/s and latency under wrk beside OpenBao (TLS, keep-alive, 16 connections) ==")
        subprocess.run([PY, script] + (["--quick"] if quick else []), env=env, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--secrets", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", choices=("throughput", "cold-start", "agent", "audit", "sign", "rewrap",
                                           "recipients", "postgres", "serve"))
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.reps, args.secrets = 64, 1, 1000
    work = tempfile.mkdtemp(prefix="kms-cli-bench-", dir=os.environ.get("BENCH_DIR"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_CLI_")}
    env.update(KMS_CLI_VAULT=os.path.join(work, "vault.db"), KMS_CLI_MASTER_KEY="ab" * 32, HOME=work)
    print(f"kms-cli benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    try:
        subprocess.run(KMS + ["-q", "init"], env=env, check=True)
        if args.only in (None, "throughput"):
            throughput(work, env, args.size_mb, args.reps)
        if args.only in (None, "cold-start"):
            cold_start(work, env, max(args.reps, 20), args.secrets)
        if args.only in (None, "agent"):
            agent(work, env, args.quick, args.secrets)
        if args.only in (None, "audit"):
            audit_verify(work, env)
        if args.only in (None, "sign"):
            signatures(work, env, args.quick)
        if args.only in (None, "rewrap"):
            rewrap_in_place(work, env, args.quick)
        if args.only in (None, "recipients"):
            recipients(work, env, args.quick)
        if args.only in (None, "postgres"):
            postgres(work, env, args.quick)
        if args.only in (None, "serve"):
            serve(work, env, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
