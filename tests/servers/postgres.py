"""A private PostgreSQL cluster from the Debian package, for the tests and the benchmark.

`initdb` refuses to run as root (CI runs as root), so the cluster's directory belongs to the
`postgres` user and every server command runs through `runuser -u postgres --` when we are root.
The server listens on 127.0.0.1 (scram-sha-256: clients bring a password through PGPASSFILE) and on
a Unix socket in the cluster's directory (trust, for this fixture's own set-up). One role `kms`
with a password owns the databases the tests create.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile

from tests.servers import free_port


def bindir() -> str | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps it off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None


class Cluster:
    """start() / stop(); `uri(db, **params)` for kms-cli; `env` for libpq (PGPASSFILE)."""

    role = "kms"

    def __init__(self, base: str | None = None):
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="kms-pg-", dir=base)
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.passfile = os.path.join(self.dir, "pgpass")
        self._as_postgres = os.geteuid() == 0

    def _run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        argv = [os.path.join(self.bin, cmd[0]) if not os.path.isabs(cmd[0]) else cmd[0], *cmd[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        p = subprocess.run(argv, capture_output=True, text=True, **kw)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def start(self) -> "Cluster":
        os.makedirs(self.sock)
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync")
        self.start_server()
        self.psql(f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}' CREATEDB")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:{self.port}:*:{self.role}:{self.password}\n")
        return self

    def start_server(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sock} "
                "-c fsync=on -c max_connections=200")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                  "-o", opts, "start")

    def standby(self) -> "Cluster":
        """A hot standby of this cluster (pg_basebackup -R over the Unix socket), started on its own
        port: streaming replication, read-only; the same role and password file work against it."""
        other = Cluster(base=os.path.dirname(self.dir))
        other.password, other.passfile = self.password, os.path.join(other.dir, "pgpass")
        os.makedirs(other.sock)
        if other._as_postgres:
            shutil.chown(other.dir, "postgres", "postgres")
            shutil.chown(other.sock, "postgres", "postgres")
        self._run("pg_basebackup", "-h", self.sock, "-p", str(self.port), "-U", "postgres", "-D", other.data, "-R",
                  "-X", "stream", "-c", "fast", "--no-sync")
        other.start_server()
        fd = os.open(other.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:{other.port}:*:{other.role}:{other.password}\n")
        return other

    def stop_server(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def stop(self) -> None:
        self.stop_server("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run("psql", "-h", self.sock, "-p", str(self.port), "-U", "postgres", "-d", db, "-v",
                         "ON_ERROR_STOP=1", "-At", "-c", sql).stdout

    def createdb(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}" OWNER {self.role}')
        return name

    def uri(self, db: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")

    @property
    def env(self) -> dict:
        return {"PGPASSFILE": self.passfile}
