"""The agent under bad input and faults (issue 12): garbage and oversized frames, silent and
vanishing clients, a killed or hung agent. Each gets a clean error frame or a one-line warning
and a fallback, never a hang: every subprocess here has a timeout."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from agenthelp import (UNLOCK_ENV, agent_pids, alive, audit, fields, frame, held, pvault, raw_request,  # noqa: F401
                       sock_path, status, status_json, stop_agent, unlock, wait_gone)

VERSION = b"kms-cli-agent/1"


def _serves(kms) -> None:
    """The agent still answers and still serves the held vault (no passphrase in the env)."""
    assert kms.ok("secret", "get", "a", timeout=20).out == b"v"
    assert len(status_json(kms)["vaults"]) == 1


@pytest.fixture
def agent(held):
    held.ok("secret", "put", "a", input=b"v")
    return held


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("kms-cli: warning:")]


# -- bad input on the socket --------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"\x00\x00\x00\x05hello",  # a frame that is not netstrings
    b"\x00\x00\x00\x0412:x",  # a netstring cut short inside the frame
    frame(b"status", b"kms-cli-agent/999"),  # another protocol version
    frame(b"frobnicate", VERSION),  # an unknown request
    frame(b"hold", VERSION, b"x"),  # a hold with the wrong number of fields
    frame(b"run", VERSION, b"/", b"18", b"1", b"secret"),  # a run without stdin/stdout/stderr descriptors
    frame(b"status"),  # no version at all
], ids=["not-netstrings", "cut-netstring", "version", "unknown", "bad-hold", "run-no-fds", "no-version"])
def test_garbage_gets_error_frame_and_agent_keeps_serving(agent, payload):
    answer = raw_request(str(sock_path(agent)), payload)
    f = fields(answer)
    assert f[0] == b"error" and f[1].isdigit() and f[2], f
    assert b"Traceback" not in answer
    _serves(agent)


def test_oversized_length_prefix_refused_before_reading(agent):
    # announces 4 GiB - 1 and sends a few bytes: refused at once, not waited for
    start = time.monotonic()
    answer = raw_request(str(sock_path(agent)), struct.pack(">I", 0xFFFFFFFF) + b"1:x,", shut=False)
    assert time.monotonic() - start < 2
    f = fields(answer)
    assert f[0] == b"error" and b"larger" in f[2]
    _serves(agent)


def test_random_bytes_never_break_the_agent(agent):
    import random

    rnd = random.Random(12)
    path = str(sock_path(agent))
    for _ in range(20):
        payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
        try:
            answer = raw_request(path, payload, timeout=10)
        except OSError:
            continue
        if answer:
            assert fields(answer)[0] == b"error"
    _serves(agent)


def test_silent_and_half_sent_clients_do_not_stall_others(agent):
    path = str(sock_path(agent))
    silent = []
    try:
        for payload in (b"", b"\x00\x00", struct.pack(">I", 1000) + b"4:run,"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            if payload:
                s.sendall(payload)
            silent.append(s)
        # meanwhile other clients are served at once, far sooner than the agent drops the silent ones
        for _ in range(3):
            start = time.monotonic()
            r = agent("secret", "get", "a", timeout=20)
            took = time.monotonic() - start
            assert r.code == 0 and r.out == b"v" and _warnings(r.err) == [], r.err
            assert took < 2.5, f"secret get took {took:.1f}s while a silent client was connected"
    finally:
        for s in silent:
            s.close()
    _serves(agent)


def test_client_disconnecting_mid_request(agent):
    path = str(sock_path(agent))
    for cut in (3, 10, 40):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(frame(b"run", VERSION, b"/", b"18", b"3", b"secret", b"get", b"a", b"0")[:cut])
        s.close()
    _serves(agent)


def test_concurrent_clients(agent):
    procs = [subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "get", "a"], env=agent.env,
                              cwd=agent.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8
    assert all(out == b"v" and _warnings(err.decode()) == [] for out, err in outs)


def test_client_with_its_command_waiting_on_stdin_is_not_stalling_others(agent):
    """A command served by the agent that waits for its input (a slow client) blocks nobody."""
    slow = subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "put", "b"], env=agent.env, cwd=agent.tmp,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        start = time.monotonic()
        assert agent.ok("secret", "get", "a", timeout=20).out == b"v"
        assert time.monotonic() - start < 2.5
        out, err = slow.communicate(b"later", timeout=30)
        assert slow.returncode == 0, err
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert agent.ok("secret", "get", "b").out == b"later"


# -- a dead or hung agent ------------------------------------------------------------------------

def test_sigkilled_agent_falls_back_with_one_warning_and_start_cleans_stale_socket(agent):
    pid = status_json(agent)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    path = sock_path(agent)
    assert path.exists()  # what a killed agent leaves
    r = agent("secret", "get", "a", env=UNLOCK_ENV, timeout=20)
    assert r.code == 0 and r.out == b"v"
    assert len(_warnings(r.err)) == 1 and len(r.err.splitlines()) == 1, r.err
    r = agent("secret", "get", "a", timeout=20)  # no passphrase: the held key died with the agent
    assert r.code == 4 and len(_warnings(r.err)) == 1
    assert agent("agent", "status", timeout=20).code == 3
    agent.ok("agent", "start", timeout=30)  # the stale socket is no obstacle
    new = status_json(agent)
    assert new["pid"] != pid and new["vaults"] == []
    r = agent("secret", "get", "a", env=UNLOCK_ENV, timeout=20)
    assert r.code == 0 and r.err == ""  # no warning any more


def test_agent_killed_while_a_client_waits(agent):
    """Clients waiting on commands the agent runs get a clear error, not a hang."""
    waiting = subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "put", "c"], env=agent.env, cwd=agent.tmp,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while len(agent_pids(agent)) < 2 and time.monotonic() < deadline:  # the command's process is forked
            time.sleep(0.05)
        assert len(agent_pids(agent)) >= 2
        for pid in agent_pids(agent):
            os.kill(pid, signal.SIGKILL)
        out, err = waiting.communicate(timeout=20)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    err = err.decode()
    assert waiting.returncode not in (0, None) and "Traceback" not in err
    assert err.startswith("kms-cli: error: "), err
    assert agent("secret", "get", "c", env=UNLOCK_ENV).code == 3  # nothing was stored


def _run_to_files(kms, *args, env=None, input=b"", timeout=20):
    """Run the CLI with stdout/stderr in files: its own exit is what is timed, not the end of a
    pipe that some other process may still hold."""
    import tempfile

    full = {**kms.env, **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "kms_cli", *args], input=input, stdout=out, stderr=err, env=full,
                           cwd=kms.tmp, timeout=timeout)
        took = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read().decode(), took


@pytest.mark.slow
def test_hung_agent_times_out_with_one_warning(agent):
    pid = status_json(agent)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        env = {**UNLOCK_ENV, "KMS_CLI_AGENT_TIMEOUT": "0.5"}
        code, out, err, took = _run_to_files(agent, "secret", "get", "a", env=env)
        assert code == 0 and out == b"v", err
        assert len(_warnings(err)) == 1 and len(err.splitlines()) == 1, err
        assert "kms-cli: warning:" in err and took < 5, took
        # a write that fell back while the agent hung is done once, here, not again later by the agent
        code, out, err, took = _run_to_files(agent, "secret", "put", "w", input=b"once", env=env)
        assert code == 0 and len(_warnings(err)) == 1 and took < 5, err
        # without a passphrase: exit 4 after the time-out, never a hang
        code, out, err, took = _run_to_files(agent, "secret", "get", "a", env={"KMS_CLI_AGENT_TIMEOUT": "0.5"})
        assert code == 4 and len(_warnings(err)) == 1 and took < 5
        # agent status with a hung agent: bounded too (no agent answers: exit 3)
        code, out, err, took = _run_to_files(agent, "agent", "status", env={"KMS_CLI_AGENT_TIMEOUT": "0.5"})
        assert code == 3 and took < 5 and "Traceback" not in err, err
    finally:
        os.kill(pid, signal.SIGCONT)
    # the agent resumes: what it had queued meanwhile is not run behind the users' backs
    time.sleep(1.0)
    _serves(agent)
    history = agent.ok("--json", "secret", "history", "w").json()
    assert len(history) == 1, history
    ops = [(e["op"], e["target"]) for e in audit(agent)]
    assert ops.count(("secret.put", "w")) == 1, ops


@pytest.mark.slow
def test_hung_agent_does_not_hold_the_callers_pipe(agent):
    pid = status_json(agent)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        p = subprocess.Popen(["sh", "-c", f'x=$("{sys.executable}" -m kms_cli secret get a); printf "[%s]" "$x"'],
                             env={**agent.env, **UNLOCK_ENV, "KMS_CLI_AGENT_TIMEOUT": "0.5"}, cwd=agent.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = p.communicate(timeout=6)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AssertionError("`x=$(kms-cli secret get a)` still waits for end of file 6 s after the "
                                 "client's 0.5 s time-out") from None
        assert out == b"[v]"
    finally:
        os.kill(pid, signal.SIGCONT)


def test_stale_socket_file_that_is_not_a_socket(pvault):
    """Whatever sits at the socket path: a command warns once and runs; agent start takes over."""
    path = sock_path(pvault)
    path.parent.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound, never listening: ECONNREFUSED, as after a crash
    r = pvault("secret", "list", env=UNLOCK_ENV, timeout=20)
    assert r.code == 0 and len(_warnings(r.err)) == 1
    unlock(pvault)
    assert _warnings(pvault.ok("secret", "list").err) == []
