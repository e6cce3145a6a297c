"""The agent's figures for scripts/bench (issue 12): `secret get` served by the agent, side by side
in one interleaved run with a bare interpreter, the same command without the agent (--no-agent)
and `pass show` with a warm gpg-agent; the same on an env, a passphrase and an AWS KMS (moto) vault,
each holding --secrets secrets; loops of sequential calls (ops/s); and the agent's own latency for
one request, timed in-process around the socket round trip.

Everything runs in a throwaway directory: its own vaults, its own agent socket (KMS_CLI_AGENT_SOCK),
its own GNUPGHOME and PASSWORD_STORE_DIR. The agent started here is stopped at the end (killed if
`agent stop` does not end it), and so is the gpg-agent. Run by scripts/bench with the bench venv's
interpreter; on its own: `.venv-bench/bin/python scripts/bench_agent.py [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
KMS = [os.path.join(os.path.dirname(PY), "kms-cli")]
STRONG = "correct horse battery staple bench 2026"  # a passphrase the strength check accepts

# In-process timer around one request: the client module the `kms-cli` process uses on its fast
# path (connect, send argv/env/cwd and the descriptors, wait for the forked command's exit code).
# stdout is /dev/null, so the command writes its value there, as in the timed subprocess runs.
LATENCY = r"""
import os, sys, time, json
from kms_cli.agent import client
n, argv = int(sys.argv[1]), sys.argv[2:]
keep = os.dup(1)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
times = []
for _ in range(n):
    t = time.perf_counter()
    code = client.run(argv)
    times.append(time.perf_counter() - t)
    if code != 0:
        os.dup2(keep, 1)
        raise SystemExit(f"latency: the agent answered exit code {code!r} (None: it did not serve the command)")
os.dup2(keep, 1)
print(json.dumps(times))
"""


def run(cmd, env, stdin=None) -> float:
    """Wall seconds of one run, output to /dev/null. A failure stops the benchmark, and so does
    anything on stderr: a `kms-cli: warning:` there means the agent did not serve the command."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, _ = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    err = p.stderr.read()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0 or err.strip():
        raise SystemExit(f"bench: {' '.join(cmd)} failed (exit {p.returncode}): {err.decode(errors='replace')}")
    return elapsed


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f} ms"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def stop_agent(env: dict, pid: int) -> None:
    """`agent stop`, then wait up to 5 s for the process to go (SIGKILL after)."""
    subprocess.run(KMS + ["-q", "agent", "stop"], env=env, capture_output=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Agent:
    """The bench's own agent on its own socket; stopped (or killed) at the end whatever happens."""

    def __init__(self, env: dict):
        self.env, self.pid = env, None
        self.sock = env["KMS_CLI_AGENT_SOCK"]

    def start(self) -> None:
        out = subprocess.run(KMS + ["--json", "agent", "start", "--idle", "1h", "--max", "2h"], env=self.env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench: agent start failed: {out.stderr}")
        self.pid = json.loads(out.stdout)["pid"]

    def counters(self) -> dict:
        from kms_cli.agent import client

        answer = client.request(b"status", path=self.sock)
        if answer is None:
            raise SystemExit("bench: the agent does not answer")
        return json.loads(answer[0])["counters"]

    def stop(self) -> None:
        if self.pid is None:
            return
        stop_agent(self.env, self.pid)
        self.pid = None


class Pass:
    """`pass` on a throwaway store and GNUPGHOME with a no-passphrase key; gpg-agent warmed."""

    def __init__(self, work: str, base: dict):
        self.home = os.path.join(work, "gnupg")
        os.makedirs(self.home, mode=0o700)
        self.env = dict(base, GNUPGHOME=self.home, PASSWORD_STORE_DIR=os.path.join(work, "password-store"))
        self.env.pop("GPG_AGENT_INFO", None)
        self.cmd = ["pass", "show", "bench/secret"]

    def setup(self) -> None:
        def sh(cmd, **kw):
            subprocess.run(cmd, env=self.env, check=True, capture_output=True, **kw)

        sh(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
            "kms-cli bench <bench@localhost>", "default", "default", "never"])
        sh(["pass", "init", "bench@localhost"])
        sh(["pass", "insert", "-m", "bench/secret"], input=b"value-of-the-bench-secret\n")
        sh(self.cmd)  # warms gpg-agent: it holds the unprotected key from now on

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True)


def moto_server():
    """moto's AWS server on 127.0.0.1 (a thread of this process, as tests/servers/moto_server.py)."""
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on the bench's output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def make_vault(env: dict, init_args: list[str], count: int) -> None:
    subprocess.run(KMS + ["-q", "init", *init_args], env=env, check=True)
    lines = "".join(f"S{i:05d}=value-{i}\n" for i in range(count))
    subprocess.run(KMS + ["-q", "secret", "import", "-"], input=lines.encode(), env=env, check=True)
    out = subprocess.run(KMS + ["-q", "unlock", "--idle", "1h", "--max", "2h"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench: unlock failed: {out.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secrets", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--loop", type=int, default=200)
    ap.add_argument("--loop-rounds", type=int, default=3)
    ap.add_argument("--latency", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.secrets, args.rounds, args.loop, args.loop_rounds, args.latency = 1000, 5, 20, 1, 50
    work = tempfile.mkdtemp(prefix="kms-cli-bench-agent-", dir=os.environ.get("BENCH_DIR"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_CLI_", "AWS_"))}
    base.update(HOME=work, XDG_RUNTIME_DIR=os.path.join(work, "run"),
                KMS_CLI_AGENT_SOCK=os.path.join(work, "agent", "agent.sock"))
    os.makedirs(base["XDG_RUNTIME_DIR"], mode=0o700)
    # `unlock` and `agent start` spawn `python -m kms_cli agent start --foreground` in the current
    # directory, and -m puts that directory first on sys.path: from a source checkout the agent
    # would run the checkout's kms_cli, not the installed one being measured.
    os.chdir(work)
    os.environ["KMS_CLI_AGENT_SOCK"] = base["KMS_CLI_AGENT_SOCK"]  # for this process's own status requests
    agent, pw, moto = Agent(base), None, None
    try:
        agent.start()
        vaults: dict[str, dict] = {
            "env": dict(base, KMS_CLI_VAULT=os.path.join(work, "env.db"), KMS_CLI_MASTER_KEY="ab" * 32),
            "passphrase": dict(base, KMS_CLI_VAULT=os.path.join(work, "pass.db"), KMS_CLI_PASSPHRASE=STRONG),
        }
        have_moto = True
        try:
            moto, aws_env = moto_server()
        except ImportError:
            have_moto = False
            print("  (moto is not installed: no AWS KMS vault)")
        if have_moto:
            import boto3

            kms = boto3.client("kms", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
            key_id = kms.create_key(Description="kms-cli bench")["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName="alias/kms-cli-bench", TargetKeyId=key_id)
            vaults["aws-kms"] = dict(base, KMS_CLI_VAULT=os.path.join(work, "aws.db"), **aws_env)
        inits = {"env": [], "passphrase": ["--master-key", "passphrase"],
                 "aws-kms": ["--master-key", "aws-kms://alias/kms-cli-bench"]}
        t = time.perf_counter()
        for name, env in vaults.items():
            make_vault(env, inits[name], args.secrets)
        print(f"  3 vaults of {args.secrets} secrets made and unlocked in {time.perf_counter() - t:.1f} s; "
              f"agent pid {agent.pid} on its own socket")
        # Through the agent the passphrase vault needs no passphrase: take it away, so that a
        # command the agent did not serve would fail here instead of unlocking quietly.
        vaults["passphrase"].pop("KMS_CLI_PASSPHRASE")
        have_pass = shutil.which("pass") and shutil.which("gpg")
        if have_pass:
            pw = Pass(work, base)
            pw.setup()
        else:
            print("  (pass or gpg is not installed: no `pass show` figures)")

        name = f"S{args.secrets // 2:05d}"
        cmds = {"python -c pass": ([PY, "-c", "pass"], base),
                "python -c 'import re'": ([PY, "-c", "import re"], base)}
        for v, env in vaults.items():
            cmds[f"secret get, agent ({v} vault)"] = (KMS + ["secret", "get", name], env)
        cmds["secret get --no-agent (env vault)"] = (KMS + ["secret", "get", name, "--no-agent"], vaults["env"])
        if have_pass:
            cmds["pass show (warm gpg-agent)"] = (pw.cmd, pw.env)
        for cmd, env in cmds.values():  # one warm-up run each (page cache, the agent's first fork)
            run(cmd, env)

        before = agent.counters()
        times: dict[str, list[float]] = {k: [] for k in cmds}
        order = random.Random(12)
        for _ in range(args.rounds):  # interleaved: a slow spell of the shared machine hits every row;
            labels = list(cmds)
            order.shuffle(labels)  # and shuffled: no row always runs first or after the same one
            for label in labels:
                cmd, env = cmds[label]
                times[label].append(run(cmd, env))
        after = agent.counters()
        served = after["hits"] - before["hits"]
        expected = args.rounds * len(vaults)
        print(f"\n== `secret get` on vaults of {args.secrets} secrets: {args.rounds} interleaved rounds ==")
        print(f"  {'':38s} {'median':>9s} {'best':>9s} {'p90':>9s}")
        for label, ts in times.items():
            print(f"  {label:38s} {ms(statistics.median(ts))} {ms(min(ts))} {ms(pct(ts, 0.9))}")
        print(f"  the agent served {served} of the {expected} agent runs (hits counter; misses "
              f"{after['misses'] - before['misses']})")
        bare = times["python -c pass"]
        env_agent = times["secret get, agent (env vault)"]
        print("  ratios (median / best):")
        print(f"    agent (env vault) / python -c pass           {statistics.median(env_agent) / statistics.median(bare):.2f}x"
              f" / {min(env_agent) / min(bare):.2f}x  (target: median <= 1.5x)")
        no_agent = times["secret get --no-agent (env vault)"]
        print(f"    --no-agent / python -c pass                  {statistics.median(no_agent) / statistics.median(bare):.2f}x"
              f" / {min(no_agent) / min(bare):.2f}x")
        print(f"    agent / --no-agent                           {statistics.median(env_agent) / statistics.median(no_agent):.2f}x"
              f" / {min(env_agent) / min(no_agent):.2f}x")
        if have_pass:
            ps = times["pass show (warm gpg-agent)"]
            print(f"    agent (env vault) / pass show                {statistics.median(env_agent) / statistics.median(ps):.2f}x"
                  f" / {min(env_agent) / min(ps):.2f}x  (target: < 1x, faster than pass)")
        for v in vaults:
            if v != "env":
                tv = times[f"secret get, agent ({v} vault)"]
                print(f"    agent ({v} vault) / agent (env vault){' ' * (14 - len(v))}"
                      f"{statistics.median(tv) / statistics.median(env_agent):.2f}x / {min(tv) / min(env_agent):.2f}x"
                      "  (target: the same once unlocked)")

        # Sequential loops, as a shell loop or a CI step would call them (different names each call).
        print(f"\n== {args.loop} sequential calls, {args.loop_rounds} interleaved rounds: ops/s (best, median) ==")
        loops = {"secret get, agent (env vault)": lambda i: (KMS + ["secret", "get", f"S{i * 37 % args.secrets:05d}"],
                                                            vaults["env"]),
                 "secret get --no-agent (env vault)": lambda i: (KMS + ["secret", "get", f"S{i * 37 % args.secrets:05d}",
                                                                        "--no-agent"], vaults["env"])}
        if have_pass:
            loops["pass show (warm gpg-agent)"] = lambda i: (pw.cmd, pw.env)
        rates: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(args.loop_rounds):
            loop_labels = list(loops)
            order.shuffle(loop_labels)
            for label in loop_labels:
                make = loops[label]
                t = time.perf_counter()
                for i in range(args.loop):
                    cmd, env = make(i)
                    run(cmd, env)
                rates[label].append(args.loop / (time.perf_counter() - t))
        for label, rs in rates.items():
            print(f"  {label:38s} {max(rs):6.1f} ops/s   median {statistics.median(rs):6.1f} ops/s")
        if have_pass:
            a, p = rates["secret get, agent (env vault)"], rates["pass show (warm gpg-agent)"]
            print(f"  agent / pass show: {max(a) / max(p):.2f}x (best), {statistics.median(a) / statistics.median(p):.2f}x (median)")

        # The agent's own latency: connect + request + the forked command + its exit code, timed
        # inside one client process (no interpreter start-up, no imports).
        print(f"\n== the agent's latency for one `secret get` request, in-process, {args.latency} requests ==")
        for v, env in vaults.items():
            out = subprocess.run([PY, "-c", LATENCY, str(args.latency), "secret", "get", name], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"bench: latency run failed: {out.stderr}")
            lat = json.loads(out.stdout)
            print(f"  {v + ' vault':38s} median {ms(statistics.median(lat))}   p99 {ms(pct(lat, 0.99))}   "
                  f"best {ms(min(lat))}")
        print("  (each request: connect, argv + environment + 3 descriptors over the socket, a fork of the agent,\n"
              "   the vault file's id and slots checked, the command run with the held key, its audit entry\n"
              "   committed with fsync, the exit code back)")
    finally:
        agent.stop()
        if pw is not None:
            pw.stop()
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
