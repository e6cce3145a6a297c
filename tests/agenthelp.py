"""Helpers for the agent's black-box tests (tests/cli/test_agent*.py): a passphrase vault whose
passphrase only `unlock` sees, the agent's pid and status, and a teardown that leaves no agent
process behind (stop, then SIGCONT/SIGKILL whatever of this test's agent still runs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from kmshelp import Kms, base_env

PASSPHRASE = "agent tests: correct horse battery staple 1729"
UNLOCK_ENV = {"KMS_CLI_PASSPHRASE": PASSPHRASE}
NO_KEYS = {"KMS_CLI_PASSPHRASE": None, "KMS_CLI_MASTER_KEY": None}


def sock_path(kms: Kms) -> Path:
    return Path(kms.env["KMS_CLI_AGENT_SOCK"])


def status(kms: Kms) -> dict | None:
    r = kms("--json", "agent", "status", timeout=20)
    return r.json() if r.code == 0 else None


def agent_pids(kms: Kms) -> list[int]:
    """Every process of this test's agent (the agent and the command processes it forked): their
    command line is `... kms_cli agent start --foreground` and their environment names this
    test's socket, which no other test shares."""
    want = b"KMS_CLI_AGENT_SOCK=" + str(sock_path(kms)).encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            if b"kms_cli\0agent\0start" not in cmd:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if want in env and state != b"Z":
            pids.append(int(d))
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return not alive(pid)


def stop_agent(kms: Kms) -> None:
    """Teardown: `agent stop`, then kill whatever of this test's agent is still alive."""
    for pid in agent_pids(kms):
        try:
            os.kill(pid, signal.SIGCONT)  # a test may have stopped it
        except OSError:
            pass
    try:
        kms("agent", "stop", timeout=15)
    except Exception:  # noqa: BLE001 - a hung agent: killed below
        pass
    deadline = time.monotonic() + 3
    while agent_pids(kms) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in agent_pids(kms):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        wait_gone(pid, 2)


def passphrase_vault(tmp_path: Path, name: str = "") -> Kms:
    """A runner on a passphrase vault; its environment holds no master key nor passphrase (only
    `unlock` is given the passphrase), so a command that is not served by the agent exits 4."""
    base = tmp_path / name if name else tmp_path
    base.mkdir(exist_ok=True)
    kms = Kms(base, base_env(base))
    kms.ok("init", "--master-key", "passphrase", env={**UNLOCK_ENV, "KMS_CLI_MASTER_KEY": None})
    for k in NO_KEYS:
        kms.env.pop(k, None)
    return kms


def unlock(kms: Kms, *args, **kw):
    return kms.ok("unlock", *args, env={**UNLOCK_ENV, **kw.pop("env", {})}, **kw)


def audit(kms: Kms, env: dict | None = None) -> list[dict]:
    """The vault's audit entries, read without the agent (this read appends its own entry)."""
    return kms.ok("--no-agent", "--json", "audit", "log", env={**UNLOCK_ENV, **(env or {})}).json_lines()


@pytest.fixture
def pvault(tmp_path):
    """A passphrase vault (no key in the environment); the test's agent is stopped at the end."""
    kms = passphrase_vault(tmp_path)
    try:
        yield kms
    finally:
        stop_agent(kms)


@pytest.fixture
def held(pvault):
    """`pvault` held by a running agent."""
    unlock(pvault)
    return pvault


def raw_request(path: str, payload: bytes, *, timeout: float = 5.0, shut: bool = True) -> bytes:
    """Send raw bytes to the agent's socket, return everything it answers until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(payload)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def frame(*fields: bytes) -> bytes:
    body = b"".join(b"%d:%s," % (len(f), f) for f in fields)
    return struct.pack(">I", len(body)) + body


def fields(answer: bytes) -> list[bytes]:
    """The fields of the first frame of an answer."""
    assert len(answer) >= 4, answer
    size = struct.unpack(">I", answer[:4])[0]
    body, out, i = answer[4:4 + size], [], 0
    assert len(body) == size, answer
    while i < len(body):
        colon = body.index(b":", i)
        n = int(body[i:colon])
        out.append(body[colon + 1:colon + 1 + n])
        i = colon + 2 + n
    return out


def status_json(kms: Kms) -> dict:
    r = kms.ok("--json", "agent", "status")
    return json.loads(r.out)
