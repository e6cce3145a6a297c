"""Hostile input, property-tested (issue 11, section 5): every parser of untrusted input gives a valid
result or one clean KmsError with the spec's exit code, never another exception.

Covered here: the ciphertext header (envelope), armor read as a stream, names and namespaces, the
one `kms://` reference parser and `inject` templates, durations (the ISO and short forms, bounds,
round trips), master key source URIs (parsing only, no network), and config.toml read from a
file of arbitrary bytes. test_error_properties.py (issue 10) holds the option-value, version and
environment properties; tests/cli/test_hostile_input.py drives the same inputs through the real CLI.
"""

from __future__ import annotations

import io
import re
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kms_cli import armor, config, envelope, names, providers, template
from kms_cli.durations import MAX_DURATION, format_duration, parse_duration
from kms_cli.errors import IntegrityError, KmsError, UsageError
from kms_cli.providers.base import SourceOptions
from strategies import edits, garble, toml_files

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clean(exc: KmsError, cls: type[KmsError], exit_code: int) -> None:
    """One clean error: the expected class and exit code, a one-line lowercase message."""
    assert isinstance(exc, cls) and type(exc).exit_code == exit_code, (type(exc), exc)
    assert exc.message and exc.message == exc.message.rstrip(".") and "\n" not in exc.message and "\r" not in exc.message
    assert exc.hint is None or "\n" not in exc.hint
    assert exc.message[0].islower() or not exc.message[0].isalpha() or exc.message.split()[0].isupper()


# -- names and namespaces ------------------------------------------------------------------------

_NAME_CHARS = string.ascii_letters + string.digits + "._-"
_segments = st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
valid_names = st.lists(_segments, min_size=1, max_size=5).map("/".join).filter(lambda n: len(n) <= names.MAX_LEN)
hostile_text = st.one_of(
    st.text(),
    st.text(_NAME_CHARS + "/ \t\n\0é٣%?#=:{}", max_size=300),
    valid_names,
    valid_names.map(lambda n: n + "/"),
    valid_names.map(lambda n: "/" + n),
)
_NAME_RULE = re.compile(r"(?!/)(?:[A-Za-z0-9._-]+)(?:/[A-Za-z0-9._-]+)*\Z")


def _is_valid_name(name: str) -> bool:
    return (0 < len(name) <= names.MAX_LEN and bool(_NAME_RULE.match(name))
            and all(s not in (".", "..") for s in name.split("/")))


@SETTINGS
@given(hostile_text)
@example("a" * 257)
@example("a/./b")
@example("a/../b")
@example("١")
@example("a\nb")
def test_any_text_is_a_valid_name_or_a_usage_error(text):
    try:
        got = names.validate(text)
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        assert not _is_valid_name(text)
        assert len(exc.message) < 700  # the name is quoted, never an unbounded echo
        return
    assert got == text and _is_valid_name(text)


@SETTINGS
@given(hostile_text, hostile_text)
@example("acme/prod/", "db")
@example("/", "x")
@example("a" * 200, "b" * 60)
def test_any_namespace_and_name_scope_or_are_a_usage_error(ns_text, name):
    try:
        ns = names.Namespace.parse(ns_text)
        full = ns.full(name)
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        return
    assert _is_valid_name(full)
    assert ns.contains(full) and ns.relative(full) == name
    assert ns.prefix == "" or _is_valid_name(ns.prefix)
    if ns.prefix:  # a sibling namespace sharing a prefix is outside
        assert not ns.contains(ns.prefix + "x/" + name)


@SETTINGS
@given(st.text())
@example("A_1")
@example("1A")
@example("É")
@example("A\n")
def test_env_names_are_posix_identifiers(text):
    assert names.is_env_name(text) == bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))


# -- kms:// references and templates -------------------------------------------------------------

@SETTINGS
@given(st.one_of(hostile_text.map(lambda t: "kms://" + t), hostile_text,
                 st.tuples(valid_names, st.text(max_size=30)).map(lambda p: f"kms://{p[0]}?{p[1]}"),
                 st.tuples(valid_names, st.integers(-5, 2**40)).map(lambda p: f"kms://{p[0]}?version={p[1]}")))
@example("kms://[")
@example("kms://a?version=0")
@example("kms://a?version=2147483648")
@example("kms://a?version=1&version=2")
@example("kms://a#frag")
@example("kms://a?version=%31")
@example("kms://a?version=١")
def test_any_reference_parses_or_is_a_usage_error(text):
    try:
        ref = template.parse_reference(text)
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        return
    assert _is_valid_name(ref.name)
    assert ref.version is None or 1 <= ref.version <= names.MAX_VERSION
    # exactly kms://NAME or kms://NAME?version=N (leading zeros allowed, as --version takes them)
    version = rf"\?version=0*{ref.version}" if ref.version else ""
    assert re.fullmatch(rf"kms://{re.escape(ref.name)}{version}", text)


@SETTINGS
@given(valid_names, st.one_of(st.none(), st.integers(1, names.MAX_VERSION)))
def test_read_and_inject_accept_the_same_references(name, version):
    text = f"kms://{name}" + (f"?version={version}" if version else "")
    ref = template.parse_reference(text)
    assert ref == (name, version)
    assert template.references(f"x{{{{ {text} }}}}y".encode()) == [ref]


_tpl_pieces = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"{{", b"}}", b"{{ kms://", b"kms://", b" ", b"\t", b"\n", b"?version=", b"{", b"}"]),
    valid_names.map(lambda n: f"{{{{ kms://{n} }}}}".encode()),
    st.tuples(valid_names, st.integers(-1, 2**32)).map(lambda p: f"{{{{kms://{p[0]}?version={p[1]}}}}}".encode()),
    hostile_text.map(lambda t: f"{{{{ kms://{t} }}}}".encode("utf-8", "surrogatepass")),
)


@SETTINGS
@given(st.lists(_tpl_pieces, max_size=12).map(b"".join))
@example(b"{{ kms://a?version=0 }}")
@example(b"{{ kms://\xff }}")
@example(b"{{ kms://a }}{{ kms://")
@example(b"\n\n{{ kms://a b }}")
def test_any_template_renders_or_is_a_usage_error(tpl):
    try:
        refs = template.references(tpl)
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        assert re.match(r"template line [1-9][0-9]*: ", exc.message)
        with pytest.raises(UsageError):
            template.render(tpl, lambda n, v: b"")
        return
    assert len(set(refs)) == len(refs)
    for ref in refs:
        assert _is_valid_name(ref.name) and (ref.version is None or 1 <= ref.version <= names.MAX_VERSION)
    calls = []

    def lookup(name, version):
        calls.append((name, version))
        return f"<{name}@{version}>".encode()

    out = template.render(tpl, lookup)
    assert calls == [tuple(r) for r in refs]
    # Replacing the values back by their references gives the template again, up to blanks inside {{ }}.
    if not refs:
        assert out == tpl


# -- ciphertext header ---------------------------------------------------------------------------

def _header(name="acme/k", version=3, wrap=b"W" * 88, ext=None, suite=envelope.SUITE_COBBLESTONE,
            vault_id=bytes(range(16))) -> envelope.Header:
    return envelope.Header(suite=suite, vault_id=vault_id, name=name, version=version, wrap=wrap, ext=ext)


headers = st.builds(
    _header, name=valid_names, version=st.integers(0, 2**32 - 1), wrap=st.binary(max_size=300),
    ext=st.dictionaries(st.integers(0, 255), st.binary(max_size=40), max_size=3),
    suite=st.sampled_from(envelope.SUITES), vault_id=st.binary(min_size=16, max_size=16))


class _Trickle(io.RawIOBase):
    """A stream that returns at most `step` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int):
        self.data, self.pos, self.step = data, 0, max(1, step)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.step, len(self.data) - self.pos)
        b[:n] = self.data[self.pos: self.pos + n]
        self.pos += n
        return n


def _parse_header(raw: bytes, step: int = 1 << 20):
    src = _Trickle(raw, step)
    try:
        h = envelope.read_header(src)
    except IntegrityError as exc:
        _clean(exc, IntegrityError, 5)
        return None, src
    return h, src


@SETTINGS
@given(headers, st.binary(max_size=50), st.integers(1, 64))
def test_headers_round_trip_through_a_trickling_stream(h, payload, step):
    got, src = _parse_header(h.to_bytes() + payload, step)
    assert got is not None
    assert (got.suite, got.vault_id, got.name, got.version, got.wrap, got.ext) == (
        h.suite, h.vault_id, h.name, h.version, h.wrap, h.ext)
    assert got.to_bytes() == h.to_bytes()
    assert src.read() == payload  # left exactly at the payload


@SETTINGS
@given(st.binary(max_size=600))
@example(b"")
@example(envelope.MAGIC)
@example(envelope.MAGIC + b"\x01\x01" + b"\0" * 16 + b"\xff\xff")
@example(envelope.MAGIC + b"\x01\x01" + b"\0" * 16 + b"\x00\x02\xc3\x28")
def test_any_bytes_are_a_header_or_an_integrity_error(raw):
    for data in (raw, envelope.MAGIC + b"\x01\x01" + raw, envelope.MAGIC + b"\x01\x02" + raw):
        got, _ = _parse_header(data)
        if got is not None:
            assert data.startswith(got.to_bytes())
            assert got.name == "" or _is_valid_name(got.name)


@SETTINGS
@given(headers, edits(4))
def test_altered_headers_parse_to_what_they_say_or_fail_cleanly(h, changes):
    raw = garble(h.to_bytes(), changes)
    got, _ = _parse_header(raw)
    if got is not None:  # only a header that serialises back to the very bytes read is accepted
        assert raw.startswith(got.to_bytes())
        assert got.name == "" or _is_valid_name(got.name)


@pytest.mark.parametrize("name", ["a\nb", "../x", "/abs", "a//b", "é", "x" * 257, "a/./b", " "])
def test_a_header_naming_an_impossible_key_is_refused(name):
    raw = _header().to_bytes().replace(b"\x00\x06acme/k", len(name.encode()).to_bytes(2, "big") + name.encode())
    got, _ = _parse_header(raw)
    assert got is None


# -- armor, streamed -----------------------------------------------------------------------------

def _armor(data: bytes, crlf: bool = False) -> bytes:
    out = io.BytesIO()
    w = armor.ArmorWriter(out)
    w.write(data)
    w.finish()
    text = out.getvalue()
    return text.replace(b"\n", b"\r\n") if crlf else text


def _dearmor_stream(raw: bytes, step: int, read_size: int) -> bytes:
    stream = armor.open_input(_Trickle(raw, step))
    out = bytearray()
    while True:
        chunk = stream.read(read_size)
        if not chunk:
            return bytes(out)
        out += chunk


@SETTINGS
@given(st.binary(max_size=5000), st.integers(1, 200), st.integers(1, 5000), st.booleans())
def test_armor_round_trips_through_a_trickling_stream(data, step, read_size, crlf):
    assert _dearmor_stream(_armor(data, crlf), step, read_size) == data


@SETTINGS
@given(st.one_of(st.binary(max_size=3000),
                 st.binary(max_size=3000).map(lambda b: armor.BEGIN + b"\n" + b),
                 st.tuples(st.binary(max_size=500), st.binary(max_size=50)).map(lambda p: _armor(p[0]) + p[1]),
                 st.tuples(st.binary(max_size=500), st.integers(0, 10**4)).map(lambda p: _armor(p[0])[: p[1]])),
       st.integers(1, 100))
@example(armor.BEGIN + b"\n" + armor.END, 1)
@example(armor.BEGIN + b"\r\n\r\n" + armor.END + b"\r\n", 3)
@example(armor.BEGIN[:-1] + b"\n", 5)
@example(armor.BEGIN + b"\n" + b"A" * 100000, 4096)
def test_any_input_dearmors_or_is_an_integrity_error(raw, step):
    try:
        data = _dearmor_stream(raw, step, 1000)
    except IntegrityError as exc:
        _clean(exc, IntegrityError, 5)
        return
    if raw.startswith(b"-----BEGIN"):
        assert _armor(data) == raw.replace(b"\r\n", b"\n").rstrip() + b"\n" or data == b""
    else:
        assert data == raw  # not armored: passed through unchanged for the header parser to judge


@SETTINGS
@given(headers, st.binary(max_size=200), st.integers(1, 50))
def test_armored_headers_parse_as_the_binary_ones(h, payload, step):
    stream = armor.open_input(_Trickle(_armor(h.to_bytes() + payload), step))
    got = envelope.read_header(stream)
    assert got.to_bytes() == h.to_bytes() and stream.read() == payload


# -- durations -----------------------------------------------------------------------------------

@SETTINGS
@given(st.integers(0, MAX_DURATION))
def test_durations_round_trip_through_their_iso_form(seconds):
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert parse_duration(text.lower()) == seconds


@SETTINGS
@given(st.one_of(st.text(), st.text("0123456789PTYMWDHSymwdhs \t.,-+", max_size=40)))
@example("P90D")
@example("p90d")
@example("90D")
@example("P1DT")
@example("PT0S")
@example("P0D")
@example("P1.5D")
@example("-1d")
@example("+1d")
@example("1d12h")
@example(" 90d ")
@example("PT1H\n")
@example("P36500D")
@example("P36501D")
@example("100y")
@example("5256000000m")
def test_any_duration_text_is_bounded_or_a_usage_error(text):
    try:
        seconds = parse_duration(text)
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        assert len(exc.message) < 300
        return
    assert isinstance(seconds, int) and 0 <= seconds <= MAX_DURATION
    t = text.strip()
    assert re.fullmatch(r"[0-9]+[smhdwy]", t) or re.fullmatch(r"P[0-9YMWDTHS]+", t.upper())


def test_duration_bounds_are_exact():
    assert parse_duration("100y") == MAX_DURATION == parse_duration("P36500D") == parse_duration("P100Y")
    for text in ("36501d", "P36501D", "P100YT1S", f"{MAX_DURATION + 1}s"):
        with pytest.raises(UsageError):
            parse_duration(text)


# -- master key source URIs ----------------------------------------------------------------------

_SCHEME_PREFIXES = ["env:", "passphrase", "passphrase:", "keyring:", "pkcs11:", "aws-kms://", "gcp-kms://",
                    "azure-kv://", "hcvault://", "age1", "ssh-ed25519 ", "file:", "", "ENV:", "aws-kms:"]
_uri_tails = st.one_of(
    st.text(max_size=80),
    st.text(string.ascii_letters + string.digits + "/:;?&=%._-~ @[]#\\\n\0é", max_size=120),
    st.sampled_from([
        "KMS_CLI_MASTER_KEY", "1X", "A-B", "É", "token=t;object=o?module-path=/x.so",
        "token=t;object=o;id=%ff%00?module-path=/x.so&pin-source=env:PIN",
        "token=t;object=o;id=€?module-path=/x.so", "token=t;id=%zz?module-path=/m",
        "token=t;object=o?module-path=/m&pin-value=1", "token=t;object=o?module-path=/m&pin-source=http:x",
        "token=t;object=o;type=private-key?module-path=/m", "token=t;object=o?module-path=/m&module-path=/n",
        "arn:aws:kms:us-east-1:123456789012:key/abc", "alias/x", "a b",
        "projects/p/locations/l/keyRings/r/cryptoKeys/k", "projects/p/locations/l/keyRings/r/cryptoKeys/k/x",
        "v.vault.azure.net/keys/k", "v.vault.azure.net/keys/k/1/2", "v:99999999/keys/k", "[::1]/keys/k",
        "transit/keys/k", "/keys/k", "a//b/keys/k", "transit/keys/", "transit/keys/keys/k"]),
)


def _options() -> SourceOptions:
    return SourceOptions(environ={"PATH": "/nonexistent"}, timeout=1.0, retries=0)


@SETTINGS
@given(st.sampled_from(_SCHEME_PREFIXES), _uri_tails)
@example("hcvault://", "transit/keys/k")
@example("env:", "")
def test_any_source_uri_parses_or_is_a_usage_error(prefix, tail):
    uri = prefix + tail
    try:
        src = providers.from_uri(uri, _options())
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        return
    # A parsed source knows its scheme and its URI without touching the network or the SDK.
    assert src.scheme in providers.SCHEMES
    assert isinstance(src.uri, str) and src.uri
    assert repr(src)
    if src.scheme == "pkcs11":
        parsed = src.parsed
        assert parsed.token or "serial" in parsed.path
        if "id" in parsed.path:
            assert isinstance(parsed.key_id, bytes)


def test_a_pkcs11_id_beyond_latin1_is_refused_when_parsed():
    """RFC 7512 spells an id's bytes as %XX: a character beyond one byte is a usage error at parse
    time (it used to parse, then fail at wrap with UnicodeEncodeError, exit 7)."""
    with pytest.raises(UsageError, match="id"):
        providers.from_uri("pkcs11:token=t;object=o;id=\u20ac?module-path=/x.so", _options())
    assert providers.from_uri("pkcs11:token=t;object=o;id=%01%ff?module-path=/x.so",
                              _options()).parsed.key_id == b"\x01\xff"


@pytest.mark.parametrize("uri", [
    # `$` in a regex matches before a final newline: providers anchor with \Z
    "hcvault://transit/keys/k\n",
    "azure-kv://v.vault.azure.net/keys/k\n",
    "azure-kv://v.vault.azure.net\n/keys/k",
    # no blanks or line breaks inside a resource name
    "gcp-kms://projects/p q/locations/l\n/keyRings/r/cryptoKeys/k",
    # env: and pin-source=env: names follow names.is_env_name (ASCII identifiers)
    "env:\u00c9",
    "keyring:a\u2028b",
    "pkcs11:token=t;object=o?module-path=/x.so&pin-source=env:",
    "pkcs11:token=t;object=o?module-path=/x.so&pin-source=file:",
    "pkcs11:token=t\n;object=o?module-path=/x.so",
    "hcvault://tran sit/keys/k",
    "aws-kms://a b",
    "env:1X",
    "env:A-B",
])
def test_source_uris_with_blanks_or_non_ascii_names_are_refused(uri):
    with pytest.raises(UsageError):
        providers.from_uri(uri, _options())


@SETTINGS
@given(st.one_of(st.text(max_size=100), st.text(string.hexdigits, min_size=60, max_size=68),
                 st.binary(min_size=30, max_size=34).map(lambda b: __import__("base64").b64encode(b).decode()),
                 st.binary(min_size=30, max_size=34).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode())))
@example("11" * 32)
@example(" " + "ab" * 32 + "\n")
@example("٣" * 64)
def test_any_env_master_key_is_32_bytes_or_a_usage_error(text):
    from kms_cli.providers import env

    try:
        key = env.parse_key(text, "KMS_CLI_MASTER_KEY")
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        assert len(text.strip()) < 8 or text.strip() not in exc.message  # never echoes the key material
        return
    assert isinstance(key, bytes) and len(key) == 32


# -- config.toml from arbitrary bytes ------------------------------------------------------------



@SETTINGS
@given(toml_files(12))
@example(b"vault = \n")
@example(b"timeout = 5\ntimeout = 6\n")
@example(b"a = " + b"[" * 3000)
@example(b"ok = 1\n\xff")
@example(b"timeout = nan\n")
@example(b"retries = 1000\n")
def test_any_config_file_resolves_or_is_a_usage_error_naming_the_file(tmp_path_factory, raw):
    cfg = tmp_path_factory.mktemp("cfg") / "config.toml"
    cfg.write_bytes(raw)
    try:
        s = config.resolve({}, {"KMS_CLI_CONFIG": str(cfg), "XDG_DATA_HOME": "/nonexistent"})
    except UsageError as exc:
        _clean(exc, UsageError, 2)
        assert str(cfg) in exc.message
        return
    assert 0 < s.timeout <= config.MAX_TIMEOUT and 0 <= s.retries <= config.MAX_RETRIES


@pytest.mark.parametrize(("raw", "line"), [
    (b'vault = "x"\nnamespace = \n', 2),
    (b"\n\n\ntimeout = [\n", 4),
    (b'vault = "a"\n\xff\n', 2),
    (b"[a]\n[a]\n", 2),
])
def test_a_bad_config_file_names_its_line(tmp_path, raw, line):
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(raw)
    with pytest.raises(UsageError) as exc:
        config.resolve({}, {"KMS_CLI_CONFIG": str(cfg)})
    assert exc.value.message.startswith(f"config file {cfg} line {line}"), exc.value.message


def test_config_files_that_are_not_files(tmp_path):
    for path, what in ((tmp_path, "is a directory"), ("/dev/zero", "larger than")):
        with pytest.raises(UsageError) as exc:
            config.resolve({}, {"KMS_CLI_CONFIG": str(path)})
        assert what in exc.value.message
    # absent (also below a file): no config, the defaults
    assert config.resolve({}, {"KMS_CLI_CONFIG": str(tmp_path / "none.toml")}).timeout == 10.0
    (tmp_path / "f").write_text("")
    assert config.resolve({}, {"KMS_CLI_CONFIG": str(tmp_path / "f" / "config.toml")}).retries == 3
