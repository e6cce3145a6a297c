"""Errors say what really happened (issue 10, section 5): a full disk, a read-only vault, out-of-range
numbers and durations, wrong config types, unwritable or closed outputs, oversized imports and
non-canonical armor each get their one-line error and the spec's exit code, never exit 1; and
(section 3) a process command that refuses never leaves an "ok" audit entry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmshelp import Kms


def _no_traceback(r):
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    lines = [line for line in r.err.splitlines() if line]
    assert lines and lines[0].startswith("kms-cli: error: "), r.err
    assert all(line.startswith(("kms-cli: error: ", "kms-cli: hint: ")) for line in lines), r.err


def _entries(kms: Kms) -> list[dict]:
    """The audit entries, less those of `audit log` itself."""
    entries = [json.loads(line) for line in kms.ok("--json", "audit", "log").out.splitlines()]
    return [e for e in entries if e["op"] != "audit.log"]


# -- a full disk and a read-only vault: exit 7, the real cause, the vault intact ------------------

def _fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system holding `directory` up, then give back `leave` bytes."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - leave))
    return filler


def test_full_disk_is_no_space_not_damage(kms, small_fs):
    env = {"KMS_CLI_VAULT": str(small_fs / "vault.db")}
    kms.ok("init", env=env)
    kms.ok("secret", "put", "app/a", input=b"value-a", env=env)

    filler = _fill(small_fs)
    for args in (("secret", "put", "app/b"), ("health",)):
        r = kms(*args, input=b"b" * 5000, env=env)
        assert r.code == 7, (args, r.err)
        assert "no space left on device" in r.err and "damaged" not in r.err
        _no_traceback(r)

    # Room to open the vault but not to commit a large value: the transaction fails, nothing lands.
    filler.unlink()
    filler = _fill(small_fs, leave=200 * 1024)
    r = kms("secret", "put", "app/big", input=os.urandom(700 * 1024).hex()[: 1 << 20].encode(), env=env)
    assert r.code == 7, r.err
    assert "no space left on device" in r.err and "damaged" not in r.err
    _no_traceback(r)

    filler.unlink()
    assert kms.ok("secret", "get", "app/a", env=env).out == b"value-a"
    assert kms("secret", "get", "app/b", env=env).code == 3
    assert kms("secret", "get", "app/big", env=env).code == 3
    kms.ok("audit", "verify", env=env)
    kms.ok("secret", "put", "app/b", input=b"b", env=env)

    # init on a full disk: exit 7, and no empty vault file left to block the next init
    filler = _fill(small_fs)
    other = {"KMS_CLI_VAULT": str(small_fs / "other.db")}
    r = kms("init", env=other)
    assert r.code == 7 and "no space left on device" in r.err, r.err
    assert not (small_fs / "other.db").exists()
    filler.unlink()
    kms.ok("init", env=other)


def test_read_only_vault_is_read_only_not_damage(kms, small_fs):
    env = {"KMS_CLI_VAULT": str(small_fs / "vault.db")}
    kms.ok("init", env=env)
    kms.ok("secret", "put", "app/a", input=b"value-a", env=env)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        for args, stdin in ((("secret", "get", "app/a"), b""), (("secret", "put", "app/b"), b"b"),
                            (("key", "list"), b""), (("health",), b"")):
            r = kms(*args, input=stdin, env=env)
            assert r.code == 7, (args, r.err)
            assert "the vault is read-only" in r.err and "damaged" not in r.err
            _no_traceback(r)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert kms.ok("secret", "get", "app/a", env=env).out == b"value-a"
    kms.ok("audit", "verify", env=env)


def test_not_a_database_is_still_integrity(kms):
    kms.vault.write_bytes(os.urandom(8192))
    r = kms("secret", "get", "x")
    assert r.code == 5 and "not a kms-cli vault or is damaged" in r.err
    _no_traceback(r)


# -- numbers and durations: bounded when parsed (exit 2), nothing stored ---------------------------

def test_huge_ttl_is_a_usage_error_and_never_stored(vault):
    for ttl in ("99999999999999999999d", "P99999999999999999999D", "101y", "9" * 5000 + "s", "", "0s", "٣d"):
        r = vault("secret", "put", "app/x", "--ttl", ttl, input=b"v")
        assert r.code == 2, (ttl, r.err)
        _no_traceback(r)
    assert vault("secret", "get", "app/x").code == 3
    vault.ok("secret", "put", "app/x", "--ttl", "100y", input=b"v")
    assert json.loads(vault.ok("--json", "secret", "list").out)[0]["expires"]


def test_other_durations_and_numbers_are_bounded(vault):
    vault.ok("key", "create", "k")
    vault.ok("secret", "put", "s", input=b"v")
    for args in (["key", "create", "k2", "--rotate-every", "999999999999y"], ["key", "create", "k2", "--rotate-every", "0d"],
                 ["key", "rotate", "k", "--grace", "P999999999999Y"], ["key", "destroy", "k", "--after", "36501d"],
                 ["audit", "log", "--since", "99999999999999999999d"], ["audit", "prune", "--before", "1e9d"],
                 ["secret", "get", "s", "--version", "99999999999999999999"], ["secret", "get", "s", "--version", "0"],
                 ["key", "revoke", "k", "--version", "2147483648", "--reason", "x"],
                 ["read", "kms://s?version=99999999999999999999"], ["read", "kms://s?version="]):
        r = vault(*args)
        assert r.code == 2, (args, r.code, r.err)
        _no_traceback(r)
    (vault.tmp / "t.tpl").write_text("x={{ kms://s?version=99999999999999999999 }}\n")
    r = vault("inject", "-i", "t.tpl")
    assert r.code == 2 and r.out == b""
    _no_traceback(r)
    vault.ok("secret", "list")
    vault.ok("key", "list")


def test_empty_option_values_are_usage_errors(kms):
    r = kms("init", "--master-key", "")
    assert r.code == 2 and "--master-key" in r.err
    _no_traceback(r)
    assert not kms.vault.exists()
    kms.ok("init")
    for args in (["secret", "put", "x", "--from-file", ""], ["--unlock", "", "secret", "list"],
                 ["--vault", "", "secret", "list"], ["key", "create", "k", "--algorithm="],
                 ["audit", "log", "--op", ""], ["secret", "put", "x", "--tag", ""]):
        r = kms(*args, input=b"v")
        assert r.code == 2, (args, r.err)
        _no_traceback(r)
    # where "" means something, it still works: the root namespace, no prefix
    kms.ok("secret", "put", "ns/x", input=b"1")
    assert kms.ok("--namespace", "", "secret", "get", "ns/x").out == b"1"
    assert kms.ok("env", "-s", "ns/x", "--prefix", "").out == b"export X='1'\n"


# -- config and environment of the wrong type ----------------------------------------------------

@pytest.mark.parametrize("line,word", [("vault = true", "vault"), ("namespace = 5", "namespace"),
                                       ("timeout = [1]", "timeout"), ("retries = 1.5", "retries"),
                                       ("no_color = \"yes\"", "no_color"), ("unlock = 1979-05-27", "unlock")])
def test_config_values_of_the_wrong_type(vault, tmp_path, line, word):
    cfg = tmp_path / "config.toml"
    cfg.write_text(line + "\n")
    r = vault("secret", "list", env={"KMS_CLI_CONFIG": str(cfg)})
    assert r.code == 2, r.err
    assert word in r.err
    _no_traceback(r)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e400", "3601"])
def test_timeout_must_be_a_real_positive_number(vault, value):
    vault.ok("secret", "put", "x", input=b"1")
    r = vault("secret", "get", "x", env={"KMS_CLI_TIMEOUT": value})
    assert r.code == 2, r.err
    assert "KMS_CLI_TIMEOUT" in r.err and r.out == b""
    _no_traceback(r)
    r = vault("secret", "get", "x", env={"KMS_CLI_RETRIES": "1" + "0" * 30})
    assert r.code == 2 and "KMS_CLI_RETRIES" in r.err


# -- outputs that cannot be written --------------------------------------------------------------

def _run_shell(kms: Kms, script: str, input: bytes = b""):
    p = subprocess.run(["sh", "-c", script, "sh", sys.executable], input=input, capture_output=True, env=kms.env,
                       cwd=kms.tmp, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


@pytest.mark.parametrize("args", [("secret", "get", "x"), ("--json", "secret", "list"), ("--version",),
                                  ("read", "kms://x"), ("env", "-s", "x")])
def test_output_to_a_full_device(vault, args):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    vault.ok("secret", "put", "x", input=b"value")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "kms_cli", *args], stdout=full, stderr=subprocess.PIPE,
                           env=vault.env, cwd=vault.tmp, timeout=60)
    err = p.stderr.decode().splitlines()
    assert p.returncode == 7, err
    assert err[0] == "kms-cli: error: cannot write the output: no space left on device"
    if "--json" in args:
        assert json.loads(err[1])["error"]["exit"] == 7
    else:
        assert len(err) == 1


def test_output_file_on_a_full_device(vault):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    vault.ok("key", "create", "k")
    (vault.tmp / "plain").write_bytes(os.urandom(3 << 20))
    r = vault("encrypt", "--key", "k", "-i", "plain", "-o", "/dev/full")
    assert r.code == 7 and "no space left on device" in r.err
    _no_traceback(r)


def test_closed_stdout(vault):
    vault.ok("secret", "put", "x", input=b"value")
    before = len(_entries(vault))
    for cmd in ("secret get x", "read kms://x", "env -s x", "--json secret list", "decrypt -i /dev/null"):
        code, out, err = _run_shell(vault, f'exec "$1" -m kms_cli {cmd} >&-')
        assert code == 2, (cmd, err)
        assert err.splitlines()[0] == "kms-cli: error: standard output is closed", (cmd, err)
        assert "Traceback" not in err
    # refused before the vault was read: no entry claims a value was handed out
    assert len(_entries(vault)) == before
    # a command that writes nothing to stdout still works, and stdout stays untouched
    code, out, err = _run_shell(vault, 'exec "$1" -m kms_cli secret put y >&-', input=b"v2")
    assert code == 0, err
    assert vault.ok("secret", "get", "y").out == b"v2"


def test_closed_stdin_and_stderr(vault):
    code, out, err = _run_shell(vault, 'exec "$1" -m kms_cli secret put y <&-')
    assert code == 2 and err.splitlines()[0] == "kms-cli: error: standard input is closed", err
    code, out, err = _run_shell(vault, 'exec "$1" -m kms_cli secret put y 2>&-', input=b"v")
    assert (code, out) == (0, b"")  # "stored ..." went nowhere, certainly not into stdout
    code, out, err = _run_shell(vault, 'exec "$1" -m kms_cli secret get nope 2>&-')
    assert (code, out) == (3, b"")


# -- one limit for every way in ------------------------------------------------------------------

def test_import_refuses_what_put_refuses(vault):
    limit = 1 << 20
    (vault.tmp / "big.env").write_text(f"SMALL=ok\nBIG={'x' * (limit + 1)}\n")
    r = vault("secret", "import", "big.env")
    assert r.code == 2 and "BIG" in r.err and "larger than" in r.err
    _no_traceback(r)
    assert vault("secret", "get", "SMALL").code == 3  # nothing of the file was stored
    assert vault("secret", "put", "BIG", input=b"x" * (limit + 1)).code == 2
    (vault.tmp / "ok.env").write_text(f"BIG={'x' * limit}\n")
    vault.ok("secret", "import", "ok.env")
    assert len(vault.ok("secret", "get", "BIG").out) == limit


# -- armor: canonical base64 only, as age --------------------------------------------------------

def _armored_with_padding(vault) -> bytes:
    vault.ok("key", "create", "k")
    for n in range(1, 8):
        (vault.tmp / "plain").write_bytes(b"p" * n)
        vault.ok("encrypt", "--key", "k", "--armor", "-i", "plain", "-o", "ct.asc")
        text = (vault.tmp / "ct.asc").read_bytes()
        last = text.splitlines()[-2]
        if last.endswith(b"=") and not last.endswith(b"=="):
            return text
    raise AssertionError("no ciphertext length gave one padding character")


def test_armor_rejects_non_canonical_base64(vault):
    import base64

    text = _armored_with_padding(vault)
    lines = text.splitlines(keepends=True)
    assert vault.ok("decrypt", "-i", "ct.asc").out == (vault.tmp / "plain").read_bytes()
    last = lines[-2].rstrip(b"\n")
    # One padding character: the last data character carries 2 unused bits. Setting them
    # decodes to the same bytes, so only the canonical check can catch it.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    c = alphabet.index(last[-2:-1])
    assert c & 3 == 0
    for bits in (1, 2, 3):
        tweaked = last[:-2] + alphabet[c | bits : (c | bits) + 1] + b"="
        assert base64.b64decode(tweaked) == base64.b64decode(last)
        (vault.tmp / "bad.asc").write_bytes(b"".join(lines[:-2]) + tweaked + b"\n" + lines[-1])
        r = vault("decrypt", "-i", "bad.asc")
        assert r.code == 5 and r.out == b"", r.err
        _no_traceback(r)
    # padding left out, or a padded line followed by another line
    (vault.tmp / "bad.asc").write_bytes(b"".join(lines[:-2]) + last[:-1] + b"\n" + lines[-1])
    assert vault("decrypt", "-i", "bad.asc").code == 5


# -- section 3: a refusing process command leaves no "ok" entry ----------------------------------

def test_env_github_without_github_env_is_not_logged_ok(vault):
    vault.ok("secret", "put", "app/token", input=b"tok")
    r = vault("env", "-s", "app/token", "--format", "github", env={"GITHUB_ENV": None})
    assert r.code == 2 and "GITHUB_ENV" in r.err and r.out == b""
    r = vault("env", "-s", "app/token", "--format", "github", env={"GITHUB_ENV": "/nonexistent/dir/env"})
    assert r.code == 2 and "GITHUB_ENV" in r.err and r.out == b""
    _no_traceback(r)
    assert [e for e in _entries(vault) if e["op"] == "env"] == []  # refused before anything was read


def test_env_value_a_format_cannot_carry_is_logged_as_error(vault, tmp_path):
    vault.ok("secret", "put", "app/nul", input=b"a\0b")
    vault.ok("secret", "put", "app/bin", input=b"\xff\xfe")
    for args, env in ((["env", "-s", "app/nul"], None), (["env", "-s", "app/bin", "--format", "json"], None),
                      (["env", "-s", "app/nul", "--format", "github"], {"GITHUB_ENV": str(tmp_path / "gh")})):
        r = vault(*args, env=env)
        assert r.code == 2 and r.out == b"", (args, r.err)
        _no_traceback(r)
    entries = [e for e in _entries(vault) if e["op"] == "env"]
    assert [(e["result"], e["error"]) for e in entries] == [("error", "usage")] * 3
    assert not (tmp_path / "gh").exists() or (tmp_path / "gh").read_bytes() == b""


def test_inject_to_a_missing_directory_is_not_logged_ok(vault):
    vault.ok("secret", "put", "s", input=b"v")
    (vault.tmp / "t.tpl").write_text("x={{ kms://s }}\n")
    r = vault("inject", "-i", "t.tpl", "-o", "no/such/dir/out")
    assert r.code == 3, r.err
    _no_traceback(r)
    assert [e for e in _entries(vault) if e["op"] == "inject"] == []
    vault.ok("inject", "-i", "t.tpl", "-o", "out")
    assert (vault.tmp / "out").read_bytes() == b"x=v\n"
    assert [e["result"] for e in _entries(vault) if e["op"] == "inject"] == ["ok"]


def test_export_refusals_are_not_logged_ok(vault):
    vault.ok("secret", "put", "bin", input=b"\xff\xfe")
    for args in (["secret", "export"], ["secret", "export", "--format", "json"]):
        r = vault(*args)
        assert r.code == 2 and r.out == b"", r.err
        _no_traceback(r)
    r = vault("secret", "export", "-o", "no/such/dir/out.env")
    assert r.code == 3, r.err
    entries = [e for e in _entries(vault) if e["op"] == "secret.export"]
    assert [(e["result"], e["error"]) for e in entries] == [("error", "usage")] * 2
