"""Shared fixtures: a temp vault and a `kms` runner that drives the real CLI in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ holds kmshelp and vectorutil
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.servers

from kmshelp import Kms, base_env  # noqa: E402


@pytest.fixture
def kms(tmp_path) -> Kms:
    """A runner with an empty (not yet initialised) vault path."""
    return Kms(tmp_path, base_env(tmp_path))


@pytest.fixture
def vault(kms) -> Kms:
    """A runner with an initialised vault (env master key)."""
    kms.ok("init")
    return kms


# -- PostgreSQL: one private cluster per session (tests/servers/postgres.py), a schema per test ----

_PG_SCHEMAS = iter(range(1, 1 << 30))


@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL server from the Debian package on 127.0.0.1 (and a Unix socket), with a
    role `kms` that logs in with a password from PGPASSFILE; one database `kms` for the tests."""
    from tests.servers import skip_or_fail
    from tests.servers.postgres import Cluster, bindir

    if bindir() is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'kms-cli[postgres]')")
    cluster = Cluster().start()
    cluster.createdb("kms")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_uri(pg_cluster, worker_schema) -> str:
    """A URI naming a fresh, empty vault (its own schema) in the session's database."""
    return pg_cluster.uri("kms", vault=worker_schema)


@pytest.fixture
def worker_schema() -> str:
    import os

    return f"t{os.getpid()}_{next(_PG_SCHEMAS)}"


@pytest.fixture
def pg_kms(tmp_path, pg_cluster, pg_uri) -> Kms:
    """Like `kms`, with its vault on the PostgreSQL server (not yet initialised)."""
    env = base_env(tmp_path)
    env.update(pg_cluster.env, KMS_CLI_VAULT=pg_uri)
    return Kms(tmp_path, env)


@pytest.fixture
def pg_vault(pg_kms) -> Kms:
    """An initialised PostgreSQL vault (env master key)."""
    pg_kms.ok("init")
    return pg_kms
