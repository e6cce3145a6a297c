import pytest

from kms_cli.durations import format_duration, parse_duration, parse_rfc3339, rfc3339
from kms_cli.errors import UsageError


@pytest.mark.parametrize("text,seconds", [
    ("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("2w", 14 * 86400),
    ("P90D", 90 * 86400), ("PT12H", 43200), ("P1DT2H3M4S", 86400 + 7384), ("p1w", 7 * 86400), ("PT0S", 0),
])
def test_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "90", "d90", "1.5h", "-1d", "soon"])
def test_invalid(text):
    with pytest.raises(UsageError):
        parse_duration(text)


def test_format_round_trip():
    for s in (86400 * 90, 3600, 61, 0):
        assert parse_duration(format_duration(s)) == s


def test_rfc3339():
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert parse_rfc3339("2026-01-02T03:04:05Z") == parse_rfc3339(rfc3339(parse_rfc3339("2026-01-02T03:04:05Z")))
