"""Property tests of the parsers that face user input (issue 10, section 5): durations, numbers and
option values, armor, config.toml and the environment. Whatever the input, the result is valid or
a clean KmsError with the spec's exit code, never another exception."""

from __future__ import annotations

import io
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kms_cli import armor, config
from kms_cli.cli.parse import parse
from kms_cli.durations import MAX_DURATION, parse_duration, rfc3339
from kms_cli.errors import IntegrityError, KmsError, UsageError
from kms_cli.names import MAX_VERSION, parse_version

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clean(exc: KmsError, exit_code: int) -> None:
    assert type(exc).exit_code == exit_code
    assert exc.message and exc.message == exc.message.rstrip(".") and "\n" not in exc.message
    first = exc.message.split()[0]
    assert first[0].islower() or first.isupper()  # lowercase, but a variable's name (GITHUB_ENV) is as it is


# -- durations -----------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


@SETTINGS
@given(st.text())
@example("99999999999999999999d")
@example("P99999999999999999999D")
@example("9" * 5000 + "s")
@example("٣d")
@example("PT")
@example("0s")
def test_any_text_is_a_bounded_duration_or_a_usage_error(text):
    try:
        seconds = parse_duration(text)
    except UsageError as exc:
        _clean(exc, 2)
        assert len(exc.message) < 500  # the input is quoted shortened, never whole
        return
    assert isinstance(seconds, int) and 0 <= seconds <= MAX_DURATION
    assert rfc3339(time.time() + seconds)  # any accepted TTL can be stored and shown


@SETTINGS
@given(st.integers(min_value=0, max_value=10**30), st.sampled_from(sorted(_UNITS)), st.integers(0, 5))
def test_short_form_is_exact_up_to_100_years(n, unit, zeros):
    text = "0" * zeros + f"{n}{unit}"
    expected = n * _UNITS[unit]
    if expected > MAX_DURATION:
        with pytest.raises(UsageError):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


@SETTINGS
@given(st.fixed_dictionaries({}, optional={k: st.integers(0, 10**15) for k in ("Y", "M", "W", "D")}),
       st.fixed_dictionaries({}, optional={k: st.integers(0, 10**15) for k in ("H", "M", "S")}))
def test_iso_form_is_exact_up_to_100_years(date, clock):
    text = "P" + "".join(f"{date[k]}{k}" for k in ("Y", "M", "W", "D") if k in date)
    if clock:
        text += "T" + "".join(f"{clock[k]}{k}" for k in ("H", "M", "S") if k in clock)
    if text == "P":
        with pytest.raises(UsageError):
            parse_duration(text)
        return
    expected = (date.get("Y", 0) * 365 * 86400 + date.get("M", 0) * 30 * 86400 + date.get("W", 0) * 7 * 86400
                + date.get("D", 0) * 86400 + clock.get("H", 0) * 3600 + clock.get("M", 0) * 60 + clock.get("S", 0))
    if expected > MAX_DURATION:
        with pytest.raises(UsageError):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


@SETTINGS
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30)))
def test_any_stored_time_can_be_shown(ts):
    text = rfc3339(ts)
    assert len(text) == 20 and text.endswith("Z")


# -- numbers and option values -------------------------------------------------------------------

@SETTINGS
@given(st.text())
@example("99999999999999999999")
@example("0")
@example("-1")
@example("٣")
@example("1_000")
@example(" 1")
def test_any_text_is_a_version_or_a_usage_error(text):
    try:
        n = parse_version(text)
    except UsageError as exc:
        _clean(exc, 2)
        return
    assert 1 <= n <= MAX_VERSION and str(n) == text.lstrip("0")


@SETTINGS
@given(st.sampled_from([("secret", "put", "x", "--ttl"), ("secret", "get", "x", "--version"),
                        ("key", "create", "k", "--rotate-every"), ("key", "rotate", "k", "--grace"),
                        ("key", "destroy", "k", "--after"), ("audit", "log", "--since"),
                        ("init", "--master-key"), ("env", "--format"), ("--namespace",), ("env", "--prefix")]),
       st.text())
def test_any_option_value_parses_or_is_a_usage_error(words, value):
    argv = [*words, value] + (["secret", "list"] if words == ("--namespace",) else [])
    try:
        parsed = parse(argv)
    except UsageError as exc:
        _clean(exc, 2)
        return
    params = {**parsed.params, **parsed.globals}
    got = params[{"--ttl": "ttl", "--version": "version", "--rotate-every": "rotate_every", "--grace": "grace",
                  "--after": "after", "--since": "since", "--master-key": "master_key", "--format": "format",
                  "--namespace": "namespace", "--prefix": "prefix"}[words[-1]]]
    if words[-1] == "--version":
        assert 1 <= got <= MAX_VERSION
    elif words[-1] in ("--ttl", "--rotate-every", "--grace", "--after", "--since"):
        assert 0 <= parse_duration(got) <= MAX_DURATION
    elif words[-1] not in ("--namespace", "--prefix"):
        assert got  # an empty value is refused wherever a value is required


# -- armor -----------------------------------------------------------------------------------------

def _armor(data: bytes) -> bytes:
    out = io.BytesIO()
    w = armor.ArmorWriter(out)
    w.write(data)
    w.finish()
    return out.getvalue()


def _dearmor(text: bytes) -> bytes:
    return armor.open_input(io.BufferedReader(io.BytesIO(text))).read()


@SETTINGS
@given(st.binary(max_size=2000))
def test_armor_round_trips(data):
    assert _dearmor(_armor(data)) == data


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, len(_B64) - 1),
                                                  st.sampled_from(["replace", "insert", "delete"])), max_size=4))
def test_accepted_armor_is_the_canonical_armor_of_what_it_decodes_to(data, edits):
    """Like age: decoding succeeds only for the one encoding the writer produces (canonical base64,
    64-column lines, the short or padded line last), so nothing else can be smuggled in or aliased."""
    text = _armor(data)
    head, body, tail = text[: len(armor.BEGIN) + 1], bytearray(text[len(armor.BEGIN) + 1: -len(armor.END) - 1]), \
        text[-len(armor.END) - 1:]
    for pos, ch, kind in edits:
        at = pos % (len(body) + 1)
        if kind == "insert" or not body:
            body[at:at] = _B64[ch: ch + 1]
        elif kind == "replace":
            body[at % len(body)] = _B64[ch]
        else:
            del body[at % len(body)]
    mutated = head + bytes(body) + tail
    try:
        decoded = _dearmor(mutated)
    except IntegrityError as exc:
        _clean(exc, 5)
        return
    assert _armor(decoded) == mutated


@SETTINGS
@given(st.binary(max_size=3000))
@example(armor.BEGIN + b"\nQR==\n" + armor.END + b"\n")
@example(armor.BEGIN + b"\nQQ=\n" + armor.END + b"\n")
@example(armor.BEGIN + b"\n" + b"QUFB" * 15 + b"QQ==\nQUFB\n" + armor.END + b"\n")
def test_any_input_decodes_or_is_an_integrity_error(raw):
    text = raw if raw.startswith(b"-----BEGIN") else armor.BEGIN + b"\n" + raw
    try:
        _dearmor(text)
    except IntegrityError as exc:
        _clean(exc, 5)


# -- config.toml and the environment -------------------------------------------------------------

def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"k{i} = {_toml(v)}" for i, v in enumerate(value.values())) + "}"
    return value.isoformat()


_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                     st.text(st.characters(exclude_categories=("Cs",)), max_size=30), st.dates(), st.datetimes())
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3), st.dictionaries(st.text(max_size=3), _scalars, max_size=2))


@SETTINGS
@given(st.sampled_from(sorted(config.SETTINGS)), _values)
@example("vault", True)
@example("namespace", 5)
@example("timeout", float("nan"))
@example("timeout", "inf")
@example("retries", 10**18)
def test_any_config_value_resolves_or_is_a_usage_error(tmp_path_factory, key, value):
    _resolves_or_is_a_usage_error(tmp_path_factory, f"{key} = {_toml(value)}\n".encode("utf-8"))


@SETTINGS
@given(st.one_of(st.text(max_size=200).map(lambda t: t.encode("utf-8")), st.binary(max_size=200)))
@example(b'vault = true\n')
@example(b'[vault]\nx = 1\n')
@example(b'timeout = 1e400\n')
@example(b'\xff\xfe')
def test_any_config_file_resolves_or_is_a_usage_error(tmp_path_factory, raw):
    _resolves_or_is_a_usage_error(tmp_path_factory, raw)


def _resolves_or_is_a_usage_error(tmp_path_factory, raw: bytes) -> None:
    cfg = tmp_path_factory.mktemp("cfg") / "config.toml"
    cfg.write_bytes(raw)
    try:
        s = config.resolve({}, {"KMS_CLI_CONFIG": str(cfg), "XDG_DATA_HOME": "/nonexistent"})
    except UsageError as exc:
        _clean(exc, 2)
        return
    _valid_settings(s)


@SETTINGS
@given(st.text(), st.text())
@example("nan", "3")
@example("inf", "3")
@example("-0", "3")
@example("1e-400", "3")
@example("10", "9" * 5000)
def test_any_timeout_and_retries_resolve_or_are_a_usage_error(timeout, retries):
    env = {"KMS_CLI_TIMEOUT": timeout, "KMS_CLI_RETRIES": retries, "KMS_CLI_CONFIG": "/nonexistent/config.toml",
           "KMS_CLI_VAULT": "/v.db"}
    try:
        s = config.resolve({}, env)
    except UsageError as exc:
        _clean(exc, 2)
        return
    _valid_settings(s)


def _valid_settings(s: config.Settings) -> None:
    assert isinstance(s.vault, str) and s.vault
    assert isinstance(s.namespace, str)
    assert s.unlock is None or isinstance(s.unlock, str)
    assert s.passphrase_file is None or isinstance(s.passphrase_file, str)
    assert isinstance(s.timeout, float) and 0 < s.timeout <= config.MAX_TIMEOUT
    assert isinstance(s.retries, int) and 0 <= s.retries <= config.MAX_RETRIES
    assert isinstance(s.no_color, bool)
