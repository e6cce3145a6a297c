"""Unlock with recipient slots (issue 14): `secret get` on a vault whose only matching identity opens
the last of 50 recipient slots, beside the same vault with that one slot only, for X25519 and the
post-quantum hybrid; and, as the anchor, `age -d` of a file encrypted to 50 recipients (the matching
one last) beside a file encrypted to one. A stanza that is not yours costs one X25519 (or ML-KEM
decapsulation) and a failed AEAD, so 50 slots must cost a few milliseconds, not 50 unlocks."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

KMS = [os.path.join(os.path.dirname(sys.executable), "kms-cli")]


def timed(cmd, env, reps: int, stdin_path: str | None = None) -> float:
    """Best wall time of `reps` runs, in milliseconds."""
    best = float("inf")
    for _ in range(reps):
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        t = time.perf_counter()
        subprocess.run(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t)
        if stdin_path:
            stdin.close()
    return best * 1000


def identity(env, path: str, pq: bool) -> str:
    out = subprocess.run(KMS + ["identity", "generate", *(["--pq"] if pq else []), "-o", path], env=env,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def vault(work: str, env: dict, name: str, recipients: list[str]) -> dict:
    venv = {**env, "KMS_CLI_VAULT": os.path.join(work, name)}
    subprocess.run(KMS + ["-q", "init"], env=venv, check=True)
    subprocess.run(KMS + ["-q", "secret", "put", "s"], env=venv, input=b"value", check=True)
    team = os.path.join(work, name + ".recipients")
    with open(team, "w") as f:
        f.write("\n".join(recipients) + "\n")
    subprocess.run(KMS + ["-q", "master", "add", "-R", team], env=venv, check=True)
    venv.pop("KMS_CLI_MASTER_KEY")  # unlock by identity only: the env slot is "not configured here"
    return venv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--slots", type=int, default=50)
    args = ap.parse_args()
    reps = 3 if args.quick else 15
    work = os.path.join(os.environ.get("HOME", "/tmp"), "bench-recipients")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ)
    print(f"  `secret get` with --identity, best of {reps}; the matching slot is the last of {args.slots}",
          flush=True)
    for pq in (False, True):
        kind = "age1pq1 (ML-KEM-768 + X25519)" if pq else "age1 (X25519)"
        mine = os.path.join(work, f"mine-{pq}.txt")
        me = identity(env, mine, pq)
        others = [identity(env, os.path.join(work, f"other-{pq}-{i}.txt"), pq) for i in range(args.slots - 1)]
        one = vault(work, env, f"one-{pq}.db", [me])
        many = vault(work, env, f"many-{pq}.db", others + [me])
        cmd = KMS + ["--no-agent", "--identity", mine, "secret", "get", "s"]
        t1, tn = timed(cmd, one, reps), timed(cmd, many, reps)
        print(f"  {kind:32s} 1 slot {t1:7.1f} ms   {args.slots} slots {tn:7.1f} ms   "
              f"+{(tn - t1) / (args.slots - 1):.2f} ms per slot not yours   ratio {tn / t1:.2f}x", flush=True)
        if not pq and shutil.which("age"):
            plain = os.path.join(work, "plain")
            with open(plain, "wb") as f:
                f.write(b"value")
            for n, rs in ((1, [me]), (args.slots, others + [me])):
                out = os.path.join(work, f"age-{n}.age")
                subprocess.run(["age", "-o", out, *[a for r in rs for a in ("-r", r)], plain], check=True)
            a1 = timed(["age", "-d", "-i", mine, os.path.join(work, "age-1.age")], env, reps)
            an = timed(["age", "-d", "-i", mine, os.path.join(work, f"age-{args.slots}.age")], env, reps)
            print(f"  {'anchor: age -d (one file)':32s} 1 stanza {a1:5.1f} ms   {args.slots} stanzas {an:5.1f} ms   "
                  f"+{(an - a1) / (args.slots - 1):.2f} ms per stanza not yours   ratio {an / a1:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
