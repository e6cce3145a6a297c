"""Secrets through the real CLI: exact bytes, versions, TTL, tags, import/export, argv refusal."""

import json
import os
import time

import pytest


def test_put_get_exact_bytes(vault):
    for value in (b"s3cr3t", b"line1\nline2\n", b"\x00\xff\xfe binary", b"", "ünïcödé".encode()):
        vault.ok("secret", "put", "app/v", input=value)
        assert vault.ok("secret", "get", "app/v").out == value


def test_versions_and_history(vault):
    vault.ok("secret", "put", "db", input=b"one")
    assert vault.ok("--json", "secret", "put", "db", input=b"two").json()["version"] == 2
    assert vault.ok("secret", "get", "db").out == b"two"
    assert vault.ok("secret", "get", "db", "--version", "1").out == b"one"
    assert vault("secret", "get", "db", "--version", "7").code == 3
    h = vault.ok("--json", "secret", "history", "db").json()
    assert [x["version"] for x in h] == [1, 2] and h[1]["current"]
    assert "one" not in json.dumps(h) and "two" not in json.dumps(h)


def test_get_json(vault):
    vault.ok("secret", "put", "t", input=b"text")
    assert vault.ok("--json", "secret", "get", "t").json() == {"name": "t", "version": 1, "value": "text"}
    vault.ok("secret", "put", "b", input=b"\xff\x00")
    d = vault.ok("secret", "get", "b", "--json").json()
    assert d["value_b64"] == "/wA=" and "value" not in d


def test_value_never_from_argv(vault):
    r = vault("secret", "put", "x", "hunter2")
    assert r.code == 2
    assert "hunter2" not in r.err
    assert "stdin" in r.err


def test_from_file(vault, tmp_path):
    (tmp_path / "v").write_bytes(b"from-file\n")
    vault.ok("secret", "put", "f", "--from-file", "v")
    assert vault.ok("secret", "get", "f").out == b"from-file\n"


def test_ttl(vault):
    vault.ok("secret", "put", "short", "--ttl", "1s", input=b"v")
    assert vault.ok("secret", "get", "short").out == b"v"
    time.sleep(1.2)
    r = vault("secret", "get", "short")
    assert r.code == 6 and "expired" in r.err
    assert vault.ok("--json", "secret", "list").json()[0]["expired"] is True


def test_tags_and_list(vault):
    vault.ok("secret", "put", "a", "--tag", "env=prod", "--tag", "team=x", input=b"1")
    vault.ok("secret", "put", "b", "--tag", "env=dev", input=b"2")
    names = [s["name"] for s in vault.ok("--json", "secret", "list", "--tag", "env=prod").json()]
    assert names == ["a"]
    vault.ok("secret", "put", "a", input=b"3")  # a put without --tag keeps the tags
    assert vault.ok("--json", "secret", "list", "--tag", "team=x").json()[0]["version"] == 2
    out = vault.ok("secret", "list").text
    assert "a" in out and "b" in out and "1" not in out.split("\n", 1)[0]


def test_rm_and_versions_never_reused(vault):
    vault.ok("secret", "put", "gone", input=b"old")
    vault.ok("secret", "rm", "gone")
    assert vault("secret", "get", "gone").code == 3
    assert vault("secret", "rm", "gone").code == 3
    assert vault.ok("--json", "secret", "put", "gone", input=b"new").json()["version"] == 2


def test_missing_secret_exit_3(vault):
    r = vault("secret", "get", "nope")
    assert r.code == 3 and r.err.startswith("kms-cli: error:")


DOTENV = """# comment
export DB_USER=admin
DB_PASS='p@ss word'
MULTI="line one
line two"
QUOTED="say \\"hi\\""
EMPTY=
INLINE=value # trailing comment
"""


def test_import_export_dotenv(vault, tmp_path):
    dotenv = pytest.importorskip("dotenv")
    (tmp_path / ".env").write_text(DOTENV)
    vault.ok("secret", "import", ".env")
    expected = dict(dotenv.dotenv_values(tmp_path / ".env"))
    for k, v in expected.items():
        assert vault.ok("secret", "get", k).out == (v or "").encode(), k
    out = vault.ok("secret", "export").out
    (tmp_path / "back.env").write_bytes(out)
    assert dict(dotenv.dotenv_values(tmp_path / "back.env")) == {k: v or "" for k, v in expected.items()}
    doc = vault.ok("secret", "export", "--format", "json").json()
    assert doc["MULTI"] == "line one\nline two"


def test_export_to_file_is_private(vault, tmp_path):
    vault.ok("secret", "put", "A", input=b"1")
    vault.ok("secret", "export", "-o", "out.env")
    assert os.stat(tmp_path / "out.env").st_mode & 0o777 == 0o600


@pytest.mark.sqlite_only("reads the vault file and its WAL")
def test_values_never_in_vault_file_in_clear(vault):
    marker = b"PLAINTEXT-MARKER-1234567890"
    vault.ok("secret", "put", "m", input=marker)
    vault.ok("key", "create", "k")
    vault.ok("encrypt", "--key", "k", input=marker)
    raw = b""
    for suffix in ("", "-wal"):
        p = str(vault.vault) + suffix
        if os.path.exists(p):
            raw += open(p, "rb").read()
    assert marker not in raw
