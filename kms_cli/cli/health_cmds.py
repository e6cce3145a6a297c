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
