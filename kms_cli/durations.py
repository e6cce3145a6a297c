"""Durations (ISO 8601 `P90D`, `PT12H` or short `90d`, `12h`, `30m`) and RFC 3339 timestamps."""

from __future__ import annotations

import re
import time

from kms_cli.errors import UsageError

_ISO_PATTERN = (
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?\Z"
)
_SHORT_PATTERN = r"(?P<n>\d+)(?P<u>[smhdwy])\Z"
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """Seconds in a duration; a year is 365 days and a month 30 days."""
    t = text.strip()
    # re's own cache compiles each pattern once; compiling at import would cost every command.
    m = re.match(_SHORT_PATTERN, t)
    if m:
        return int(m["n"]) * _UNIT[m["u"]]
    m = re.match(_ISO_PATTERN, t.upper())
    if m and t.upper() not in ("P", "PT") and not t.upper().endswith("T"):
        g = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
        return (
            g["y"] * 365 * 86400
            + g["mo"] * 30 * 86400
            + g["w"] * 7 * 86400
            + g["d"] * 86400
            + g["h"] * 3600
            + g["mi"] * 60
            + g["s"]
        )
    raise UsageError(
        f"invalid duration {text!r}",
        hint="use ISO 8601 (P90D, PT12H) or a short form (90d, 12h, 30m)",
    )


def format_duration(seconds: int) -> str:
    """ISO 8601 form of a number of seconds, in days when whole."""
    if seconds % 86400 == 0:
        return f"P{seconds // 86400}D"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    out = "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") + (f"{s}S" if s else "")
    return out if out != "PT" else "PT0S"


def now() -> float:
    """The clock, in one place so tests can pin it (KMS_CLI_NOW is not honoured: real time only)."""
    return time.time()


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_rfc3339(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
