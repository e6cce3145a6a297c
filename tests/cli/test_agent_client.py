"""The thin client: a command the agent serves imports no crypto, SQLite, Typer or Rich here."""

from __future__ import annotations

import subprocess
import sys


def test_secret_get_through_the_agent_imports_nothing_heavy(vault):
    vault.ok("secret", "put", "s", input=b"value")
    vault.ok("unlock")
    try:
        env = dict(vault.env)
        env.pop("KMS_CLI_MASTER_KEY")  # only the agent can serve it now: a silent local run would fail
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "kms_cli", "secret", "get", "s"],
                           env=env, capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout == b"value"
        loaded = {line.split("|")[-1].strip() for line in r.stderr.decode().splitlines() if "|" in line}
        assert "kms_cli.agent.client" in loaded  # the walk sees the client's imports
        heavy = {m for m in loaded if m.split(".")[0] in ("cryptography", "sqlite3", "_sqlite3", "typer", "click",
                                                         "rich", "argon2", "kms_cli")
                 and (not m.startswith("kms_cli") or m.startswith(("kms_cli.vault", "kms_cli.crypto",
                                                                   "kms_cli.store", "kms_cli.providers")))}
        assert heavy == set()
        assert "socket" not in loaded and "selectors" not in loaded  # the C module only (see client.connect)
    finally:
        vault.ok("agent", "stop")
