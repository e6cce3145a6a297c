"""Handler for `health`: run the checks of kms_cli.vault.health and render them (text, JSON, Prometheus)."""

from __future__ import annotations

from kms_cli.errors import UsageError


def health(ctx, format, expiring_within=None) -> int:
    from kms_cli.vault import health as checks

    if ctx.json and format == "prometheus":
        raise UsageError("--json and --format prometheus exclude each other")
    from kms_cli.durations import parse_duration

    window = checks.SOON if expiring_within is None else parse_duration(expiring_within)
    report = checks.run(ctx.vault_options(), expiring_within=window)
    _agent_check(ctx, report)
    fmt = "json" if ctx.json else format
    if fmt == "json":
        ctx.emit_json(report.to_dict())
    elif fmt == "prometheus":
        from kms_cli.cli import prometheus

        ctx.stdout.write(prometheus.health(report).encode())
    else:
        width = max(len(c.name) for c in report.checks)
        lines = [f"{c.status:<4}  {c.name.ljust(width)}  {c.detail}" for c in report.checks]
        lines.append(f"status: {report.status}")
        ctx.stdout.write(("\n".join(lines) + "\n").encode())
    ctx.stdout.flush()
    err = report.error()
    if err is not None:
        raise err
    return 0


def _agent_check(ctx, report) -> None:
    """Whether the agent holds this vault and until when; its counters go to the metrics."""
    import json

    from kms_cli.agent import client
    from kms_cli.agent.protocol import socket_path
    from kms_cli.errors import KmsError
    from kms_cli.vault.health import OK

    try:
        answer = client.request(b"status", path=socket_path(ctx.environ))
    except KmsError:
        answer = None
    if answer is None:  # no agent: nothing to report (the report is what it was before agents)
        return
    status = json.loads(answer[0])
    from kms_cli.locations import same_vault

    held = next((v for v in status["vaults"] if same_vault(v["vault"], ctx.settings.vault)), None)
    report.metrics["agent"] = {"counters": status.get("counters", {}), "held": held is not None,
                               "expires": held and held["expires"], "idle_expires": held and held["idle_expires"]}
    if held is None:
        report.add("agent", OK, f"the agent (pid {status['pid']}) does not hold this vault")
    else:
        report.add("agent", OK, f"held by the agent (pid {status['pid']}) until {held['expires']}, forgotten at "
                                f"{held['idle_expires']} unless used")
