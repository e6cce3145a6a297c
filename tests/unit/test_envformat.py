"""Variable names, collisions and the `env` formats: sh through a real eval, dotenv, json, github."""

import io
import json
import os
import re
import subprocess

import dotenv as pydotenv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_cli import envformat
from kms_cli.errors import UsageError
from kms_cli.secretvalue import SecretValue

AWKWARD = {
    "SINGLE": "it's a 'quoted' value",
    "DOUBLE": 'say "hi"',
    "SPACES": "  leading and trailing  ",
    "DOLLAR": "$HOME ${HOME} $(id) $$",
    "BACKTICK": "`id` and `echo pwned`",
    "NEWLINES": "line1\nline2\n\nline4\n",
    "BACKSLASH": "back\\slash \\n \\' \\\\",
    "GLOB": "* ? [a] ~ ; & | < > ( ) { } # !",
    "UNICODE": "héllo ✓ 日本",
    "CR": "a\rb\r\n",
    "EMPTY": "",
    "TRAILING_NL": "value\n",
}


def sv(mapping):
    return {k: SecretValue(v.encode()) for k, v in mapping.items()}


# -- names


@pytest.mark.parametrize(
    "name,prefix,expected",
    [
        ("acme/prod/db-password", "", "DB_PASSWORD"),
        ("db.host", "", "DB_HOST"),
        ("api_key", "APP_", "APP_API_KEY"),
        ("a/b/c-d.e", "X", "XC_D_E"),
        ("1password", "P_", "P_1PASSWORD"),
    ],
)
def test_var_name(name, prefix, expected):
    assert envformat.var_name(name, prefix) == expected


@pytest.mark.parametrize("name,prefix", [("1password", ""), ("ok", "bad-prefix"), ("ok", "has space ")])
def test_var_name_rejects_illegal_results(name, prefix):
    with pytest.raises(UsageError) as exc:
        envformat.var_name(name, prefix)
    assert exc.value.exit_code == 2
    assert name in exc.value.message


def test_build_mapping_defaults_explicit_and_prefix():
    pairs = [("acme/db-password", None), ("acme/token", "API_TOKEN"), ("acme/token", "OTHER")]
    assert envformat.build_mapping(pairs, "P_") == {
        "P_DB_PASSWORD": "acme/db-password",
        "API_TOKEN": "acme/token",
        "OTHER": "acme/token",
    }
    # the same pair twice is harmless
    assert envformat.build_mapping([("a/x", None), ("a/x", None)]) == {"X": "a/x"}


def test_build_mapping_collision_names_both_secrets():
    with pytest.raises(UsageError) as exc:
        envformat.build_mapping([("prod/db-url", None), ("staging/db.url", None)])
    assert exc.value.exit_code == 2
    assert "prod/db-url" in exc.value.message and "staging/db.url" in exc.value.message
    assert "DB_URL" in exc.value.message
    with pytest.raises(UsageError) as exc:
        envformat.build_mapping([("a/one", "X"), ("a/two", "X")])
    assert "a/one" in exc.value.message and "a/two" in exc.value.message


def test_build_mapping_rejects_illegal_explicit_var():
    with pytest.raises(UsageError):
        envformat.build_mapping([("a/b", "NOT-OK")])


# -- sh


def _eval_in(shell, script: bytes, names, env=None) -> dict[str, bytes]:
    """Eval `script` in `shell` and return the resulting variables' bytes, as the shell holds them."""
    dump = "".join(f'printf "%s\\0" "${name}"; ' for name in names)
    program = 'eval "$(cat)"; ' + dump
    out = subprocess.run([*shell.split(), "-c", program], input=script, capture_output=True, check=True, env=env)
    assert out.stderr == b""
    return dict(zip(names, out.stdout.split(b"\0")[:-1]))


def _b(mapping):
    return {k: v.encode() for k, v in mapping.items()}


@pytest.mark.parametrize("shell", ["sh", "dash", "bash", "bash --posix"])
def test_sh_survives_eval(shell):
    script = envformat.format_sh(sv(AWKWARD))
    assert _eval_in(shell, script, list(AWKWARD)) == _b(AWKWARD)


def test_sh_exports_to_child_processes():
    script = envformat.format_sh(sv({"NEWLINES": AWKWARD["NEWLINES"]}))
    out = subprocess.run(["sh", "-c", 'eval "$(cat)"; exec env'], input=script, capture_output=True)
    assert b"NEWLINES=line1\nline2\n\nline4\n" in out.stdout


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_sh_eval_any_text(value):
    assert _eval_in("sh", envformat.format_sh({"V": value}), ["V"]) == {"V": value.encode()}


BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"'", b"\\", b"$(touch PWNED)", b"`", b"\n", b"\r"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12).map(lambda b: b.replace(b"\0", b"")),
                          st.lists(st.sampled_from(BAD_UTF8), max_size=8).map(b"".join)),
                min_size=1, max_size=8))
def test_sh_eval_any_bytes_in_every_shell(tmp_path_factory, raws):
    """Any bytes but NUL, UTF-8 or not, survive eval in sh, bash and bash --posix (one run per shell per batch)."""
    d = tmp_path_factory.mktemp("sh")
    mapping = {f"V{i}": SecretValue(r) for i, r in enumerate(raws)}
    script = envformat.format_sh(mapping)
    expected = dict(zip(mapping, raws))
    for shell in ("sh", "bash", "bash --posix"):
        env = {"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}
        got = subprocess.run([*shell.split(), "-c", 'cd "$1" && eval "$(cat)" && ' + "".join(
            f'printf "%s\\0" "${n}"; ' for n in mapping), "sh", str(d)], input=script, capture_output=True, env=env)
        assert got.returncode == 0 and got.stderr == b"", (shell, got.stderr)
        assert dict(zip(mapping, got.stdout.split(b"\0")[:-1])) == expected, shell
        assert os.listdir(d) == []  # nothing ran


def test_sh_carries_non_utf8_alongside_text():
    script = envformat.format_sh({"BLOB": SecretValue(b"\xff\xfe'x"), "TEXT": SecretValue(b"ok")})
    assert script == b"export BLOB='\xff\xfe'\\''x'\nexport TEXT='ok'\n"
    assert _eval_in("sh", script, ["BLOB", "TEXT"]) == {"BLOB": b"\xff\xfe'x", "TEXT": b"ok"}


def test_sh_rejects_nul():
    with pytest.raises(UsageError) as exc:
        envformat.format_sh({"HASNUL": SecretValue(b"secret\0b")})
    assert "HASNUL" in exc.value.message and exc.value.exit_code == 2
    assert "secret" not in exc.value.message.replace("HASNUL", "") + (exc.value.hint or "").replace("secret get", "")


# -- dotenv and json


def test_dotenv_round_trip():
    writable = {k: v for k, v in AWKWARD.items() if k not in ("DOLLAR", "CR")}
    text = envformat.format_dotenv(sv(writable))
    assert pydotenv.dotenv_values(stream=io.StringIO(text)) == writable  # interpolation on: the default
    assert _eval_in("sh", ("set -a; " + text).encode(), list(writable)) == _b(writable)


@pytest.mark.parametrize("var", ["DOLLAR", "CR"])
def test_dotenv_refuses_what_cannot_be_written_safely(var):
    with pytest.raises(UsageError) as exc:
        envformat.format_dotenv(sv({"OK": "fine", var: AWKWARD[var]}))
    assert exc.value.exit_code == 2 and var in exc.value.message
    assert "--format sh" in exc.value.hint


def test_json_values_are_strings():
    data = json.loads(envformat.format_json(sv(AWKWARD)))
    assert data == AWKWARD
    with pytest.raises(UsageError) as exc:
        envformat.format_json({"BIN": SecretValue(b"\x80")})
    assert "BIN" in exc.value.message


# -- github


def read_github_env(text):
    """The GitHub runner's reading of a GITHUB_ENV file (SetEnvFileCommand, Linux)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    result, i = {}, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if eq >= 0 and (heredoc < 0 or eq < heredoc):
            name, value = line.split("=", 1)
            result[name] = value
        else:
            name, delimiter = line.split("<<", 1)
            body = []
            while lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            i += 1
            result[name] = "\n".join(body)
    return result


def test_github_round_trip_and_masks(tmp_path):
    env_path = tmp_path / "github_env"
    env_path.write_text("EXISTING=1\n")
    values = dict(AWKWARD, PERCENT="100%0A done")
    masks = envformat.format_github(sv(values), str(env_path))
    text = env_path.read_bytes().decode()
    assert text.startswith("EXISTING=1\n")  # appended, not replaced
    assert read_github_env(text) == dict(values, EXISTING="1")
    assert re.search(r"^NEWLINES<<ghadelimiter_[0-9a-f]{32}$", text, re.M)
    assert os.stat(env_path).st_mode & 0o777 in (0o600, 0o644)  # pre-existing file keeps its mode

    lines = masks.splitlines()
    assert all(line.startswith("::add-mask::") for line in lines)
    masked = {line[len("::add-mask::"):] for line in lines}
    for expected in ("line1", "line2", "line4", "value", "100%250A done", "`id` and `echo pwned`"):
        assert expected in masked
    assert "" not in masked
    assert not any("\n" in m or "\r" in m for m in masked)


def test_github_delimiter_never_occurs_in_value(tmp_path):
    tokens = iter(["aaaa", "bbbb"])
    value = "x\nghadelimiter_aaaa\ny"
    masks = envformat.format_github({"V": value}, str(tmp_path / "env"), token=lambda: next(tokens))
    text = (tmp_path / "env").read_text()
    assert text == f"V<<ghadelimiter_bbbb\n{value}\nghadelimiter_bbbb\n"
    assert read_github_env(text) == {"V": value}
    assert masks.count("::add-mask::") == 3


def test_github_without_github_env():
    with pytest.raises(UsageError) as exc:
        envformat.format_github({"A": "1"}, None)
    assert "GITHUB_ENV" in exc.value.message


def test_github_non_utf8_writes_nothing(tmp_path):
    target = tmp_path / "env"
    with pytest.raises(UsageError):
        envformat.format_github({"A": "ok", "B": SecretValue(b"\xff")}, str(target))
    assert not target.exists()
