"""Errors: one line, the spec's exit code, no traceback, and the --json error object."""

import json
import os


def test_json_error_object_is_last_stderr_line(vault):
    r = vault("--json", "secret", "get", "missing")
    assert r.code == 3
    lines = r.err.strip().splitlines()
    doc = json.loads(lines[-1])
    assert doc == {"error": {"code": "not_found", "exit": 3, "message": doc["error"]["message"]}}
    assert lines[0].startswith("kms-cli: error: ")
    assert r.out == b""


def test_usage_errors_exit_2_without_traceback(vault):
    for args in (["key", "create"], ["key", "rotate", "k", "--reason", "bogus"], ["secret", "get", "x", "--version", "abc"],
                 ["encrypt", "--nope"], ["secret"], ["--namespace"]):
        r = vault(*args)
        assert r.code == 2, args
        assert "Traceback" not in r.err
        assert r.err.startswith("kms-cli: error: "), (args, r.err)


def test_global_options_after_command(vault):
    vault.ok("secret", "put", "x", input=b"1")
    assert vault.ok("secret", "get", "x", "--json").json()["value"] == "1"
    assert vault.ok("secret", "list", "-q", "--json").json()[0]["name"] == "x"


def test_quiet_silences_info(vault):
    r = vault.ok("-q", "key", "create", "k")
    assert r.err == ""


def test_damaged_vault_file(kms):
    kms.vault.write_bytes(b"this is not a database at all" * 100)
    r = kms("key", "list")
    assert r.code == 5
    assert "Traceback" not in r.err


def test_config_file(kms, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'vault = "{tmp_path / "from-config.db"}"\nnamespace = "cfg"\n')
    env = {"KMS_CLI_CONFIG": str(cfg), "KMS_CLI_VAULT": None}
    kms.ok("init", env=env)
    assert (tmp_path / "from-config.db").exists()
    kms.ok("secret", "put", "x", input=b"1", env=env)
    assert kms.ok("--namespace", "", "secret", "get", "cfg/x", env=env).out == b"1"
    cfg.write_text("bogus = 1\n")
    assert kms("key", "list", env=env).code == 2


def test_help_paths_never_crash(kms):
    r = kms()  # bare kms-cli: usage on stderr, exit 2 (issue 11)
    assert r.code == 2 and "Usage" in r.err and r.out == b""
    r = kms("secret", "get", "--bogus", "--help")
    assert r.code in (0, 2) and "internal error" not in r.err
    r = kms("key", "list", "--help")
    assert r.code == 0 and "key list" in r.text


def test_output_is_complete_and_a_closed_pipe_is_quiet(vault, tmp_path):
    """kms-cli exits without the interpreter's teardown when it can: every byte must still arrive."""
    import subprocess
    import sys

    vault.ok("key", "create", "pipes")
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(3 * 2**20 + 7))
    vault.ok("encrypt", "--key", "pipes", "-i", str(plain), "-o", str(tmp_path / "ct"))
    out = subprocess.run([sys.executable, "-m", "kms_cli", "decrypt", "-i", str(tmp_path / "ct")], env=vault.env, capture_output=True)
    assert out.returncode == 0 and out.stdout == plain.read_bytes()
    # A reader that goes away early: exit 141 (as a shell reports SIGPIPE), no traceback.
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "decrypt", "-i", str(tmp_path / "ct")], env=vault.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 141
    assert b"Traceback" not in err and b"Exception ignored" not in err
