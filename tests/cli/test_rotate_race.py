"""Commands racing a long `master rotate` (issue 10 §1): each runs wholly before or after it.

Every command unlocks with the root key of the moment and then waits for the write lock the
rotation holds. Before the fix, such a command wrote rows and audit entries under the retired
root key: its own write failed authentication afterwards and `audit verify` failed for good.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SECRETS = 20_000


def _start(kms, *args, input: bytes = b"") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", *args], env=kms.env, cwd=kms.tmp,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(input)
    p.stdin.close()
    return p


def _finish(p: subprocess.Popen) -> tuple[int, bytes, str]:
    out = p.stdout.read()
    err = p.stderr.read().decode()
    return p.wait(timeout=120), out, err


def test_writers_readers_and_key_creation_racing_a_long_rotation(vault, tmp_path):
    env_file = tmp_path / "many.env"
    env_file.write_text("".join(f"S{i}=value-{i}\n" for i in range(SECRETS)))
    vault.ok("-q", "secret", "import", str(env_file))
    vault.ok("key", "create", "data")
    plain = tmp_path / "plain"
    plain.write_bytes(b"racing plaintext" * 100)

    rotation = _start(vault, "master", "rotate")
    time.sleep(0.5)  # the rotation holds the write lock now; these unlock under the old root key
    racers = {
        "put": _start(vault, "secret", "put", "app/race", input=b"acked"),
        "get": _start(vault, "secret", "get", "S7"),
        "create": _start(vault, "key", "create", "made-during"),
        "encrypt": _start(vault, "encrypt", "--key", "data", "-i", str(plain), "-o", str(tmp_path / "ct")),
        "list": _start(vault, "key", "list"),
    }
    code, _, err = _finish(rotation)
    assert code == 0, err
    results = {name: _finish(p) for name, p in racers.items()}
    for name, (code, _, err) in results.items():
        assert code == 0, f"{name}: exit {code}: {err}"
    assert results["get"][1] == b"value-7"

    # every command that exited 0 is visible and valid afterwards
    assert vault.ok("secret", "get", "app/race").out == b"acked"
    vault.ok("key", "show", "made-during")
    vault.ok("encrypt", "--key", "made-during", "-i", str(plain), "-o", str(tmp_path / "ct2"))
    assert vault.ok("decrypt", "-i", str(tmp_path / "ct2")).out == plain.read_bytes()
    assert vault.ok("decrypt", "-i", str(tmp_path / "ct")).out == plain.read_bytes()
    assert vault.ok("audit", "verify").code == 0
    # and the vault can rotate again (before the fix: exit 5 for good)
    vault.ok("master", "rotate")
    assert vault.ok("secret", "get", "app/race").out == b"acked"
    vault.ok("audit", "verify")
    puts = vault.ok("--json", "audit", "log", "--op", "secret.put", "--target", "app/race").text.splitlines()
    assert len(puts) == 1
