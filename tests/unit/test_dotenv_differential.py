"""Differential tests of the dotenv writer and reader against their real consumers.

For every value `dotenv.serialize` accepts, python-dotenv's default loader (interpolation
on) and ``set -a; . ./file`` in sh (dash), bash and bash --posix read back exactly the
bytes stored, and nothing ran (a marker file stays absent, stderr stays empty). Every
value it refuses gets one clean UsageError naming the key, never the value. The reader
(`dotenv.load`, what `secret import` uses) agrees with python-dotenv reading the same file.

Each hypothesis example carries a batch of values, so one shell process checks many.
"""

from __future__ import annotations

import io
import os
import re
import subprocess

import dotenv as pydotenv  # python-dotenv: the oracle, a test dependency only
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kms_cli import dotenv
from kms_cli.errors import UsageError
from kms_cli.secretvalue import SecretValue

SHELLS = [["sh"], ["bash"], ["bash", "--posix"]]
MARKER = "PWNED"

# Pieces people put in passwords and attackers put in values, joined at random.
TOKENS = [
    "'", '"', "\\", "\\\\", "$", "`", "${", "}", "{", ":-", "${HOME}", "${X:-d}", "$HOME", "$(", ")",
    f"$(touch {MARKER})", f"`touch {MARKER}`", f"${{IFS}}touch${{IFS}}{MARKER}", "\n", "\r", "\r\n", "\0",
    " ", "\t", "#", " #", "=", "!", "*", "~", ";", "&", "|", "<", ">", "a", "Z9", "é", "✓", "日本",
    "\u2028", "\x85", "\x0b", "\x0c", "\x1b[31m", "export ", "\ufeff",
]
token_text = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
texts = st.one_of(token_text, st.text(max_size=30))
BAD_BYTES = [b"\xff", b"\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"]
raw_bytes = st.one_of(
    st.binary(max_size=20),
    st.lists(st.one_of(st.sampled_from(BAD_BYTES), token_text.map(str.encode)), max_size=6).map(b"".join),
)
values = st.one_of(texts.map(str.encode), raw_bytes)

REASONS = (
    "it is not UTF-8 text",
    "it holds a NUL byte",
    "it holds a carriage return, which readers of text files turn into a newline",
    "it holds ${...}, which python-dotenv would expand",
    "it holds a quote or backslash together with $ or a backtick, which no quoting keeps literal for both "
    "python-dotenv and sh",
)


def _shell_reads(shell: list[str], directory: str, names: list[str]) -> list[bytes]:
    """Source ./x.env with `set -a` in `shell` and return each variable's bytes as the shell holds them."""
    dump = " ".join(f'"${name}"' for name in names)
    script = f"set -a; . ./x.env; set +a; printf '%s\\0' {dump}"
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "LC_ALL": "C.UTF-8"}
    p = subprocess.run([*shell, "-c", script], cwd=directory, env=env, capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stderr == b"", (shell, p.returncode, p.stderr[:300])
    out = p.stdout.split(b"\0")
    assert out[-1] == b""
    return out[:-1]


def _check_batch(raws: list[bytes], directory: str) -> None:
    accepted: dict[str, bytes] = {}
    for i, raw in enumerate(raws):
        key = f"V{i}"
        try:
            dotenv.serialize([(key, SecretValue(raw))])
        except UsageError as exc:
            # one clean refusal: the key and a fixed reason, no byte of the value
            prefix = f"the value of variable {key} cannot be written safely as dotenv: "
            assert exc.exit_code == 2
            assert exc.message.startswith(prefix) and exc.message[len(prefix):] in REASONS, exc.message
            continue
        accepted[key] = raw
    if not accepted:
        return
    # one file holding every accepted value; a refused one anywhere refuses the whole file
    text = dotenv.serialize([(k, SecretValue(v)) for k, v in accepted.items()])
    if len(accepted) < len(raws):
        with pytest.raises(UsageError):
            dotenv.serialize([(f"V{i}", SecretValue(r)) for i, r in enumerate(raws)])
    path = os.path.join(directory, "x.env")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    expected = {k: v.decode("utf-8") for k, v in accepted.items()}

    # python-dotenv, default settings: interpolation on, the file read in text mode
    assert dict(pydotenv.dotenv_values(path)) == expected
    assert dict(pydotenv.dotenv_values(stream=io.StringIO(text))) == expected
    # our own reader, as `secret import` reads a file
    assert dict(dotenv.load(text.encode())) == expected
    # the shells: exact bytes, nothing executed
    names = list(accepted)
    for shell in SHELLS:
        assert _shell_reads(shell, directory, names) == [accepted[n] for n in names], shell
        assert not os.path.exists(os.path.join(directory, MARKER)), shell


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=10))
@example([f"pa$(touch {MARKER})ss".encode(), f"`touch {MARKER}`".encode(), b"it's", b"say \"hi\"",
          b"back\\slash", b"two\\\\backslashes", b"trailing\\", b"multi\nline\n", b"\xc3\xa9\xe2\x9c\x93",
          b"", b"  spaces  ", b"# not a comment", b"$HOME $$ $1", b"${a:b}", b"it's \"both\" \\\\ no dollar"])
@example([b"${HOME}", b"${X:-default}", b"a\rb", b"a\r\nb", b"nul\0byte", b"\xff\xfe", b"it's $HOME",
          b"back\\\\slash and `cmd`", b"trailing\\ $x"])
def test_written_values_read_back_exactly_in_python_dotenv_and_shells(tmp_path, raws):
    _check_batch(raws, str(tmp_path))


def test_load_dotenv_into_the_environment(tmp_path, monkeypatch):
    """load_dotenv (override off and on) puts the exact values into os.environ."""
    values = {"A": "pa$(touch PWNED)ss", "B": "it's \"quoted\" \\\\", "C": "line\nbreak é", "D": "$HOME"}
    (tmp_path / "x.env").write_text(dotenv.serialize(values))
    for override in (False, True):
        for k in values:
            monkeypatch.delenv(k, raising=False)
        assert pydotenv.load_dotenv(tmp_path / "x.env", override=override)
        assert {k: os.environ[k] for k in values} == values


def test_the_issue_value_is_single_quoted():
    assert dotenv.serialize({"TOKEN": "pa$(touch PWNED)ss"}) == "TOKEN='pa$(touch PWNED)ss'\n"
    assert dotenv.serialize({"Q": "it's"}) == 'Q="it\'s"\n'
    assert dotenv.serialize({"B": "a\\\\b"}) == 'B="a\\\\\\\\b"\n'


@pytest.mark.parametrize("key", ["db-password", "acme/db", "a.b", "1X", "", "has space", "a=b", "#x", "'q'", "é"])
def test_keys_a_shell_cannot_assign_are_refused(key):
    with pytest.raises(UsageError) as exc:
        dotenv.serialize([(key, "value-xyz")], subject="secret")
    assert exc.value.exit_code == 2
    assert "value-xyz" not in exc.value.message + (exc.value.hint or "")
    assert "secret" in exc.value.message


# -- the reader against python-dotenv reading the same file's bytes

_READ_TOKENS = ["A", "B", "k", "=", "'", '"', "\\", "#", " ", "\t", "\n", "\r", "\r\n", "x", "export ", "é", "$",
                "{", "}", "${A}", "\\r", "\\n"]


def _reference_file(path) -> dict | None:
    """python-dotenv reading `path` as a file (no interpolation), or None if it would skip a line."""
    from dotenv.main import DotEnv
    from dotenv.parser import parse_stream

    with open(path, encoding="utf-8") as f:
        bindings = list(parse_stream(f))
    if any(b.error or (b.key is not None and b.value is None) for b in bindings):
        return None
    return dict(DotEnv(path, interpolate=False).dict())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_READ_TOKENS), max_size=25).map("".join))
@example("A=\"one\r\ntwo\rthree\"\r\nB='x\r\ny'\r\n")
@example('A="escaped \\r stays"\r\n')
def test_load_reads_files_as_python_dotenv_does(tmp_path, text):
    path = tmp_path / "in.env"
    path.write_bytes(text.encode())
    expected = _reference_file(path)
    if expected is None:
        with pytest.raises(UsageError) as exc:
            dotenv.load(text.encode())
        assert exc.value.exit_code == 2
    else:
        assert dict(dotenv.load(text.encode())) == expected


def test_load_normalises_crlf_inside_quoted_values():
    raw = b'MULTI="line one\r\nline two\r\n"\r\nSINGLE=\'a\r\nb\'\r\nLONE="x\ry"\r\nESC="kept\\r"\r\n'
    assert dotenv.load(raw) == [("MULTI", "line one\nline two\n"), ("SINGLE", "a\nb"), ("LONE", "x\ny"),
                                ("ESC", "kept\r")]


def test_load_does_not_expand():
    assert dotenv.load(b"A=${HOME}\nB=\"${A:-x}\"\n") == [("A", "${HOME}"), ("B", "${A:-x}")]


def test_load_refuses_non_utf8_without_quoting_it():
    with pytest.raises(UsageError) as exc:
        dotenv.load(b"A=secret\xff\n")
    assert "secret" not in exc.value.message and exc.value.exit_code == 2


def test_reasons_never_hold_the_value():
    for value in ["${SECRET_VALUE}", "SECRET\rVALUE", "SECRET\0", "it's `SECRET`"]:
        reason = dotenv.unsafe_reason(value)
        assert reason in REASONS and "SECRET" not in reason
