"""The runner: environment building and masking in-process; exec, signals, env file and masking
through real processes (runner_harness.py plays kms-cli)."""

import base64
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import dotenv as pydotenv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_cli import runner
from kms_cli.errors import AlreadyExistsError, UsageError
from kms_cli.masking import Masker, mask_patterns
from kms_cli.runner import build_env
from kms_cli.secretvalue import SecretValue

HARNESS = Path(__file__).with_name("runner_harness.py")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-7f1c9a 'q' \"d\" $HOME `id` \\ #x\nline2 ✓"
TOKEN = "kmsTok3n-9b2f6d0e1a"  # a value distinctive enough to grep /proc for

# -- build_env


def test_build_env_adds_scrubs_and_keeps():
    base = {"PATH": "/bin", "KMS_CLI_MASTER_KEY": "k", "KMS_CLI_PASSPHRASE": "p", "KMS_CLI_UNLOCK": "u",
            "PIN_VAR": "1234", "OTHER": "x"}
    env = build_env(base, {"API": SecretValue(b"v")}, scrub=["PIN_VAR"], warn=pytest.fail)
    assert env == {"PATH": "/bin", "OTHER": "x", "API": "v"}


def test_build_env_pristine_allowlist():
    base = {k: "1" for k in ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL",
                             "LC_CTYPE", "TZ", "TMPDIR", "AWS_SECRET_ACCESS_KEY", "LD_PRELOAD", "XLC_X")}
    env = build_env(base, {"S": SecretValue(b"v")}, pristine=True, warn=pytest.fail)
    assert set(env) == {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE",
                        "TZ", "TMPDIR", "S"}


def test_build_env_overwrite_warns_with_name_not_value():
    warnings = []
    env = build_env({"DB": "old"}, {"DB": SecretValue(b"new-secret")}, warn=warnings.append)
    assert env["DB"] == "new-secret"
    assert len(warnings) == 1 and "DB" in warnings[0]
    assert "new-secret" not in warnings[0] and "old" not in warnings[0]


def test_build_env_no_clobber_is_exit_8():
    with pytest.raises(AlreadyExistsError) as exc:
        build_env({"DB": "old"}, {"DB": SecretValue(b"new")}, no_clobber=True)
    assert exc.value.exit_code == 8 and "DB" in exc.value.message and "new" not in exc.value.message
    # a scrubbed or non-allowlisted variable is not in the way
    build_env({"KMS_CLI_UNLOCK": "x"}, {"KMS_CLI_UNLOCK": SecretValue(b"y")}, no_clobber=True)
    build_env({"DB": "old"}, {"DB": SecretValue(b"y")}, no_clobber=True, pristine=True)


def test_build_env_non_utf8_round_trips_and_nul_refused():
    env = build_env({}, {"BIN": SecretValue(b"\xff\xfe ok")})
    assert os.fsencode(env["BIN"]) == b"\xff\xfe ok"
    with pytest.raises(UsageError) as exc:
        build_env({}, {"NUL": SecretValue(b"a\0b")})
    assert "NUL" in exc.value.message
    with pytest.raises(UsageError):
        build_env({}, {"BAD-NAME": SecretValue(b"x")})


# -- masking, in-process


def masked(patterns, chunks):
    m = Masker(patterns)
    return b"".join(m.feed(c) for c in chunks) + m.flush()


def reference_mask(patterns, data):
    """Union of all occurrences, overlapping ones merged, each merged run -> ***."""
    spans = sorted((i, i + len(p)) for p in patterns for i in range(len(data)) if data.startswith(p, i))
    out, pos, cur = [], 0, None
    for s, e in spans:
        if cur and s < cur[1]:
            cur[1] = max(cur[1], e)
            continue
        if cur:
            out.append(data[pos:cur[0]] + b"***")
            pos = cur[1]
        cur = [s, e]
    if cur:
        out.append(data[pos:cur[0]] + b"***")
        pos = cur[1]
    return b"".join(out) + data[pos:]


def test_masker_every_split_point():
    pats = [b"hunter2"]
    data = b"pw=hunter2; again hunter2hunter2 and hunte"
    expected = b"pw=***; again ****** and hunte"
    assert masked(pats, [data]) == expected
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert masked(pats, [data[:i], data[i:j], data[j:]]) == expected
    assert masked(pats, [bytes([b]) for b in data]) == expected


def test_masker_holds_only_a_possible_prefix():
    m = Masker([b"secret"])
    assert m.feed(b"prompt> ") == b"prompt> " and m.held == 0
    assert m.feed(b"value: sec") == b"value: " and m.held == 3
    assert m.feed(b"ond") == b"second"
    assert m.feed(b"se") == b"" and m.feed(b"cret!") == b"***!"
    assert m.feed(b"s") == b"" and m.flush() == b"s"


def test_masker_longest_and_overlapping_values():
    pats = [b"abc", b"abcdef", b"defgh"]
    assert masked(pats, [b"xabcdefghy"]) == b"x***y"
    assert masked(pats, [b"xab", b"cd", b"efg", b"hy"]) == b"x***y"
    assert masked(pats, [b"xabcx"]) == b"x***x"
    assert masked([], [b"abc", b"def"]) == b"abcdef"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=5), min_size=1, max_size=3),
    st.lists(st.binary(max_size=6), max_size=8),
    st.data(),
)
def test_masker_streaming_equals_batch(patterns, fillers, data):
    parts = []
    for f in fillers:
        parts += [f, data.draw(st.sampled_from(patterns))]
    text = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    assert masked(patterns, chunks) == reference_mask(patterns, text)


def test_mask_patterns_forms():
    value = b"p@ss w/rd:\xc3\xa9!"
    pats = set(mask_patterns([SecretValue(value + b"\n")]))
    for form in (
        value + b"\n",
        value,
        base64.b64encode(value),
        base64.b64encode(value).rstrip(b"="),
        base64.urlsafe_b64encode(value),
        quote(value, safe="").encode(),
        quote(value, safe="").lower().encode(),
        quote_plus(value).encode(),
    ):
        assert form in pats
    assert b"" not in pats and mask_patterns([b""]) == []


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_mask_base64_inside_longer_base64(offset):
    value = b"correct horse battery staple"
    encoded = base64.b64encode(b"user:" + b"x" * offset + value + b":tail")
    out = masked(mask_patterns([value]), [encoded])
    assert b"***" in out
    assert len(out) < len(encoded) - 20  # the value's part of the encoding is gone


# -- through processes


def _spec(tmp_path, argv, *, secrets=None, mask=False, env_file=None, **extra):
    spec = tmp_path / f"spec-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps({
        "argv": argv,
        "secrets": {k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode()
                    for k, v in (secrets or {}).items()},
        "mask": mask,
        "env_file": None if env_file is None else str(env_file),
        **extra,
    }))
    return spec


def harness(tmp_path, argv, *, env=None, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, popen=None, **spec):
    environ = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.Popen(
        [sys.executable, str(HARNESS), str(_spec(tmp_path, argv, **spec))],
        env=environ, stdin=stdin, stdout=stdout, stderr=stderr, **(popen or {}),
    )


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("timed out")


MODES = {
    "exec": {},
    "env-file": {"env_file": "DIR"},
    "mask": {"mask": True},
}


def mode_kwargs(mode, tmp_path):
    kwargs = dict(MODES[mode])
    if kwargs.get("env_file") == "DIR":
        kwargs["env_file"] = tmp_path
    return kwargs


@pytest.mark.parametrize("mode", list(MODES))
def test_exit_codes(tmp_path, mode):
    kw = mode_kwargs(mode, tmp_path)
    noexec = tmp_path / "noexec.sh"
    noexec.write_text("#!/bin/sh\nexit 0\n")
    noexec.chmod(0o644)
    cases = [
        (["sh", "-c", "exit 0"], 0, None),
        (["sh", "-c", "exit 7"], 7, None),
        ([str(noexec)], 126, "permission denied"),
        (["no-such-command-kms"], 127, "command not found"),
        ([str(tmp_path / "missing")], 127, "no such file"),
        (["sh", "-c", "kill -TERM $$"], -15 if mode == "exec" else 143, None),
    ]
    procs = [(harness(tmp_path, argv, **kw), code, err) for argv, code, err in cases]
    for proc, code, err in procs:
        _out, stderr = proc.communicate(timeout=10)
        assert proc.returncode == code, (proc.args, stderr)
        if err:
            lines = stderr.decode().splitlines()
            assert len(lines) == 1 and lines[0].startswith("kms-cli: error: ") and err in lines[0]


@pytest.mark.parametrize("mode,code", [("exec", -signal.SIGPIPE), ("env-file", 128 + signal.SIGPIPE)])
def test_child_gets_default_sigpipe(tmp_path, mode, code):
    # Python ignores SIGPIPE; the child must not inherit that (`yes | head` must end `yes`).
    proc = harness(tmp_path, ["yes"], **mode_kwargs(mode, tmp_path))
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == code and b"Broken pipe" not in err


def test_missing_command_is_usage_error():
    with pytest.raises(UsageError) as exc:
        runner.run([], {})
    assert exc.value.exit_code == 2


def test_exec_passes_environment_and_arguments_literally(tmp_path):
    proc = harness(tmp_path, ["printenv", "SECRET"], secrets={"SECRET": SECRET},
                   env={"KMS_CLI_MASTER_KEY": "mk", "KMS_CLI_PASSPHRASE": "pp"})
    out, _ = proc.communicate(timeout=10)
    assert out.decode() == SECRET + "\n"
    proc = harness(tmp_path, ["sh", "-c", 'echo "[$KMS_CLI_MASTER_KEY][$KMS_CLI_PASSPHRASE]"; echo "$@"',
                              "sh", "$HOME", "&&", "`id`"])
    out, _ = proc.communicate(timeout=10)
    assert out.decode() == "[][]\n$HOME && `id`\n"


TRAP = (
    'trap \'echo "got $1" > "$MARK"; exit 3\' {sig}; echo ready > "$READY"; '
    "while :; do sleep 0.02; done"
)


@pytest.mark.parametrize(
    "mode,sig",
    [("exec", signal.SIGTERM)]
    + [(m, s) for m in ("env-file", "mask") for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)],
)
def test_signal_to_kms_cli_reaches_child(tmp_path, mode, sig):
    mark, ready = tmp_path / "mark", tmp_path / "ready"
    name = signal.Signals(sig).name[3:]
    proc = harness(tmp_path, ["sh", "-c", TRAP.replace("{sig}", name), "sh", name],
                   env={"MARK": str(mark), "READY": str(ready)}, **mode_kwargs(mode, tmp_path))
    wait_for(ready.exists)
    proc.send_signal(sig)
    proc.communicate(timeout=10)
    assert proc.returncode == 3
    assert mark.read_text() == f"got {name}\n"


@pytest.mark.parametrize("how", ["kill-child", "sigterm-kms", "sigint-kms"])
@pytest.mark.parametrize("target", ["dir", "file"])
def test_env_file_lifetime(tmp_path, how, target):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env_file = out_dir if target == "dir" else out_dir / "app.env"
    # no quote: dotenv refuses a value with both ' and $ or a backtick (kms_cli/dotenv.py)
    secrets = {"SECRET": SECRET.replace("'", ""), "TOKEN": TOKEN}
    script = 'echo "$$ $KMS_CLI_ENV_FILE"; while :; do sleep 0.02; done'
    proc = harness(tmp_path, ["sh", "-c", script], secrets=secrets, env_file=env_file)
    line = proc.stdout.readline().decode().split()
    child_pid, path = int(line[0]), Path(line[1])
    assert path.is_absolute() and path.exists()
    assert path.stat().st_mode & 0o777 == 0o600
    if target == "dir":
        assert path.parent.parent == out_dir and path.parent.stat().st_mode & 0o777 == 0o700
    else:
        assert path == env_file
    assert pydotenv.dotenv_values(path, interpolate=False) == secrets
    if how == "kill-child":
        os.kill(child_pid, signal.SIGKILL)
        expected = 128 + 9
    elif how == "sigterm-kms":
        proc.send_signal(signal.SIGTERM)
        expected = 128 + 15
    else:
        proc.send_signal(signal.SIGINT)
        expected = 128 + 2
    proc.communicate(timeout=10)
    assert proc.returncode == expected
    assert not path.exists()
    assert list(out_dir.iterdir()) == []


def test_env_file_refuses_existing_file(tmp_path):
    existing = tmp_path / "keep.env"
    existing.write_text("KEEP=1\n")
    proc = harness(tmp_path, ["true"], secrets={"A": "x"}, env_file=existing)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 8 and b"already exists" in err
    assert existing.read_text() == "KEEP=1\n"


PIECES = r"""
import base64, os, sys, time, urllib.parse
v = os.environ["SECRET"]
def slow(stream, text):
    for i in range(0, len(text), 4):
        stream.write(text[i:i + 4]); stream.flush(); time.sleep(0.02)
slow(sys.stdout, "out:" + v + ":end\n")
slow(sys.stderr, "err:" + v + ":end\n")
b = v.encode()
print("b64:" + base64.b64encode(b).decode())
print("url:" + base64.urlsafe_b64encode(b).decode().rstrip("="))
print("pct:" + urllib.parse.quote(v, safe=""))
print("plain line")
"""


def test_mask_hides_value_printed_in_pieces(tmp_path):
    proc = harness(tmp_path, [sys.executable, "-c", PIECES], secrets={"SECRET": SECRET}, mask=True)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.decode() == "out:***:end\nb64:***\nurl:***\npct:***\nplain line\n"
    assert err.decode() == "err:***:end\n"


def test_mask_does_not_hold_back_ordinary_output(tmp_path):
    script = 'printf "prompt> "; sleep 2; printf "done\\n"'
    proc = harness(tmp_path, ["sh", "-c", script], secrets={"SECRET": "secret-value"}, mask=True,
                   popen={"start_new_session": True})
    ready, _, _ = select.select([proc.stdout], [], [], 1.5)
    assert ready, "the prompt was held back"
    assert os.read(proc.stdout.fileno(), 100) == b"prompt> "
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_mask_when_reader_goes_away(tmp_path):
    script = "i=0; while [ $i -lt 100000 ]; do echo line; i=$((i+1)); done; echo finished >&2"
    proc = harness(tmp_path, ["sh", "-c", script], secrets={"S": "zzz"}, mask=True)
    assert proc.stdout.readline() == b"line\n"
    proc.stdout.close()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGPIPE  # the child died writing, as it would into a closed pipe
    assert b"finished" not in err


def test_no_secret_in_any_cmdline(tmp_path):
    ready = tmp_path / "ready"
    procs = []
    for kw in ({}, {"mask": True}, {"env_file": tmp_path}):
        procs.append(harness(tmp_path, ["sh", "-c", 'echo x > "$READY"; sleep 5'], secrets={"TOKEN": TOKEN},
                             env={"READY": str(ready)}, popen={"start_new_session": True}, **kw))
        wait_for(ready.exists)
        ready.unlink()
    seen_child_env = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        assert TOKEN.encode() not in cmdline, cmdline
        try:
            seen_child_env |= TOKEN.encode() in (entry / "environ").read_bytes()
        except OSError:
            pass
    assert seen_child_env  # the children do have it, in their environment
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


# -- terminals


def _pty(rows=33, cols=101):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def _read_until(fd, needle, timeout=5.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def _controlling(fd):
    def setup():
        os.setsid()
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    return setup


TTY_CHILD = r"""
import os, sys
print("tty", os.isatty(0), os.isatty(1), os.isatty(2), os.get_terminal_size(1))
print("\x1b[31mred\x1b[0m", os.environ["SECRET"])
print("prompt>", end=" ", flush=True)
line = sys.stdin.readline().strip()
print("read", line, file=sys.stderr)
"""


def test_mask_gives_the_child_a_terminal(tmp_path):
    master, slave = _pty()
    proc = harness(tmp_path, [sys.executable, "-c", TTY_CHILD], secrets={"SECRET": SECRET.replace("\n", "")},
                   mask=True, stdin=slave, stdout=slave, stderr=slave, popen={"preexec_fn": _controlling(slave)})
    os.close(slave)
    out = _read_until(master, b"prompt> ")
    os.write(master, b"hello\r")
    out += _read_until(master, b"read hello")
    proc.wait(timeout=10)
    os.close(master)
    text = out.decode()
    assert proc.returncode == 0
    assert "tty True True True os.terminal_size(columns=101, lines=33)" in text
    assert "\x1b[31mred\x1b[0m ***" in text
    assert "read hello" in text
    assert "s3cr3t" not in text


def test_terminal_signals_are_not_forwarded_twice(monkeypatch):
    sent = []
    monkeypatch.setattr(runner.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    sup = runner._Supervisor("/bin/true", ["true"], {}, patterns=None, env_file=None, dotenv_text="",
                             report=print)
    sup.pid = 4242
    sup._on_signal(signal.SIGINT, True)  # Ctrl-C: the terminal signalled our process group
    sup._on_signal(signal.SIGWINCH, True)
    assert sent == []
    sup._on_signal(signal.SIGINT, False)  # kill(2) aimed at kms-cli
    sup._on_signal(signal.SIGCHLD, False)
    assert sent == [(4242, signal.SIGINT)]
    sup.own_session = True  # the child has its own session and terminal: forward terminal signals too
    sup._on_signal(signal.SIGQUIT, True)
    assert sent[-1] == (4242, signal.SIGQUIT)


def test_ctrl_c_reaches_a_child_in_its_terminal_once(tmp_path):
    # No --mask: the child shares kms-cli's terminal and process group; the terminal's
    # SIGINT reaches both, and kms-cli must not send a second one.
    script = ('trap "c=\\$((c+1))" INT; c=0; echo ready; i=0; '
              'while [ $i -lt 15 ]; do sleep 0.02; i=$((i+1)); done; echo "count=$c"')
    master, slave = _pty()
    proc = harness(tmp_path, ["sh", "-c", script], env_file=tmp_path, stdin=slave, stdout=slave,
                   stderr=slave, popen={"preexec_fn": _controlling(slave)})
    os.close(slave)
    assert b"ready" in _read_until(master, b"ready")
    os.write(master, b"\x03")
    out = _read_until(master, b"count=")
    out += _read_until(master, b"\n", timeout=1)
    proc.wait(timeout=10)
    os.close(master)
    assert b"count=1" in out


def test_ctrl_c_in_masked_terminal_reaches_child(tmp_path):
    script = 'trap "echo interrupted; exit 5" INT; echo ready; while :; do sleep 0.02; done'
    master, slave = _pty()
    proc = harness(tmp_path, ["sh", "-c", script], secrets={"S": "zzz"}, mask=True, stdin=slave,
                   stdout=slave, stderr=slave, popen={"preexec_fn": _controlling(slave)})
    os.close(slave)
    assert b"ready" in _read_until(master, b"ready")
    os.write(master, b"\x03")
    out = _read_until(master, b"interrupted")
    proc.wait(timeout=10)
    os.close(master)
    assert b"interrupted" in out
    assert proc.returncode == 5


def test_mask_terminal_output_with_piped_input(tmp_path):
    # stdout is a terminal, stdin is not: the child gets a pty for its output only and
    # stays in kms-cli's process group (Ctrl-C from the terminal reaches it directly).
    child = ('import os, sys; print(os.isatty(0), os.isatty(1), os.get_terminal_size(1).columns, '
             'os.getpgrp() == os.getppid() or os.getpgrp(), sys.stdin.read().strip(), os.environ["SECRET"])')
    master, slave = _pty(cols=77)
    proc = harness(tmp_path, [sys.executable, "-c", child], secrets={"SECRET": "abc-secret"}, mask=True,
                   stdin=subprocess.PIPE, stdout=slave, stderr=slave, popen={"preexec_fn": _controlling(slave)})
    os.close(slave)
    proc.stdin.write(b"from pipe abc-secret\n")
    proc.stdin.close()
    out = _read_until(master, b"***\r\n")
    proc.wait(timeout=10)
    os.close(master)
    assert proc.returncode == 0
    assert out == b"False True 77 True from pipe *** ***\r\n"


def _state(pid):
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_z_in_masked_terminal_stops_and_fg_resumes(tmp_path):
    # A real interactive shell does the job control, as for a user at a terminal.
    pidfile = tmp_path / "pid"
    script = 'echo $$ > "$PIDFILE"; echo ready; sleep 0.4; echo resumed'
    spec = _spec(tmp_path, ["sh", "-c", script], secrets={"S": "zzz"}, mask=True)
    master, slave = _pty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PIDFILE=str(pidfile), PS1="$ ", TERM="dumb")
    shell = subprocess.Popen(["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave, stderr=slave,
                             env=env, preexec_fn=_controlling(slave))
    os.close(slave)
    try:
        os.write(master, f"{sys.executable} {HARNESS} {spec}\r".encode())
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x1a")
        assert b"Stopped" in _read_until(master, b"Stopped")
        child = int(pidfile.read_text())
        wait_for(lambda: _state(child) == "T", timeout=2)  # the child is stopped too, not running unseen
        os.write(master, b"fg\r")
        out = _read_until(master, b"resumed")
        assert b"resumed" in out
        out = _read_until(master, b"$ ")  # the prompt: kms-cli is done with the terminal
        os.write(master, b"echo rc=$?\r")
        out = _read_until(master, b"rc=0")
        assert b"rc=0" in out
    finally:
        os.write(master, b"exit\r")
        try:
            shell.wait(timeout=2)
        except subprocess.TimeoutExpired:
            shell.kill()
            shell.wait()
        os.close(master)
