"""Real servers for the provider and CLI tests: started on 127.0.0.1, free ports, temp HOME, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable


def skip_or_fail(reason: str) -> None:
    """Skip a test whose server cannot run here; in CI (CI=true) fail instead: CI must run them all."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must run every server test (scripts/test installs them)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free (OpenBao also listens on P+1)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def closed_port() -> int:
    """A loopback port where connections are refused (nothing listening)."""
    return free_port()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what} did not become ready within {timeout}s")


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def temp_home_env(home: str) -> dict[str, str]:
    """HOME and XDG_* pointing inside a temp dir (created)."""
    env = {
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_RUNTIME_DIR": os.path.join(home, "run"),
    }
    for key, path in env.items():
        if key != "HOME":
            os.makedirs(path, mode=0o700, exist_ok=True)
    return env


def which(name: str) -> str | None:
    return shutil.which(name)
