"""Handler for `serve`: parse the options, unlock the vault once, hand both to kms_cli.server.run."""

from __future__ import annotations

import re

from kms_cli.errors import UsageError

_RATE = re.compile(r"(\d+(?:\.\d+)?)(?:/(s|sec|second|m|min|minute|h|hour))?")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
        "hour": 3600.0}
_SIZE = re.compile(r"(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?", re.I)
_UNITS = {None: 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d{1,5})", value) or re.fullmatch(r"([^:\[\]]*):(\d{1,5})", value)
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise UsageError(f"invalid --listen {value!r}: expected HOST:PORT", hint="e.g. 127.0.0.1:8200 or [::1]:8200")
    return m.group(1) or "127.0.0.1", int(m.group(2))


def parse_rate(value: str, what: str = "--rate-limit") -> float:
    """N/s, N/m or N/h (N alone: per second) -> requests per second; 0 is no limit."""
    m = _RATE.fullmatch(value.strip().lower())
    if not m:
        raise UsageError(f"invalid {what} {value!r}: expected N/s (or N/m, N/h)", hint="e.g. 100/s; 0 turns it off")
    return float(m.group(1)) / _PER[m.group(2)]


def parse_size(value: str) -> int:
    m = _SIZE.fullmatch(value.strip())
    if not m or int(m.group(1)) <= 0:
        raise UsageError(f"invalid --max-body {value!r}: expected a size such as 64KiB or 1MiB")
    return int(m.group(1)) * _UNITS[(m.group(2) or "").lower() or None]


def _flushed(ctx, write, message: str) -> None:
    """A line on stderr now: a supervisor (or a test) waits for "serving ..." (stderr may be a pipe
    the agent handed over, not line-buffered)."""
    write(message)
    try:
        ctx.stderr.flush()
    except (OSError, ValueError):
        pass


def serve(ctx, listen, tls_cert, tls_key, no_tls, rate_limit, token_rate, max_body) -> int:
    from kms_cli.hardening import no_core_dumps
    from kms_cli.server import run
    from kms_cli.server.app import DEFAULT_RATE, MAX_BODY, Settings

    no_core_dumps()  # before the TLS key is read and the vault unlocked
    if ctx.settings.namespace:
        raise UsageError("serve takes no --namespace: requests name keys and secrets in full",
                         hint="limit what a token may use with `kms-cli token create NAME --namespace NS`")
    host, port = parse_listen(listen)
    rate = parse_rate(rate_limit) if rate_limit else DEFAULT_RATE
    rates = {}
    for item in token_rate or ():
        name, eq, r = item.partition("=")
        if not eq or not name:
            raise UsageError(f"invalid --token-rate {item!r}: expected NAME=N/s")
        rates[name] = parse_rate(r, "--token-rate")
    settings = Settings(max_body=parse_size(max_body) if max_body else MAX_BODY, rate=rate, token_rates=rates)
    lst = run.listener(host, port, tls_cert, tls_key, no_tls)  # before the unlock: a bad address costs none
    try:
        from kms_cli.cli import prometheus

        with ctx.vault() as vault:
            return run.serve(vault, lst, settings, render_health=prometheus.health,
                             say=lambda m: _flushed(ctx, ctx.info, m), warn=lambda m: _flushed(ctx, ctx.warn, m))
    finally:
        lst.close()
