"""Sign and verify operations per second, per algorithm: the library path (kms-cli's crypto layer in
one process), the CLI path (one `kms-cli sign` / `verify` process per operation), and `openssl speed`
for the algorithms the machine's OpenSSL measures."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

from kms_cli.crypto import asym, keygen, sign

KMS = [os.path.join(os.path.dirname(sys.executable), "kms-cli")]
OPENSSL_NAMES = {"ed25519": "ed25519", "ecdsa-p256": "ecdsap256", "rsa-2048": "rsa2048", "rsa-4096": "rsa4096",
                 "ml-dsa-44": "ML-DSA-44", "ml-dsa-65": "ML-DSA-65", "ml-dsa-87": "ML-DSA-87"}


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def openssl_rates(alg: str) -> tuple[float, float] | None:
    name = OPENSSL_NAMES.get(alg)
    if not name or not shutil.which("openssl"):
        return None
    p = subprocess.run(["openssl", "speed", "-seconds", "1", name], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    lines = [l for l in p.stdout.splitlines() if re.search(r"\d+\.\d+$", l.strip())]
    if not lines:
        return None
    nums = re.findall(r"([\d.]+)", lines[-1])
    try:
        return float(nums[-2]), float(nums[-1])  # sign/s, verify/s
    except (IndexError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    lib_seconds, cli_ops = (0.2, 2) if args.quick else (1.0, 5)
    env = dict(os.environ)
    msg = os.urandom(1024)
    work = os.environ.get("HOME", "/tmp")
    with open(os.path.join(work, "bench-msg"), "wb") as f:
        f.write(msg)
    print(f"  {'algorithm':20s} {'lib sign/s':>11s} {'lib verify/s':>13s} {'cli sign/s':>11s} {'cli verify/s':>13s}"
          f" {'openssl sign/s':>15s} {'openssl verify/s':>17s} {'lib/openssl sign':>17s}")
    for alg in asym.names("sign"):
        private, public = keygen.generate(alg)
        sig = sign.sign(alg, private, msg)
        s_rate = rate(lambda: sign.sign(alg, private, msg), lib_seconds)
        v_rate = rate(lambda: sign.verify(alg, public, msg, sig), lib_seconds)
        subprocess.run(KMS + ["-q", "key", "create", f"sig-{alg}", "--algorithm", alg], env=env, check=True)
        sig_path = os.path.join(work, f"bench-{alg}.sig")
        t = time.perf_counter()
        for _ in range(cli_ops):
            subprocess.run(KMS + ["sign", "--key", f"sig-{alg}", "-i", os.path.join(work, "bench-msg"), "-o", sig_path],
                           env=env, check=True)
        cli_s = cli_ops / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(cli_ops):
            subprocess.run(KMS + ["-q", "verify", "--key", f"sig-{alg}", "--signature", sig_path, "-i",
                                  os.path.join(work, "bench-msg")], env=env, check=True)
        cli_v = cli_ops / (time.perf_counter() - t)
        ossl = None if args.quick else openssl_rates(alg)
        o_s, o_v = (f"{ossl[0]:15.0f}", f"{ossl[1]:17.0f}") if ossl else (f"{'-':>15s}", f"{'-':>17s}")
        ratio = f"{s_rate / ossl[0]:16.2f}x" if ossl else f"{'-':>17s}"
        print(f"  {alg:20s} {s_rate:11.0f} {v_rate:13.0f} {cli_s:11.1f} {cli_v:13.1f} {o_s} {o_v} {ratio}")


if __name__ == "__main__":
    main()
