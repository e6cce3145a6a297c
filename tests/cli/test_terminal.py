"""On a terminal (issue 11, section 4), through the real CLI on pseudo-terminals: progress bars
on stderr only when it is a TTY, no binary output to a terminal, decrypt saying it waits for
input, `secret put` unlocking before it asks for the value, weak new passphrases refused, and
counted nouns in the singular."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import threading
import time

import pytest

STRONG = "correct horse battery staple"


class Term:
    """`python -m kms_cli ARGS` with any of stdin, stdout and stderr on one pseudo-terminal (its
    controlling terminal, so getpass prompts there too); the others are pipes."""

    def __init__(self, kms, *args, stdin="tty", stdout="pipe", stderr="tty", env=None, feed=None):
        self.master, slave = pty.openpty()
        name = os.ttyname(slave)
        full_env = dict(kms.env, TERM="xterm", COLUMNS="100")
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v

        def controlling_terminal():  # runs after setsid: opening the tty makes it the controlling one
            os.close(os.open(name, os.O_RDWR))

        pick = {"tty": slave, "pipe": subprocess.PIPE}
        self.proc = subprocess.Popen([sys.executable, "-m", "kms_cli", *args], cwd=kms.tmp, env=full_env,
                                     stdin=pick[stdin], stdout=pick[stdout], stderr=pick[stderr],
                                     start_new_session=True, preexec_fn=controlling_terminal)
        os.close(slave)
        self.screen = b""
        self.out = b""
        self.err = b""
        self._threads = []
        if stdout == "pipe":
            self._collect(self.proc.stdout, "out")
        if stderr == "pipe":
            self._collect(self.proc.stderr, "err")
        if stdin == "pipe":
            t = threading.Thread(target=self._feed, args=(feed or (lambda w: None),), daemon=True)
            t.start()
            self._threads.append(t)

    def _collect(self, stream, attr):
        def run():
            setattr(self, attr, stream.read())

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._threads.append(t)

    def _feed(self, feed):
        try:
            feed(self.proc.stdin)
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read(self, timeout: float) -> bool:
        ready = select.select([self.master], [], [], timeout)[0]
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the other side is closed (EIO on Linux)
            return False
        self.screen += data
        return bool(data)

    def expect(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen on the terminal; it shows {self.screen!r}"
            self._read(min(left, 0.2))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "kms-cli did not finish"
            self._read(0.05)
        while self._read(0.05):
            pass
        for t in self._threads:
            t.join(timeout)
        os.close(self.master)
        return self.proc.returncode


def slowly(data: bytes, pieces: int = 12, pause: float = 0.1):
    """A feed for stdin: `data` in pieces with pauses between them (a slow pipe, size unknown)."""
    size = -(-len(data) // pieces)

    def feed(w):
        for i in range(0, len(data), size):
            w.write(data[i:i + size])
            w.flush()
            time.sleep(pause)

    return feed


def passphrase_vault(kms):
    kms.ok("init", "--master-key", "passphrase", env={"KMS_CLI_PASSPHRASE": STRONG, "KMS_CLI_MASTER_KEY": None})
    return {"KMS_CLI_PASSPHRASE": None, "KMS_CLI_MASTER_KEY": None}


# -- progress bars -------------------------------------------------------------------------------


def test_a_slow_encrypt_shows_a_bar_on_a_terminal_and_erases_it(vault, tmp_path):
    vault.ok("key", "create", "k")
    data = os.urandom(6 << 20)  # 2.4 s through the pipe: a block reported every 0.4 s or more
    t = Term(vault, "encrypt", "--key", "k", "-o", tmp_path / "c", stdin="pipe", stderr="tty",
             feed=slowly(data, pieces=24))
    assert t.finish() == 0
    assert b"kms-cli: encrypting" in t.screen  # the bar, drawn on stderr
    assert b"MB" in t.screen or b"kB" in t.screen  # with the bytes done so far
    assert b"\x1b[?25h" in t.screen and t.screen.endswith(b"\x1b[2K")  # cursor shown again, the bar erased
    assert vault.ok("decrypt", "-i", tmp_path / "c").out == data


def test_no_bar_when_stderr_is_not_a_terminal_or_with_quiet(vault, tmp_path):
    vault.ok("key", "create", "k")
    data = os.urandom(3 << 20)
    t = Term(vault, "encrypt", "--key", "k", "-o", tmp_path / "c", stdin="pipe", stderr="pipe", feed=slowly(data))
    assert t.finish() == 0
    assert t.err == b""  # a pipe gets only the usual lines: none for encrypt
    t = Term(vault, "--quiet", "encrypt", "--key", "k", "-o", tmp_path / "c", stdin="pipe", stderr="tty",
             feed=slowly(data))
    assert t.finish() == 0
    assert t.screen == b""
    # rewrap keeps its usual line, and only it, on a pipe
    t = Term(vault, "rewrap", "-o", tmp_path / "c2", stdin="pipe", stderr="pipe",
             feed=slowly((tmp_path / "c").read_bytes()))
    assert t.finish() == 0
    assert t.err == b"kms-cli: rewrapped to k version 1\n"


def test_decrypt_to_a_terminal_stdout_draws_no_bar_over_the_plaintext(vault, tmp_path):
    vault.ok("key", "create", "k")
    data = b"line of text\n" * 200_000
    (tmp_path / "c").write_bytes(vault.ok("encrypt", "--key", "k", input=data).out)
    t = Term(vault, "decrypt", stdin="pipe", stdout="tty", stderr="tty", feed=slowly((tmp_path / "c").read_bytes()))
    assert t.finish() == 0
    assert b"decrypting" not in t.screen


PROGRESS_SNIPPET = r"""
import sys, time
from kms_cli.cli.context import Ctx
from kms_cli.cli.progress import progress
ctx = Ctx({"quiet": "--quiet" in sys.argv})
with progress(ctx, 10 << 20, "encrypting") as advance:      # a known size: the advance form
    for _ in range(10):
        advance(1 << 20)
        time.sleep(0.08)
with progress(ctx, None, "verifying the audit log", unit="entries") as p:   # the callback form
    for done in range(1, 13):
        p.update(done, 12)
        time.sleep(0.08)
print("done", file=sys.stderr)
"""


@pytest.mark.parametrize("stderr", ["tty", "pipe"])
def test_the_progress_api_known_total_and_callback_forms(kms, stderr):
    t = _snippet(kms, stderr)
    assert t.finish() == 0
    if stderr == "tty":
        assert b"kms-cli: encrypting" in t.screen and b"/10.5 MB" in t.screen
        assert b"kms-cli: verifying the audit log" in t.screen and b"/12 entries" in t.screen
        assert t.screen.rstrip().endswith(b"done")
    else:
        assert t.err == b"done\n"


def _snippet(kms, stderr, *extra):
    """PROGRESS_SNIPPET instead of the CLI, with the same terminal plumbing."""
    t = Term.__new__(Term)
    t.master, slave = pty.openpty()
    pick = {"tty": slave, "pipe": subprocess.PIPE}
    env = dict(kms.env, TERM="xterm", COLUMNS="100")
    t.proc = subprocess.Popen([sys.executable, "-c", PROGRESS_SNIPPET, *extra], env=env, cwd=kms.tmp,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=pick[stderr])
    os.close(slave)
    t.screen, t.out, t.err, t._threads = b"", b"", b"", []
    t._collect(t.proc.stdout, "out")
    if stderr == "pipe":
        t._collect(t.proc.stderr, "err")
    return t


def test_the_progress_api_is_silent_with_quiet(kms):
    t = _snippet(kms, "tty", "--quiet")
    assert t.finish() == 0
    assert t.screen.strip() == b"done"


def test_secret_import_on_a_terminal_counts_in_the_singular(vault, tmp_path):
    (tmp_path / "one.env").write_text("A=1\n")
    t = Term(vault, "secret", "import", tmp_path / "one.env", stdin="pipe", stderr="tty")
    assert t.finish() == 0
    assert t.screen.endswith(b"kms-cli: imported 1 secret\r\n")
    (tmp_path / "two.env").write_text("B=1\nC=2\n")
    assert vault.ok("secret", "import", tmp_path / "two.env").err == "kms-cli: imported 2 secrets\n"
    assert vault.ok("secret", "rm", "A").err == "kms-cli: removed A (1 version)\n"
    vault.ok("secret", "put", "B", input="again")
    assert vault.ok("secret", "rm", "B").err == "kms-cli: removed B (2 versions)\n"


# -- binary output and terminal input ------------------------------------------------------------


def test_encrypt_refuses_binary_ciphertext_on_a_terminal(vault):
    vault.ok("key", "create", "k")
    t = Term(vault, "encrypt", "--key", "k", stdin="pipe", stdout="tty", stderr="pipe", feed=lambda w: w.write(b"x"))
    assert t.finish() == 2
    assert t.err.decode().splitlines() == [
        "kms-cli: error: refusing to write binary ciphertext to a terminal",
        "kms-cli: hint: write it to a file with -o FILE, or as text with --armor"]
    assert t.screen == b""
    log = vault.ok("--json", "audit", "log").json_lines()
    assert not [e for e in log if e["op"] == "encrypt"]  # refused before anything was read or recorded
    # --armor is text: fine on a terminal; a pipe is fine without it
    t = Term(vault, "encrypt", "--key", "k", "--armor", stdin="pipe", stdout="tty", stderr="pipe",
             feed=lambda w: w.write(b"x"))
    assert t.finish() == 0
    assert b"-----BEGIN KMS-CLI ENCRYPTED FILE-----" in t.screen
    assert vault.ok("encrypt", "--key", "k", input=b"x").out


def test_other_binary_outputs_are_refused_on_a_terminal(vault):
    vault.ok("key", "create", "s", "--algorithm", "ed25519")
    t = Term(vault, "sign", "--key", "s", stdin="pipe", stdout="tty", stderr="pipe", feed=lambda w: w.write(b"x"))
    assert t.finish() == 2
    assert b"refusing to write a binary signature to a terminal" in t.err and b"-o SIG" in t.err
    t = Term(vault, "key", "public", "s", "--format", "raw", stdin="pipe", stdout="tty", stderr="pipe")
    assert t.finish() == 2
    assert b"refusing to write a raw public key to a terminal" in t.err
    t = Term(vault, "key", "public", "s", stdin="pipe", stdout="tty", stderr="pipe")  # PEM is text
    assert t.finish() == 0 and b"BEGIN PUBLIC KEY" in t.screen


def test_decrypt_from_a_terminal_says_it_is_waiting_then_reads_a_pasted_ciphertext(vault):
    vault.ok("key", "create", "k")
    armored = vault.ok("encrypt", "--key", "k", "--armor", input=b"pasted secret").out
    t = Term(vault, "decrypt", stdin="tty", stdout="pipe", stderr="tty")
    t.expect(b"kms-cli: waiting for the ciphertext on standard input (a terminal)")
    t.send(armored + b"\x04")
    assert t.finish() == 0
    assert t.out == b"pasted secret"
    # from a pipe: no such line
    t = Term(vault, "decrypt", stdin="pipe", stdout="pipe", stderr="tty", feed=lambda w: w.write(armored))
    assert t.finish() == 0 and t.out == b"pasted secret"
    assert b"waiting" not in t.screen


def test_decrypt_from_a_terminal_asks_the_passphrase_before_waiting_for_the_ciphertext(kms):
    env = passphrase_vault(kms)
    kms.ok("key", "create", "k", env={"KMS_CLI_PASSPHRASE": STRONG})
    armored = kms.ok("encrypt", "--key", "k", "--armor", input=b"v", env={"KMS_CLI_PASSPHRASE": STRONG}).out
    t = Term(kms, "decrypt", stdin="tty", stdout="pipe", stderr="tty", env=env)
    t.expect(b"passphrase: ")
    assert b"waiting" not in t.screen
    t.send(STRONG.encode() + b"\n")
    t.expect(b"waiting for the ciphertext")
    t.send(armored + b"\x04")
    assert t.finish() == 0 and t.out == b"v"


# -- secret put: unlock first ------------------------------------------------------------------


def test_secret_put_with_a_wrong_passphrase_fails_before_asking_for_the_value(kms):
    env = passphrase_vault(kms)
    t = Term(kms, "secret", "put", "db", stdin="tty", stdout="pipe", stderr="tty", env=env)
    t.expect(b"passphrase: ")
    t.send(b"not the passphrase\n")
    assert t.finish() == 4
    assert b"kms-cli: error:" in t.screen
    assert b"value" not in t.screen  # never asked: nothing typed was thrown away
    t = Term(kms, "secret", "put", "db", stdin="tty", stdout="pipe", stderr="tty", env=env)
    t.expect(b"passphrase: ")
    t.send(STRONG.encode() + b"\n")
    t.expect(b"value: ")
    t.send(b"typed value\n")
    t.expect(b"value (again): ")
    t.send(b"typed value\n")
    assert t.finish() == 0
    assert b"stored db version 1" in t.screen
    assert kms.ok("secret", "get", "db", env={"KMS_CLI_PASSPHRASE": STRONG}).out == b"typed value"


# -- weak new passphrases --------------------------------------------------------------------------


@pytest.mark.parametrize("weak", ["hunter2", "passwordpassword"])
def test_init_refuses_a_weak_passphrase_from_the_environment_or_a_file(kms, tmp_path, weak):
    r = kms("init", "--master-key", "passphrase", env={"KMS_CLI_PASSPHRASE": weak})
    assert r.code == 2
    assert r.err.startswith("kms-cli: error: the new passphrase is ")
    assert "kms-cli: hint: " in r.err and "--allow-weak-passphrase" in r.err
    assert weak not in r.err
    assert not kms.vault.exists()
    path = tmp_path / "pw"
    path.write_text(weak + "\n")
    r = kms("--passphrase-file", path, "init", "--master-key", "passphrase")
    assert r.code == 2 and "--allow-weak-passphrase" in r.err and weak not in r.err
    # allowed on request; unlocking it later never judges it
    kms.ok("init", "--master-key", "passphrase", "--allow-weak-passphrase", env={"KMS_CLI_PASSPHRASE": weak})
    kms.ok("key", "list", env={"KMS_CLI_PASSPHRASE": weak, "KMS_CLI_MASTER_KEY": None})


def test_a_weak_passphrase_typed_at_the_prompt_is_refused(kms):
    t = Term(kms, "init", "--master-key", "passphrase", stdin="tty", stdout="pipe", stderr="tty",
             env={"KMS_CLI_PASSPHRASE": None})
    t.expect(b"new passphrase: ")
    t.send(b"qwerty123456\n")
    t.expect(b"new passphrase (again): ")
    t.send(b"qwerty123456\n")
    assert t.finish() == 2
    assert b"kms-cli: error: the new passphrase is too easy to guess" in t.screen
    assert b"--allow-weak-passphrase" in t.screen
    assert t.screen.count(b"qwerty123456") == 0  # the prompt does not echo it, nor does the error


def test_master_add_refuses_a_weak_passphrase_unless_allowed(vault):
    r = vault("master", "add", "passphrase", env={"KMS_CLI_PASSPHRASE": "tulip7"})
    assert r.code == 2 and "--allow-weak-passphrase" in r.err and "tulip7" not in r.err
    vault.ok("master", "add", "passphrase", "--allow-weak-passphrase", env={"KMS_CLI_PASSPHRASE": "tulip7"})
    assert len(vault.ok("--json", "master", "list").json()) == 2


def test_sign_from_a_terminal_says_it_is_waiting(vault, tmp_path):
    vault.ok("key", "create", "s", "--algorithm", "ed25519")
    t = Term(vault, "sign", "--key", "s", "-o", tmp_path / "sig", stdin="tty", stdout="pipe", stderr="tty")
    t.expect(b"kms-cli: waiting for the data to sign on standard input (a terminal)")
    t.send(b"typed message\n\x04")
    assert t.finish() == 0
    vault.ok("verify", "--key", "s", "--signature", tmp_path / "sig", input=b"typed message\n")


def test_encrypt_from_a_terminal_says_it_is_waiting_and_one_ctrl_d_ends_the_input(vault, tmp_path):
    vault.ok("key", "create", "k")
    t = Term(vault, "encrypt", "--key", "k", "-o", tmp_path / "c", stdin="tty", stdout="pipe", stderr="tty")
    t.expect(b"kms-cli: waiting for the plaintext on standard input (a terminal)")
    t.send(b"first line\nsecond line\n\x04")
    assert t.finish() == 0
    assert vault.ok("decrypt", "-i", tmp_path / "c").out == b"first line\nsecond line\n"


def test_inject_and_import_from_a_terminal_say_they_are_waiting(vault):
    vault.ok("secret", "put", "db", input=b"pw")
    t = Term(vault, "inject", stdin="tty", stdout="pipe", stderr="tty")
    t.expect(b"kms-cli: waiting for the template on standard input (a terminal)")
    t.send(b"password={{ kms://db }}\n\x04")
    assert t.finish() == 0 and t.out == b"password=pw\n"
    t = Term(vault, "secret", "import", "-", stdin="tty", stdout="pipe", stderr="tty")
    t.expect(b"kms-cli: waiting for the dotenv lines on standard input (a terminal)")
    t.send(b"TOKEN=abc\n\x04")
    assert t.finish() == 0
    assert vault.ok("secret", "get", "TOKEN").out == b"abc"
