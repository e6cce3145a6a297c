"""Help: rendered by Typer for the command path only, never running anything, and worth reading."""

from __future__ import annotations

import sys

import pytest

from kms_cli import algorithms
from kms_cli.cli import spec, typer_app

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _help(path, capsys, monkeypatch) -> str:
    for k, v in WIDE.items():
        monkeypatch.setenv(k, v)
    assert typer_app.run_typer([*path, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("cmd", spec.COMMANDS, ids=lambda c: " ".join(c.path))
def test_every_command_has_clean_help_with_examples(cmd, capsys, monkeypatch):
    out = _help(cmd.path, capsys, monkeypatch)
    assert f"Usage: kms-cli {' '.join(cmd.path)}" in out
    for noise in ("<bool>", "<str>", "<int>", "<list", "{NAME}", "[OPTIONS] {"):
        assert noise not in out
    assert "Examples:" in out
    for _, line in cmd.examples:
        assert line in out
    for o in cmd.opts:
        assert o.flags[-1] in out


def test_global_options_show_env_and_default(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    out = _help(("secret", "get"), capsys, monkeypatch)
    line = next(x for x in out.splitlines() if "--vault" in x)
    assert "KMS_CLI_VAULT" in line and "~/.local/share/kms-cli/vault.db" in line
    assert "KMS_CLI_NAMESPACE" in out and "NO_COLOR" in out
    assert "~/.local/share/kms-cli/vault.db" in _help((), capsys, monkeypatch)


def test_key_create_lists_the_registry(capsys, monkeypatch):
    out = _help(("key", "create"), capsys, monkeypatch)
    for name in algorithms.ALGORITHMS:
        assert name in out
    assert "default: aes-256-gcm" in out


def test_key_rotate_explains_old_versions(capsys, monkeypatch):
    out = " ".join(_help(("key", "rotate"), capsys, monkeypatch).split())
    assert "Without --grace they keep decrypting and verifying until revoked" in out
    assert "With --grace DUR they stop at the end of DUR" in out
    assert "--reason compromise revokes them at once" in out


# -- black box: help never runs anything ----------------------------------------------------------

def test_bare_kms_cli_is_usage_on_stderr(kms):
    r = kms()
    assert r.code == 2 and r.out == b"" and "Usage: kms-cli" in r.err and "Examples:" in r.err
    assert kms("--json", "-q").code == 2


def test_help_anywhere_before_double_dash_runs_nothing(kms, tmp_path):
    marker = tmp_path / "ran"
    for argv in (["init", "-h"], ["init", "--force", "--help"], ["-h", "init"]):
        r = kms(*argv)
        assert r.code == 0 and b"Usage: kms-cli" in r.out, r.err
        assert not kms.vault.exists()
    kms.ok("init")
    for argv in (["secret", "put", "x", "-h"], ["secret", "put", "-h", "x"], ["--help", "secret", "put", "x"],
                 ["key", "create", "k", "--algorithm", "-h"], ["backup", "-o", "-h"],
                 ["exec", "-s", "x", "-h", "--", "touch", str(marker)],
                 ["exec", "--help", "touch", str(marker)]):
        r = kms(*argv, input=b"value")
        assert r.code == 0 and b"Usage: kms-cli" in r.out, (argv, r.err)
    entries = kms.ok("--json", "audit", "log").json_lines()
    assert [e["op"] for e in entries if e["op"] != "vault.init"] == []  # no handler ran: nothing audited
    assert kms("secret", "get", "x").code == 3
    assert kms("key", "show", "k").code == 3
    assert not (tmp_path / "-h").exists() and not marker.exists()


def test_help_after_double_dash_is_the_childs(vault):
    vault.ok("secret", "put", "s", input=b"v")
    code = "import sys; print(sys.argv[1:])"
    r = vault.ok("exec", "-s", "s", "--", sys.executable, "-c", code, "-h", "--help")
    assert r.out.decode().strip() == "['-h', '--help']"
    r = vault.ok("exec", "-s", "s", sys.executable, "-c", code, "-h")  # after CMD, without --
    assert r.out.decode().strip() == "['-h']"


def test_help_of_a_group_and_of_the_root(kms):
    r = kms("key", "-h")
    assert r.code == 0 and b"rotate" in r.out and b"cancel-destroy" in r.out
    r = kms("--help")
    assert r.code == 0 and b"secret" in r.out and b"Examples:" in r.out
