"""kms_cli.dotenv reads dotenv like python-dotenv and writes what python-dotenv reads back."""

import io

import dotenv as pydotenv  # python-dotenv, the reference (a test dependency only)
import pytest
from dotenv.parser import parse_stream
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kms_cli import dotenv
from kms_cli.errors import UsageError
from kms_cli.secretvalue import SecretValue


def reference(text: str):
    """python-dotenv's bindings, or None when it reports a statement it cannot use."""
    items = []
    for b in parse_stream(io.StringIO(text)):
        if b.error:
            return None
        if b.key is None:
            continue
        if b.value is None:
            return None  # a bare KEY: python-dotenv yields None, we refuse it
        items.append((b.key, b.value))
    return items


CASES = [
    ("A=1", [("A", "1")]),
    ("export A=1\n", [("A", "1")]),
    ("export   A = 1 \n", [("A", "1")]),
    ("A='single # not comment'", [("A", "single # not comment")]),
    ("A='it\\'s'", [("A", "it's")]),
    ("A='back\\\\slash \\n stays'", [("A", "back\\slash \\n stays")]),
    ('A="esc \\" \\\\ \\n \\t \\$ x"', [("A", 'esc " \\ \n \t \\$ x')]),
    ('A="multi\nline\n"', [("A", "multi\nline\n")]),
    ("A='multi\nline'", [("A", "multi\nline")]),
    ("A=unquoted # comment", [("A", "unquoted")]),
    ("A=no#comment", [("A", "no#comment")]),
    ("A=# comment", [("A", "# comment")]),
    ("A= # comment", [("A", "")]),
    ("A=", [("A", "")]),
    ("A=\nB=2", [("A", ""), ("B", "2")]),
    ("# comment\n\n  \nA=1\n# another", [("A", "1")]),
    ("A=$HOME ${HOME}", [("A", "$HOME ${HOME}")]),  # no expansion
    ("'quoted key'=v", [("quoted key", "v")]),
    ("A=1\r\nB=2\rC=3", [("A", "1"), ("B", "2"), ("C", "3")]),
    ("\ufeffA=bom", [("A", "bom")]),
    ("A=1\nA=2", [("A", "1"), ("A", "2")]),
    ('A="x" # c', [("A", "x")]),
    ("A=trailing   ", [("A", "trailing")]),
    ("A=héllo wörld ✓", [("A", "héllo wörld ✓")]),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_parse_matches_python_dotenv(text, expected):
    assert dotenv.parse(text) == expected
    assert reference(text) == expected


@pytest.mark.parametrize(
    "text,line",
    [
        ("A=1\nB='unterminated\n", 2),
        ('A=1\n\n\nB="unterminated', 4),
        ("A=1\nsecretvalue\n", 2),  # no '=': python-dotenv yields None, we refuse
        ("A='x' trailing", 1),
        ("=novalue", 1),
    ],
)
def test_malformed_names_the_line_not_the_content(text, line):
    with pytest.raises(UsageError) as exc:
        dotenv.parse(text)
    message = exc.value.message
    assert f"line {line}" in message
    for word in ("unterminated", "secretvalue", "trailing", "novalue"):
        assert word not in message
    assert exc.value.exit_code == 2


_TOKENS = ["A", "B", "k", "=", "'", '"', "\\", "#", " ", "\t", "\n", "\r", "x", "export ", "é", "$", "{", "}"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
@example("A='a\\'b'")
@example('A="\\\\"x"')
def test_parse_agrees_with_python_dotenv_on_any_text(text):
    expected = reference(text)
    if expected is None:
        with pytest.raises(UsageError):
            dotenv.parse(text)
    else:
        assert dotenv.parse(text) == expected


keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
awkward = st.text(alphabet=st.sampled_from(list("\"'\\$#= \t\n\r{}`:-ab") + ["é", "✓", "\u2028", "\x0b", "\x00"]))
values = st.one_of(awkward, st.text())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, values), max_size=6))
@example([("A", "${HOME}")])
@example([("A", "a\r\nb\rc\n")])
@example([("A", " leading and trailing ")])
@example([("A", "it's \\ \"q\""), ("B", "$x `y` \\n")])
def test_serialize_round_trips_through_python_dotenv(items):
    """What serialize writes, python-dotenv (interpolation on or off) and parse read back;
    what it refuses is one of the unsafe values (tests/unit/test_dotenv_differential.py adds sh)."""
    if any(dotenv.unsafe_reason(v) for _, v in items):
        with pytest.raises(UsageError):
            dotenv.serialize(items)
        return
    text = dotenv.serialize(items)
    assert dotenv.parse(text) == items
    expected = dict(items)
    # as a stream, and as a text file read with universal newlines
    for interpolate in (False, True):
        assert pydotenv.dotenv_values(stream=io.StringIO(text), interpolate=interpolate) == expected
        assert pydotenv.dotenv_values(stream=io.StringIO(text, newline=None), interpolate=interpolate) == expected


def test_serialize_accepts_bytes_and_secretvalues():
    text = dotenv.serialize([("A", b"x\ny"), ("B", SecretValue(b"q\"uote"))])
    assert dotenv.parse(text) == [("A", "x\ny"), ("B", 'q"uote')]
    assert text == "A='x\ny'\nB='q\"uote'\n"


def test_serialize_rejects_non_utf8_naming_the_key():
    with pytest.raises(UsageError) as exc:
        dotenv.serialize([("DB_PASSWORD", SecretValue(b"\xffabc"))])
    assert "DB_PASSWORD" in exc.value.message
    assert "abc" not in exc.value.message


@pytest.mark.parametrize("key", ["", "has space", "a=b", "#x", "'q'", "new\nline", "db-password", "a/b"])
def test_serialize_rejects_unwritable_keys(key):
    with pytest.raises(UsageError):
        dotenv.serialize([(key, "v")])


def test_serialize_mapping():
    assert dotenv.parse(dotenv.serialize({"A": "1", "B": "2"})) == [("A", "1"), ("B", "2")]
