"""scripts/bench --only rewrap: `rewrap --in-place` on many small files and on one large file.

What it shows: the time of an in-place rewrap follows the number of files (one header read, the key
work, a create, an fsync and a rename each) and the bytes the kernel copies (copy_file_range: no
cryptography over the payload, no copy through Python), not an encryption of the payloads. Beside
it: `cp` of the same files without and with an fsync of each copy (what the copy alone costs), the same run once everything is
current (headers only), and for the large file `rewrap -i -o` (one stream through Python) and a
decrypt + encrypt (what re-encrypting the payload would cost).

Run it through scripts/bench (which installs kms-cli in its own venv and sets up a vault), or
alone with KMS_CLI_VAULT and KMS_CLI_MASTER_KEY set to a vault that exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PY = sys.executable
_LAUNCHER = os.path.join(os.path.dirname(PY), "kms-cli")
KMS = [_LAUNCHER] if os.path.exists(_LAUNCHER) else [PY, "-m", "kms_cli"]
KEY = "bench/rewrap"


def timed(cmd, env, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, **kw)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed: {p.stderr.decode(errors='replace')}")
    return elapsed, p


def rotate(env) -> None:
    subprocess.run(KMS + ["-q", "key", "rotate", KEY], env=env, check=True)


def rewrap(env, *paths, recursive=False) -> tuple[float, dict]:
    cmd = KMS + ["--json", "rewrap", "--in-place"] + (["-r"] if recursive else []) + list(paths)
    t, p = timed(cmd, env)
    return t, json.loads(p.stdout)


def drop_caches() -> None:
    """Write back dirty pages so one case's writeback is not charged to the next (best effort)."""
    os.sync()


def small_files(work: str, env: dict, count: int, size: int) -> None:
    d = os.path.join(work, "small")
    os.mkdir(d)
    plain = os.urandom(size)
    one = os.path.join(work, "one.kms")
    subprocess.run(KMS + ["-q", "encrypt", "--key", KEY, "-o", one], input=plain, env=env, check=True)
    data = open(one, "rb").read()
    for i in range(count):  # one ciphertext copied: each copy is still its own file to rewrap
        sub = os.path.join(d, f"{i // 1000:03}")
        if i % 1000 == 0:
            os.mkdir(sub)
        with open(os.path.join(sub, f"f{i:06}.kms"), "wb") as f:
            f.write(data)
    rotate(env)
    drop_caches()
    t_cp, _ = timed(["cp", "-r", d, d + ".copy"], env)
    shutil.rmtree(d + ".copy")
    drop_caches()
    t_cps, _ = timed(["sh", "-c", 'cp -r "$0" "$0.copy" && find "$0.copy" -type f -exec sync {} +', d], env)
    shutil.rmtree(d + ".copy")
    drop_caches()
    t_rw, counts = rewrap(env, d, recursive=True)
    assert counts["rewrapped"] == count, counts
    drop_caches()
    t_cur, counts = rewrap(env, d, recursive=True)
    assert counts["current"] == count, counts
    t_dry, _ = timed(KMS + ["--json", "rewrap", "--in-place", "-r", "--dry-run", d], env)
    print(f"{count:,} files of {len(data):,} bytes (payload {size} B):")
    print(f"  rewrap --in-place -r      {t_rw:7.2f} s   {count / t_rw:8,.0f} files/s   "
          f"({t_rw / count * 1e6:,.0f} us a file: header, key work, temp file, fsync, rename)")
    print(f"  cp -r (no fsync)          {t_cp:7.2f} s   {count / t_cp:8,.0f} files/s")
    print(f"  cp -r, then fsync each    {t_cps:7.2f} s   {count / t_cps:8,.0f} files/s")
    print(f"  again, all current        {t_cur:7.2f} s   {count / t_cur:8,.0f} files/s   (headers only)")
    print(f"  --dry-run, all current    {t_dry:7.2f} s")
    shutil.rmtree(d)


def large_file(work: str, env: dict, size_mb: int) -> None:
    size = size_mb << 20
    plain = os.path.join(work, "large.bin")
    with open(plain, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size_mb):
            f.write(block)
    big = os.path.join(work, "large.kms")
    subprocess.run(KMS + ["-q", "encrypt", "--key", KEY, "-i", plain, "-o", big], env=env, check=True)
    os.unlink(plain)
    rotate(env)
    drop_caches()
    t_cp, _ = timed(["cp", big, big + ".copy"], env)
    os.unlink(big + ".copy")
    drop_caches()
    t_cps, _ = timed(["sh", "-c", 'cp "$0" "$0.copy" && sync "$0.copy"', big], env)
    os.unlink(big + ".copy")
    drop_caches()
    t_stream, _ = timed(KMS + ["rewrap", "-i", big, "-o", big + ".stream"], env)
    os.unlink(big + ".stream")
    drop_caches()
    t_dec_enc, _ = timed(["sh", "-c", f'"$0" decrypt -i "$1" | "$0" encrypt --key {KEY} -o "$1.re"', KMS[0], big]
                         if len(KMS) == 1 else
                         ["sh", "-c", f'"$0" -m kms_cli decrypt -i "$1" | "$0" -m kms_cli encrypt --key {KEY} '
                          f'-o "$1.re"', PY, big], env)
    os.unlink(big + ".re")
    drop_caches()
    t_rw, counts = rewrap(env, big)
    assert counts["rewrapped"] == 1, counts
    t_cur, counts = rewrap(env, big)
    assert counts["current"] == 1, counts
    gib = size / (1 << 30)
    print(f"one file of {gib:.2f} GiB:")
    print(f"  rewrap --in-place         {t_rw:7.2f} s   ({gib / t_rw:5.2f} GiB/s: the kernel's copy, one fsync)")
    print(f"  cp (no fsync)             {t_cp:7.2f} s   ({gib / t_cp:5.2f} GiB/s)")
    print(f"  cp, then fsync            {t_cps:7.2f} s   ({gib / t_cps:5.2f} GiB/s)")
    print(f"  rewrap -i -o (a stream)   {t_stream:7.2f} s   ({gib / t_stream:5.2f} GiB/s)")
    print(f"  decrypt | encrypt         {t_dec_enc:7.2f} s   ({gib / t_dec_enc:5.2f} GiB/s: re-encrypting the payload)")
    print(f"  again, current            {t_cur:7.2f} s   (header only)")
    os.unlink(big)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--file-size", type=int, default=1024, help="payload bytes of each small file")
    ap.add_argument("--size-mb", type=int, default=1024, help="the large file, MiB")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.files, args.size_mb = 1000, 64
    env = dict(os.environ)
    if "KMS_CLI_VAULT" not in env:
        raise SystemExit("bench_rewrap: set KMS_CLI_VAULT (and its master key) or run it through scripts/bench")
    subprocess.run(KMS + ["-q", "key", "create", KEY], env=env, check=False, capture_output=True)
    work = tempfile.mkdtemp(prefix="kms-cli-bench-rewrap-", dir=os.environ.get("BENCH_DIR"))
    try:
        small_files(work, env, args.files, args.file_size)
        large_file(work, env, args.size_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
