"""Helpers shared by the CLI tests: run the real CLI in a subprocess with a temp HOME and vault."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MASTER_KEY = "11" * 32


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self):
        import json

        return json.loads(self.out)

    def json_lines(self) -> list:
        import json

        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


class Kms:
    """Runs `python -m kms_cli` as a user would, with its own HOME and vault."""

    def __init__(self, tmp: Path, env: dict):
        self.tmp = tmp
        self.env = env

    @property
    def backend(self) -> str:
        """"postgres" when the vault is a postgresql:// URI, else "sqlite" (a file)."""
        return "postgres" if self.env["KMS_CLI_VAULT"].startswith(("postgresql://", "postgres://")) else "sqlite"

    @property
    def vault(self) -> Path:
        """The vault file (SQLite only: a test that reads the file is marked sqlite_only)."""
        assert self.backend == "sqlite", "this vault is on PostgreSQL: mark a test that reads the file sqlite_only"
        return Path(self.env["KMS_CLI_VAULT"])

    def __call__(self, *args, input: bytes | str | None = None, env: dict | None = None,
                 timeout: float = 60, check: bool | None = None) -> Result:
        if isinstance(input, str):
            input = input.encode()
        full_env = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        p = subprocess.run([sys.executable, "-m", "kms_cli", *map(str, args)], input=input if input is not None else b"",
                           capture_output=True, env=full_env, timeout=timeout, cwd=self.tmp)
        r = Result(p.returncode, p.stdout, p.stderr.decode(errors="replace"))
        if check:
            assert r.code == 0, f"exit {r.code}: {r.err}"
        return r

    def ok(self, *args, **kw) -> Result:
        r = self(*args, **kw)
        assert r.code == 0, f"kms-cli {' '.join(map(str, args))} -> exit {r.code}: {r.err}"
        return r


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (kms-cli's stream workers, an exec'd child)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def base_env(tmp: Path) -> dict:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_CLI_", "AWS_", "VAULT_", "GOOGLE_", "AZURE_"))}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "KMS_CLI_VAULT": str(tmp / "vault.db"),
        "KMS_CLI_MASTER_KEY": MASTER_KEY,
        # each test's own agent socket (none runs unless the test starts one): never the user's agent
        "KMS_CLI_AGENT_SOCK": str(tmp / "agent" / "agent.sock"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    })
    env.pop("GITHUB_ACTIONS", None)
    return env


_PG_SCHEMAS = iter(range(1, 1 << 30))


def pg_schema() -> str:
    """A schema name no other test of this session (or of a parallel worker) uses."""
    return f"t{os.getpid()}_{next(_PG_SCHEMAS)}"


def backend_runner(tmp: Path, backend: str, request) -> Kms:
    """A runner with its HOME under `tmp` and an empty vault on `backend`: the file `tmp/vault.db`,
    or ("postgres") a fresh schema in database `kms` of the session's cluster (fixture `pg_cluster`,
    asked of pytest's `request`). Module fixtures that build a vault once use it with `backend`."""
    env = base_env(tmp)
    if backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        env.update(cluster.env, KMS_CLI_VAULT=cluster.uri("kms", vault=pg_schema()))
    return Kms(tmp, env)
