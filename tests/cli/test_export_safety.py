"""Exported files are safe to use the way people use them (issue 11, section 3), through the real CLI.

`secret export`, `env --format dotenv` and `exec --env-file-out` write dotenv that python-dotenv's
default loader and ``set -a; . ./file`` in sh and bash read back exactly, running nothing, or refuse
(exit 2, the secret named, never its value, nothing written); `env --format sh` carries any byte but
NUL; `secret import` reads a CRLF file as python-dotenv does and never expands ``${...}``.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

dotenv = pytest.importorskip("dotenv")  # python-dotenv: the oracle

MARKER = "PWNED"
# Safe to write: each survives python-dotenv and sh exactly (single or double quotes).
SAFE = {
    "TOKEN": f"pa$(touch {MARKER})ss",
    "TICKS": f"`touch {MARKER}` and $HOME $$ $1 ${{notclosed",
    "QUOTES": "it's \"quoted\" \\\\ back\\slash # not a comment",
    "MULTI": "line one\nline two\n\n",
    "UNICODE": "héllo ✓ 日本 \u2028",
    "EMPTY": "",
    "SPACES": "  padded  ",
}
# Refused by dotenv, with the reason's words.
UNSAFE = {
    "EXPANDS": ("x${HOME}y", "${...}"),
    "MIXED": ("it's $(touch PWNED)", "quote or backslash together with $"),
    "CARRIAGE": ("a\rb", "carriage return"),
    "BINARY": (b"\xff\xfe-bin", "not UTF-8"),
}


def _no_traceback(r):
    lines = [line for line in r.err.splitlines() if line]
    assert lines and lines[0].startswith("kms-cli: error: "), r.err
    assert all(line.startswith(("kms-cli: error: ", "kms-cli: hint: ")) for line in lines), r.err


def _entries(kms, op):
    entries = [json.loads(line) for line in kms.ok("--json", "audit", "log").out.splitlines()]
    return [(e["result"], e["error"]) for e in entries if e["op"] == op]


def _source(shell: str, path, names, cwd) -> list[bytes]:
    """`set -a; . FILE; set +a` in `shell`, then each variable's bytes; stderr must stay empty."""
    dump = " ".join(f'"${n}"' for n in names)
    p = subprocess.run([shell, "-c", f'set -a; . "$1"; set +a; printf "%s\\0" {dump}', shell, str(path)],
                       cwd=cwd, capture_output=True, env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})
    assert p.returncode == 0 and p.stderr == b"", (shell, p.stderr)
    return p.stdout.split(b"\0")[:-1]


def _assert_reads_back(path, expected: dict[str, str], cwd):
    assert dict(dotenv.dotenv_values(path)) == expected  # default settings: interpolation on
    for shell in ("sh", "bash"):
        assert _source(shell, path, list(expected), cwd) == [v.encode() for v in expected.values()], shell
    assert not (cwd / MARKER).exists()


@pytest.fixture
def safe_vault(vault):
    for name, value in SAFE.items():
        vault.ok("secret", "put", name, input=value.encode())
    return vault


def test_export_dotenv_reads_back_exactly_and_runs_nothing(safe_vault, tmp_path):
    safe_vault.ok("secret", "export", "-o", "out.env")
    assert os.stat(tmp_path / "out.env").st_mode & 0o777 == 0o600
    assert f"TOKEN='pa$(touch {MARKER})ss'\n" in (tmp_path / "out.env").read_text()
    _assert_reads_back(tmp_path / "out.env", SAFE, tmp_path)
    # and back in through secret import, into a fresh namespace: the same bytes
    safe_vault.ok("--namespace", "copy", "secret", "import", "out.env")
    for name, value in SAFE.items():
        assert safe_vault.ok("--namespace", "copy", "secret", "get", name).out == value.encode(), name


@pytest.mark.parametrize("name", list(UNSAFE))
def test_export_refuses_an_unsafe_value_writing_nothing(safe_vault, tmp_path, name):
    value, reason = UNSAFE[name]
    raw = value if isinstance(value, bytes) else value.encode()
    safe_vault.ok("secret", "put", name, input=raw)
    for args in (["secret", "export"], ["secret", "export", "-o", "out.env"]):
        r = safe_vault(*args)
        assert r.code == 2 and r.out == b"", r.err
        _no_traceback(r)
        assert f"secret {name}" in r.err and reason in r.err and "--format json" in r.err
        assert raw.decode(errors="replace") not in r.err and "touch" not in r.err and "-bin" not in r.err
    assert not (tmp_path / "out.env").exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert _entries(safe_vault, "secret.export") == [("error", "usage")] * 2
    if name != "BINARY":  # JSON carries every text value
        assert json.loads(safe_vault.ok("secret", "export", "--format", "json").out)[name] == value


def test_export_refuses_names_a_shell_would_run(vault):
    vault.ok("secret", "put", "db-password", input=b"hunter2-value")
    r = vault("secret", "export")
    assert r.code == 2 and r.out == b""
    _no_traceback(r)
    assert "db-password" in r.err and "hunter2" not in r.err


def test_env_dotenv_is_safe_too(safe_vault, tmp_path):
    args = [a for n in SAFE for a in ("--secret", f"{n}={n}")]
    (tmp_path / "x.env").write_bytes(safe_vault.ok("env", *args, "--format", "dotenv").out)
    _assert_reads_back(tmp_path / "x.env", SAFE, tmp_path)
    safe_vault.ok("secret", "put", "bad", input=b"${HOME}")
    r = safe_vault("env", *args, "--secret", "bad=BAD", "--format", "dotenv")
    assert r.code == 2 and r.out == b"" and "BAD" in r.err and "--format sh" in r.err
    _no_traceback(r)


def test_env_sh_carries_non_utf8_and_every_byte_but_nul(vault, tmp_path):
    values = {"BLOB": b"\xff\xfe'\\$(touch PWNED)\r\n\x01", "TEXT": b"plain", "QUOTE": b"it's"}
    for name, value in values.items():
        vault.ok("secret", "put", name, input=value)
    args = [a for n in values for a in ("--secret", f"{n}={n}")]
    script = vault.ok("env", *args, "--format", "sh").out
    for shell in ("sh", "bash"):
        dump = " ".join(f'"${n}"' for n in values)
        p = subprocess.run([shell, "-c", f'eval "$(cat)"; printf "%s\\0" {dump}'], input=script, cwd=tmp_path,
                           capture_output=True)
        assert p.returncode == 0 and p.stderr == b"", p.stderr
        assert p.stdout.split(b"\0")[:-1] == list(values.values()), shell
    assert not (tmp_path / MARKER).exists()
    vault.ok("secret", "put", "NUL", input=b"a\0b-secret")
    r = vault("env", *args, "--secret", "NUL=NUL", "--format", "sh")
    assert r.code == 2 and r.out == b"" and "NUL" in r.err and "b-secret" not in r.err
    _no_traceback(r)


def test_exec_env_file_out_is_safe(safe_vault, tmp_path):
    args = [a for n in SAFE for a in ("--secret", f"{n}={n}")]
    names = " ".join(f'"${n}"' for n in SAFE)
    # the child sources the file in a fresh sh with none of the variables set, and prints them
    child = (f'env -i PATH="$PATH" sh -c \'set -a; . "$1"; set +a; printf "%s\\0" {names}\' sh "$KMS_CLI_ENV_FILE";'
             ' cp "$KMS_CLI_ENV_FILE" copy.env')
    r = safe_vault.ok("exec", *args, "--env-file-out", str(tmp_path / "app.env"), "--", "sh", "-c", child)
    assert r.out.split(b"\0")[:-1] == [v.encode() for v in SAFE.values()]
    assert not (tmp_path / "app.env").exists() and not (tmp_path / MARKER).exists()
    assert dict(dotenv.dotenv_values(tmp_path / "copy.env")) == SAFE


def test_exec_env_file_out_refuses_before_the_child_runs(safe_vault, tmp_path):
    safe_vault.ok("secret", "put", "bad", input=b"it's `touch PWNED`")
    r = safe_vault("exec", "--secret", "bad=BAD", "--env-file-out", str(tmp_path / "app.env"), "--",
                   "touch", "child-ran")
    assert r.code == 2, r.err
    _no_traceback(r)
    assert "BAD" in r.err and "touch" not in r.err
    assert not (tmp_path / "child-ran").exists() and not (tmp_path / "app.env").exists()
    assert _entries(safe_vault, "exec") == [("error", "usage")]
    # without the env file the same value reaches the child's environment unchanged
    r = safe_vault.ok("exec", "--secret", "bad=BAD", "--", "printenv", "BAD")
    assert r.out == b"it's `touch PWNED`\n"


def test_import_crlf_file_as_python_dotenv_reads_it(vault, tmp_path):
    raw = (b"# exported on Windows\r\nMULTI=\"line one\r\nline two\r\n\"\r\nSINGLE='a\r\nb'\r\n"
           b"PLAIN=value # comment\r\nESCAPED=\"keeps \\r escaped\"\r\nREF=${HOME}/x\r\nQREF=\"${USER:-me}\"\r\n")
    (tmp_path / "win.env").write_bytes(raw)
    vault.ok("secret", "import", "win.env")
    expected = dict(dotenv.dotenv_values(tmp_path / "win.env", interpolate=False))
    assert expected["MULTI"] == "line one\nline two\n" and expected["ESCAPED"] == "keeps \r escaped"
    for name, value in expected.items():
        assert vault.ok("secret", "get", name).out == value.encode(), name
    # ${...} is never expanded on import: the value is what the file says
    assert vault.ok("secret", "get", "REF").out == b"${HOME}/x"
    assert vault.ok("secret", "get", "QREF").out == b"${USER:-me}"


def test_import_refuses_a_non_utf8_file_cleanly(vault, tmp_path):
    (tmp_path / "bad.env").write_bytes(b"A=secret-\xff\n")
    r = vault("secret", "import", "bad.env")
    assert r.code == 2 and "secret-" not in r.err
    _no_traceback(r)
