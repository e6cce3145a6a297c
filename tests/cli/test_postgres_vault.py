"""A PostgreSQL vault through the real CLI against a real server (tests/servers/postgres.py):
`vault copy` both ways, `backup` from PostgreSQL, `restore` into it refused with the way to do
it, `health` (server, schema, standby and replication lag), the agent, and a hot standby (reads
work, writes are exit 7 naming the primary)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from kmshelp import Kms, base_env

pytestmark = pytest.mark.server


def _seed(kms: Kms) -> None:
    kms.ok("secret", "put", "app/db", input=b"hunter2")
    kms.ok("secret", "put", "app/db", input=b"hunter3")
    kms.ok("key", "create", "app/k")
    kms.ok("policy", "set", "app", "--rotate-every", "encrypt=90d")


def test_vault_copy_file_to_postgres_and_back(vault, pg_cluster, pg_uri, tmp_path):
    _seed(vault)
    ct = vault.ok("encrypt", "--key", "app/k", input=b"data").out
    env = pg_cluster.env
    r = vault.ok("--json", "vault", "copy", str(vault.vault), pg_uri, env=env)
    info = r.json()
    assert info["to"].startswith("postgresql://kms@127.0.0.1:") and info["rows"]["secrets"] == 1
    on_pg = {**env, "KMS_CLI_VAULT": pg_uri}
    assert vault.ok("secret", "get", "app/db", env=on_pg).out == b"hunter3"
    assert vault.ok("secret", "get", "app/db", "--version", "1", env=on_pg).out == b"hunter2"
    assert vault.ok("decrypt", input=ct, env=on_pg).out == b"data"
    assert vault.ok("audit", "verify", env=on_pg).code == 0
    assert vault.ok("--json", "policy", "show", "app", env=on_pg).json()["rotate_every"] == {"encrypt": "P90D"}
    # the same vault: same id, slots, and the chain continues on the copy
    ids = {vault.ok("--json", "master", "list", env=e).json()[0]["source"] for e in ({}, on_pg)}
    assert ids == {"env:KMS_CLI_MASTER_KEY"}
    # an existing DST is refused, before anything is unlocked
    r = vault("vault", "copy", str(vault.vault), pg_uri, env={**env, "KMS_CLI_MASTER_KEY": None})
    assert r.code == 8 and "already exists" in r.err
    back = tmp_path / "back.db"
    vault.ok("vault", "copy", pg_uri, str(back), env=env)
    assert oct(back.stat().st_mode & 0o777) == "0o600"
    on_file = {"KMS_CLI_VAULT": str(back)}
    assert vault.ok("secret", "get", "app/db", env=on_file).out == b"hunter3"
    assert vault.ok("audit", "verify", env=on_file).code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kms-cli-copy-")]  # nothing left behind
    assert vault("vault", "copy", pg_uri, str(back), env=env).code == 8
    ops = [e["op"] for e in vault.ok("--json", "audit", "log").json_lines()]
    assert ops.count("vault.copy") == 1


def test_vault_copy_refuses_a_copy_of_itself_and_bad_uris(vault, pg_cluster, pg_uri):
    assert vault("vault", "copy", str(vault.vault), str(vault.vault)).code == 2
    r = vault("vault", "copy", str(vault.vault), "postgresql://kms:pw@127.0.0.1/kms", env=pg_cluster.env)
    assert r.code == 2 and "pw" not in r.err and "PGPASSFILE" in r.err


def test_vault_copy_from_a_file_that_fails_its_checks_leaves_nothing(vault, pg_cluster, pg_uri):
    _seed(vault)
    conn = sqlite3.connect(vault.vault)
    conn.execute("UPDATE audit SET entry = replace(entry, 'app/db', 'app/dx') WHERE op = 'secret.put'")
    conn.commit()
    conn.close()
    r = vault("vault", "copy", str(vault.vault), pg_uri, env=pg_cluster.env)
    assert r.code == 5 and "Traceback" not in r.err
    r = vault("secret", "list", env={**pg_cluster.env, "KMS_CLI_VAULT": pg_uri})
    assert r.code == 3  # no vault was left at DST


def test_backup_from_postgres_and_restore_into_it(pg_vault, pg_cluster, tmp_path):
    _seed(pg_vault)
    out = tmp_path / "pg-backup.db"
    info = pg_vault.ok("--json", "backup", "-o", str(out)).json()
    assert info["head"] > 0 and oct(out.stat().st_mode & 0o777) == "0o600"
    on_file = {"KMS_CLI_VAULT": str(out)}
    assert pg_vault.ok("secret", "get", "app/db", env=on_file).out == b"hunter3"
    assert pg_vault.ok("audit", "verify", env=on_file).code == 0
    r = pg_vault("restore", "--force", str(out))
    assert r.code == 2 and "vault copy" in r.err


def test_health_on_postgres(pg_vault, pg_cluster, pg_uri):
    r = pg_vault.ok("--json", "health")
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["vault.server"]["status"] == "ok" and "primary" in checks["vault.server"]["detail"]
    assert checks["vault.schema"]["status"] == "ok" and checks["audit.chain"]["status"] == "ok"
    assert "PostgreSQL" in checks["vault.integrity"]["detail"]
    r = pg_vault("health", env={"KMS_CLI_VAULT": pg_cluster.uri("kms", vault="nothing_here")})
    assert r.code == 3
    from tests.servers import closed_port

    r = pg_vault("health", env={"KMS_CLI_VAULT": f"postgresql://kms@127.0.0.1:{closed_port()}/kms"})
    assert r.code == 7 and "Traceback" not in r.err


def test_the_agent_serves_a_postgres_vault(pg_vault):
    pg_vault.ok("secret", "put", "s", input=b"v")
    try:
        pg_vault.ok("unlock")
        status = pg_vault.ok("--json", "agent", "status").json()
        assert status["vaults"][0]["vault"].startswith("postgresql://")
        r = pg_vault.ok("secret", "get", "s", env={"KMS_CLI_MASTER_KEY": None})
        assert r.out == b"v"
        pg_vault.ok("lock")
        assert pg_vault("secret", "get", "s", env={"KMS_CLI_MASTER_KEY": None}).code == 4
    finally:
        pg_vault("agent", "stop")


@pytest.mark.slow
def test_a_hot_standby_serves_reads_and_refuses_writes(pg_vault, pg_cluster, pg_uri, tmp_path):
    _seed(pg_vault)
    standby = pg_cluster.standby()
    try:
        uri = pg_uri.replace(f":{pg_cluster.port}/", f":{standby.port}/")
        on_standby = {"KMS_CLI_VAULT": uri, "PGPASSFILE": standby.passfile}
        deadline = time.monotonic() + 30
        while pg_vault("secret", "get", "app/db", env=on_standby).code != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        r = pg_vault.ok("secret", "get", "app/db", env=on_standby)
        assert r.out == b"hunter3" and "standby" in r.err and "not in the vault's audit log" in r.err
        r = pg_vault("secret", "put", "app/db", input=b"x", env=on_standby)
        assert r.code == 7 and "standby" in r.err and "primary" in r.err and "Traceback" not in r.err
        r = pg_vault("--json", "health", env=on_standby)
        checks = {c["name"]: c for c in r.json()["checks"]}
        assert "standby" in checks["vault.server"]["detail"] and "vault.replication" in checks
        r = pg_vault("health", "--format", "prometheus", env=on_standby)
        assert "kms_cli_replication_lag_seconds" in r.text
        # a write on the primary reaches the standby
        pg_vault.ok("secret", "put", "app/new", input=b"n")
        deadline = time.monotonic() + 30
        while pg_vault("secret", "get", "app/new", env=on_standby).code != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pg_vault.ok("secret", "get", "app/new", env=on_standby).out == b"n"
    finally:
        standby.stop()
