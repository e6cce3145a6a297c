"""The Prometheus text format (for node_exporter's textfile collector): rendering only."""

from __future__ import annotations


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Gauges:
    """Lines of the text exposition format, one gauge at a time (all names get the `kms_cli_` prefix)."""

    def __init__(self):
        self.lines: list[str] = []

    def gauge(self, name: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        self.lines.append(f"# HELP kms_cli_{name} {help_}")
        self.lines.append(f"# TYPE kms_cli_{name} gauge")
        for labels, value in samples:
            lbl = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
            self.lines.append(f"kms_cli_{name}{{{lbl}}} {_num(value)}" if lbl else f"kms_cli_{name} {_num(value)}")

    def counter(self, name: str, help_: str, value: float) -> None:
        self.lines.append(f"# HELP kms_cli_{name} {help_}")
        self.lines.append(f"# TYPE kms_cli_{name} counter")
        self.lines.append(f"kms_cli_{name} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def health(report) -> str:
    """A `vault.health.Report` as gauges."""
    from kms_cli.vault.health import CHECK_VALUE, STATUS_VALUE

    out = Gauges()
    gauge = out.gauge
    m = report.metrics
    gauge("health_status", "Overall vault health: 0 healthy, 1 degraded, 2 unhealthy.",
          [({}, STATUS_VALUE[report.status])])
    gauge("health_check_status", "Status of each health check: 0 ok, 1 warn, 2 fail.",
          [({"check": c.name}, CHECK_VALUE[c.status]) for c in report.checks])
    gauge("health_last_run_timestamp_seconds", "When this health report was made, in seconds since the epoch.",
          [({}, round(report.when, 3))])
    if "vault_size_bytes" in m:
        gauge("vault_size_bytes", "Size of the vault file in bytes.", [({}, m["vault_size_bytes"])])
    if "replication_lag_seconds" in m:
        gauge("replication_lag_seconds", "A PostgreSQL standby's replay lag behind its primary (-1: nothing "
              "replayed yet).", [({}, round(m["replication_lag_seconds"], 3))])
    if "keys_by_state" in m:
        gauge("keys", "Keys by state.", [({"state": s}, n) for s, n in m["keys_by_state"].items()])
        gauge("key_rotations_overdue", "Active keys past their rotation date.", [({}, m["rotations_overdue"])])
        gauge("key_versions_past_grace", "Key versions past their grace period.",
              [({}, m["key_versions_past_grace"])])
        gauge("key_destroys_due", "Keys past their destroy window.", [({}, m["destroys_due"])])
    if "secrets" in m:
        gauge("secrets", "Secrets (not deleted).", [({}, m["secrets"])])
        gauge("secrets_expired", "Secrets whose current version is past its TTL.", [({}, m["secrets_expired"])])
        gauge("secrets_expiring", "Secrets whose current version's TTL ends within the warning window.",
              [({}, m["secrets_expiring"])])
    if "audit_entries" in m:
        gauge("audit_entries", "Entries in the audit log (after any prune).", [({}, m["audit_entries"])])
        gauge("audit_last_seq", "Sequence number of the newest audit entry.", [({}, m["audit_last_seq"])])
    if "agent" in m:
        agent = m["agent"]
        gauge("agent_holds_vault", "1 when the agent holds this vault (commands run without unlocking).",
              [({}, int(agent["held"]))])
        if agent["held"]:
            from kms_cli import durations

            gauge("agent_vault_expires_timestamp_seconds", "When the agent forgets this vault at the latest.",
                  [({}, durations.parse_rfc3339(agent["expires"]))])
        c = agent["counters"]
        out.counter("agent_requests_total", "Commands sent to the agent since it started.", c.get("requests", 0))
        out.counter("agent_hits_total", "Commands the agent ran with a vault it held.", c.get("hits", 0))
        out.counter("agent_misses_total", "Commands the agent handed back (vault not held).", c.get("misses", 0))
    return out.text()
