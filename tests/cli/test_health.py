"""`health` through the real CLI: healthy (0), degraded (10), integrity (5), unreachable (7), locked (4)."""

import json
import os
import sqlite3
import sys
import time

import pytest

from kmshelp import ROOT

CHECKS = {"vault.file", "vault.schema", "vault.integrity", "slot.1", "audit.chain", "keys.rotation", "keys.grace",
          "keys.destroy", "secrets.ttl", "vault.rows"}


def checks(doc) -> dict:
    return {c["name"]: c for c in doc["checks"]}


def test_healthy(vault):
    vault.ok("key", "create", "k", "--rotate-every", "90d")
    vault.ok("secret", "put", "s", "--ttl", "30d", input=b"x")
    doc = vault.ok("--json", "health").json()
    assert doc["status"] == "healthy" and set(doc) == {"status", "checks"}
    assert set(checks(doc)) == CHECKS
    assert all(set(c) == {"name", "status", "detail"} and c["status"] == "ok" for c in doc["checks"])
    assert checks(doc)["secrets.ttl"]["detail"] == "no secret is past its TTL or expiring within 7 days"
    same = vault.ok("health", "--format", "json").json()
    assert same["status"] == "healthy" and set(checks(same)) == CHECKS
    text = vault.ok("health").text
    assert text.endswith("status: healthy\n") and "ok    audit.chain" in text
    ops = [json.loads(x)["op"] for x in vault.ok("audit", "export").out.splitlines()]
    assert ops.count("health") == 3  # one entry per run, when the vault unlocks


def test_degraded_warnings_and_prometheus(vault):
    """One sleep for every timer: a rotation date, a TTL, a grace period and a destroy window."""
    from prometheus_client.parser import text_string_to_metric_families

    vault.ok("key", "create", "k", "--rotate-every", "1s")
    vault.ok("secret", "put", "app/s", "--ttl", "1s", input=b"x")
    vault.ok("secret", "put", "app/t", input=b"x")
    vault.ok("key", "create", "g")
    vault.ok("key", "rotate", "g", "--grace", "1s")
    vault.ok("key", "create", "d")
    vault.ok("key", "destroy", "d", "--after", "1s")
    vault.ok("key", "create", "off")
    vault.ok("key", "disable", "off")
    time.sleep(1.1)
    r = vault("health", "--format", "prometheus")
    assert r.code == 10
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for f in families.values():
        assert f.name.startswith("kms_cli_") and f.type == "gauge" and f.documentation
        assert not f.name.endswith("_total")

    def value(name, **labels):
        (s,) = [s for s in families[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
        return s.value

    assert value("kms_cli_health_status") == 1
    assert value("kms_cli_keys", state="active") == 2  # k, g
    assert value("kms_cli_keys", state="disabled") == 1 and value("kms_cli_keys", state="destroy-scheduled") == 1
    assert value("kms_cli_key_rotations_overdue") == 1 and value("kms_cli_key_versions_past_grace") == 1
    assert value("kms_cli_key_destroys_due") == 1
    assert value("kms_cli_secrets") == 2 and value("kms_cli_secrets_expired") == 1
    assert value("kms_cli_health_check_status", check="secrets.ttl") == 1
    assert value("kms_cli_health_check_status", check="audit.chain") == 0
    assert value("kms_cli_audit_entries") == value("kms_cli_audit_last_seq") == 10
    assert value("kms_cli_vault_size_bytes") > 0
    assert abs(value("kms_cli_health_last_run_timestamp_seconds") - time.time()) < 60
    assert vault("--json", "health", "--format", "prometheus").code == 2

    # the same run as JSON: the purge of the due key happened in the run above
    r = vault("--json", "health")
    assert r.code == 10
    doc = r.json()
    c = checks(doc)
    assert doc["status"] == "degraded"
    assert c["keys.rotation"]["status"] == "warn" and "k;" in c["keys.rotation"]["detail"]
    assert c["secrets.ttl"]["status"] == "warn" and "app/s" in c["secrets.ttl"]["detail"]
    assert c["keys.grace"]["status"] == "warn" and "g v1" in c["keys.grace"]["detail"]
    assert c["keys.destroy"]["status"] == "ok"
    assert json.loads(r.err.strip().splitlines()[-1])["error"] == {
        "code": "degraded", "exit": 10,
        "message": "the vault is degraded: 3 warnings: keys.rotation, keys.grace, secrets.ttl"}
    # rotating, revoking and replacing make it healthy again
    vault.ok("key", "rotate", "--due")
    vault.ok("key", "revoke", "g", "--version", "1", "--reason", "rewrapped")
    vault.ok("secret", "put", "app/s", input=b"y")
    assert vault("health").code == 0


def test_broken_audit_chain_is_5(vault):
    vault.ok("secret", "put", "s", input=b"x")
    db = sqlite3.connect(vault.vault, isolation_level=None)
    db.execute("UPDATE audit SET entry = replace(entry, '\"result\":\"ok\"', '\"result\":\"denied\"') WHERE seq = 2")
    db.close()
    r = vault("--json", "health")
    assert r.code == 5
    c = checks(r.json())
    assert r.json()["status"] == "unhealthy"
    assert c["audit.chain"]["status"] == "fail" and "seq 2: altered" in c["audit.chain"]["detail"]
    assert "kms-cli: error: the vault is unhealthy: audit.chain" in r.err
    r = vault("health", "--format", "prometheus")
    assert r.code == 5 and "kms_cli_health_status 2" in r.text


def test_damaged_file_is_5_and_missing_vault_is_3(kms):
    assert kms("health").code == 3
    kms.vault.write_bytes(b"not a database at all" * 100)
    r = kms("--json", "health")
    assert r.code == 5 and checks(r.json())["vault.file"]["status"] == "fail"


def test_no_slot_unlocks_is_4(vault):
    r = vault("--json", "health", env={"KMS_CLI_MASTER_KEY": "33" * 32})
    assert r.code == 4
    c = checks(r.json())
    assert c["unlock"]["status"] == "fail" and c["vault.integrity"]["status"] == "ok"
    assert "audit.chain" not in c  # nothing behind the seal is reported without the key
    assert "33" * 32 not in r.text + r.err


def test_slot_whose_source_refuses_is_4_and_unconfigured_slot_is_not_checked(vault):
    vault.ok("master", "add", "env:SECOND_KEY", env={"SECOND_KEY": "22" * 32})
    c = checks(vault.ok("--json", "health").json())
    assert c["slot.2"]["status"] == "ok" and "not checked" in c["slot.2"]["detail"]
    c = checks(vault.ok("--json", "health", env={"SECOND_KEY": "22" * 32}).json())
    assert c["slot.2"]["status"] == "ok" and "unseals the root key" in c["slot.2"]["detail"]
    r = vault("--json", "health", env={"SECOND_KEY": "44" * 32})
    assert r.code == 4 and checks(r.json())["slot.2"]["status"] == "fail"
    assert "22" * 32 not in r.text + r.err and "44" * 32 not in r.text + r.err


@pytest.mark.server
def test_unreachable_source_is_7(vault):
    if ROOT not in map(os.path.abspath, sys.path):
        sys.path.insert(0, str(ROOT))
    pytest.importorskip("google.cloud.kms_v1")
    from tests.servers.gcp_wire import FakeCloudKms

    key = "projects/p/locations/global/keyRings/ring/cryptoKeys/root"
    server = FakeCloudKms().start()
    try:
        server.create_key(key)
        env = {"KMS_CLI_GCP_ENDPOINT": server.url, "KMS_CLI_TIMEOUT": "2", "KMS_CLI_RETRIES": "0"}
        vault.ok("master", "add", f"gcp-kms://{key}", env=env)
        c = checks(vault.ok("--json", "health", env=env).json())
        assert c["slot.2"]["status"] == "ok" and "unseals the root key" in c["slot.2"]["detail"]
    finally:
        server.stop()
    r = vault("--json", "health", env=env)
    assert r.code == 7, r.err
    c = checks(r.json())
    assert c["slot.1"]["status"] == "ok"
    assert c["slot.2"]["status"] == "fail" and "unreachable" in c["slot.2"]["detail"]
    assert c["audit.chain"]["status"] == "ok"


def test_secret_expiring_within_the_window_warns(vault):
    """A TTL ending within the window (default 7 days) is a warning (exit 10), counted for Prometheus."""
    from prometheus_client.parser import text_string_to_metric_families

    vault.ok("secret", "put", "soon", "--ttl", "60s", input=b"x")
    vault.ok("secret", "put", "later", "--ttl", "30d", input=b"x")
    r = vault("--json", "health")
    assert r.code == 10
    assert "1 secret expiring within 7 days: soon" in checks(r.json())["secrets.ttl"]["detail"]
    r = vault("health", "--format", "prometheus")
    assert r.code == 10
    samples = {s.name: s.value for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    assert samples["kms_cli_secrets_expiring"] == 1
    assert vault("health", "--expiring-within", "30s").code == 0
    assert vault("health", "--expiring-within", "0s").code == 0
    assert vault("health", "--expiring-within", "60d").code == 10


def test_health_reports_the_agent_holding_the_vault_and_its_counters(vault):
    """With an agent holding the vault: an `agent` check naming until when, and in Prometheus the
    agent's request and hit counters (a cache's hit rate, as the services in this field export)."""
    vault.ok("unlock")
    try:
        env_without_key = {"KMS_CLI_MASTER_KEY": None}
        vault.ok("secret", "put", "s", input=b"v", env=env_without_key)  # served: no key in the environment
        doc = vault.ok("--json", "health", env=env_without_key).json()
        agent = next(c for c in doc["checks"] if c["name"] == "agent")
        assert agent["status"] == "ok" and "held by the agent" in agent["detail"]
        prom = vault.ok("health", "--format", "prometheus", env=env_without_key).text
        assert "kms_cli_agent_holds_vault 1" in prom
        hits = int(next(line.split()[1] for line in prom.splitlines() if line.startswith("kms_cli_agent_hits_total")))
        assert hits >= 3
        assert "# TYPE kms_cli_agent_requests_total counter" in prom
    finally:
        vault.ok("agent", "stop")
    doc = vault.ok("--json", "health").json()
    assert all(c["name"] != "agent" for c in doc["checks"])
