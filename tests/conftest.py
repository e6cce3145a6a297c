"""Shared fixtures: a temp vault and a `kms` runner that drives the real CLI in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ holds kmshelp and vectorutil
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.servers

from kmshelp import Kms, backend_runner, base_env, pg_schema  # noqa: E402


# -- both backends: the command tests of these modules run once on a SQLite file, once on PostgreSQL --
#
# Their `kms` / `vault` fixtures (and module fixtures that ask for `backend`) get a vault on each
# engine: test ids end in [sqlite] / [postgres]; the PostgreSQL runs carry the `server` marker
# (`-m "not server"` leaves them out). A test marked `@pytest.mark.sqlite_only("why")` runs on SQLite
# only: it reads or edits the SQLite file itself, or it checks what does not touch the store (the
# envelope, signals, editors, child processes) and a PostgreSQL run, ~4x slower per command (each
# command imports psycopg and connects), would only add time to CI.
BOTH_BACKENDS = {
    "test_secrets.py", "test_keys.py", "test_data.py", "test_asym.py", "test_namespace.py", "test_policy.py",
    "test_master.py", "test_audit.py", "test_process.py", "test_secret_rotate.py", "test_secret_edit.py",
    "test_rewrap_in_place.py", "test_recipients.py", "test_init.py",
}
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.server, id="postgres")]


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames or Path(metafunc.definition.path).name not in BOTH_BACKENDS:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    # module scope: a module fixture (a vault built once) may ask for `backend` too
    metafunc.parametrize("backend", ["sqlite"] if only else BACKENDS, scope="module")


@pytest.fixture(scope="session")
def backend() -> str:
    """The vault's engine: "sqlite" unless the module is in BOTH_BACKENDS (then parametrized)."""
    return "sqlite"


@pytest.fixture
def kms(tmp_path, backend, request) -> Kms:
    """A runner with an empty (not yet initialised) vault: a file path, or a PostgreSQL schema."""
    return backend_runner(tmp_path, backend, request)


@pytest.fixture
def vault(kms) -> Kms:
    """A runner with an initialised vault (env master key)."""
    kms.ok("init")
    return kms


# -- PostgreSQL: one private cluster per session (tests/servers/postgres.py), a schema per test ----

@pytest.fixture(scope="session")
def pg_cluster():
    """A real PostgreSQL server from the Debian package on 127.0.0.1 (and a Unix socket), with a
    role `kms` that logs in with a password from PGPASSFILE; one database `kms` for the tests. Its
    collation is ICU en-US, as on a typical server (the cluster's own is C, which sorts by bytes like
    SQLite): what kms-cli sorts or compares must not depend on the database's collation."""
    from tests.servers import skip_or_fail
    from tests.servers.postgres import Cluster, bindir

    if bindir() is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'kms-cli[postgres]')")
    cluster = Cluster().start()
    try:
        cluster.psql(f'CREATE DATABASE "kms" OWNER {cluster.role} TEMPLATE template0 LOCALE_PROVIDER icu '
                     "ICU_LOCALE 'en-US' LOCALE 'C'")
    except RuntimeError:  # before PostgreSQL 15, or built without ICU: the cluster's collation (C)
        cluster.createdb("kms")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_uri(pg_cluster, worker_schema) -> str:
    """A URI naming a fresh, empty vault (its own schema) in the session's database."""
    return pg_cluster.uri("kms", vault=worker_schema)


@pytest.fixture
def worker_schema() -> str:
    return pg_schema()


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


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs (needs root to mount): a disk that fills up."""
    import subprocess

    mnt = tmp_path / "fs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip() or p.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
