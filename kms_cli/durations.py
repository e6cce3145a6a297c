"""Durations (ISO 8601 `P90D`, `PT12H` or short `90d`, `12h`, `30m`) and RFC 3339 timestamps."""

from __future__ import annotations

import re
import time

from kms_cli.errors import UsageError

# ASCII digits only (`\d` would take any Unicode digit, which int() then reads).
_ISO_PATTERN = (
    r"P(?:(?P<y>[0-9]+)Y)?(?:(?P<mo>[0-9]+)M)?(?:(?P<w>[0-9]+)W)?(?:(?P<d>[0-9]+)D)?"
    r"(?:T(?:(?P<h>[0-9]+)H)?(?:(?P<mi>[0-9]+)M)?(?:(?P<s>[0-9]+)S)?)?\Z"
)
_SHORT_PATTERN = r"(?P<n>[0-9]+)(?P<u>[smhdwy])\Z"
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_ISO_UNIT = {"y": 365 * 86400, "mo": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "mi": 60, "s": 1}

MAX_DURATION = 100 * 365 * 86400
"""The longest duration kms-cli accepts anywhere (TTL, rotation schedule, grace, destroy window,
audit window): 100 years of 365 days. Longer is a usage error (exit 2), so no stored time can
overflow a timestamp later."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _count(digits: str | None) -> int:
    """The number a run of ASCII digits spells, capped just past any valid duration (no huge ints)."""
    if not digits:
        return 0
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


def parse_duration(text: str) -> int:
    """Seconds in a duration, from 0 to MAX_DURATION; a year is 365 days and a month 30 days."""
    t = text.strip()
    # re's own cache compiles each pattern once; compiling at import would cost every command.
    m = re.match(_SHORT_PATTERN, t)
    if m:
        seconds = _count(m["n"]) * _UNIT[m["u"]]
    else:
        iso = t.upper()
        m = re.match(_ISO_PATTERN, iso)
        if not m or iso in ("P", "PT") or iso.endswith("T"):
            raise UsageError(
                f"invalid duration {_shown(text)}",
                hint="use ISO 8601 (P90D, PT12H) or a short form (90d, 12h, 30m)",
            )
        seconds = sum(_count(v) * _ISO_UNIT[k] for k, v in m.groupdict().items())
    if seconds > MAX_DURATION:
        raise UsageError(f"duration {_shown(text)} is longer than 100 years", hint="the longest accepted is 100y")
    return seconds


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


_LAST_RFC3339 = 253402300799  # 9999-12-31T23:59:59Z, the last time RFC 3339 can write


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    if not 0 <= ts <= _LAST_RFC3339:  # before 1970, after 9999 or NaN: shown clamped, never breaking a list
        ts = _LAST_RFC3339 if ts > 0 else 0
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_rfc3339(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
