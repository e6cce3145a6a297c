"""Nothing left behind (issue 10, section 4): signals during `-o` outputs and backups, and the files a
SIGKILLed kms-cli leaves (temporary outputs, backup copies, exec's env file), removed by the next command."""

import glob
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from kmshelp import children

MiB = 1 << 20
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE]


def alive(pid: int) -> bool:
    """Running (not a zombie) with this pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def temps(directory) -> list[str]:
    return sorted(glob.glob(os.path.join(str(directory), ".kms-cli-*")))


def pending(kms) -> list[str]:
    d = os.path.join(kms.env["HOME"], ".local", "state", "kms-cli", "pending")
    return os.listdir(d) if os.path.isdir(d) else []


def wait_until(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def popen(kms, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "kms_cli", *args], env=kms.env, cwd=kms.tmp,
                            stderr=subprocess.PIPE, **kw)


def streaming(kms, p) -> list[int]:
    """Wait until `p` writes its temporary output and runs its worker processes; return the workers."""
    def ready():
        t = temps(kms.tmp)
        if p.poll() is not None:
            raise AssertionError(f"kms-cli ended (exit {p.returncode}) before it could be signalled")
        return t and os.path.getsize(t[0]) > 0 and children(p.pid)
    return wait_until(ready, what="the temporary output and the workers")


def assert_clean_exit(kms, p, sig, workers, out):
    code = p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert code == 128 + sig, err
    assert err.splitlines() == [f"kms-cli: error: terminated by {signal.Signals(sig).name}"]
    assert temps(kms.tmp) == [], "the temporary file stayed behind"
    assert not os.path.exists(out)
    assert [w for w in workers if alive(w)] == [], "a worker process outlived kms-cli"
    assert pending(kms) == []


@pytest.fixture
def keyed(vault):
    vault.ok("key", "create", "k")
    return vault


@pytest.fixture(scope="module")
def big_ciphertext(tmp_path_factory):
    """A directory with a vault and zeros.kms, 200 MiB of zeros encrypted under its key k."""
    from kmshelp import Kms, base_env

    tmp = tmp_path_factory.mktemp("big")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("key", "create", "k")
    with open(tmp / "zeros", "wb") as f:
        f.truncate(200 * MiB)  # sparse: no disk, read as zeros
    kms.ok("encrypt", "--key", "k", "-i", "zeros", "-o", "zeros.kms", timeout=300)
    os.unlink(tmp / "zeros")
    return tmp


# -- signals while a temporary output exists ------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_encrypt_of_a_large_file(keyed, tmp_path, sig):
    with open(tmp_path / "zeros", "wb") as f:
        f.truncate(200 * MiB)
    out = tmp_path / "zeros.kms"
    p = popen(keyed, "encrypt", "--key", "k", "-i", "zeros", "-o", str(out))
    workers = streaming(keyed, p)
    p.send_signal(sig)
    assert_clean_exit(keyed, p, sig, workers, out)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_decrypt_of_a_large_file(kms, big_ciphertext, sig):
    out = kms.tmp / "plain"
    p = popen(kms, "--vault", str(big_ciphertext / "vault.db"), "decrypt", "-i", str(big_ciphertext / "zeros.kms"),
              "-o", str(out))
    workers = streaming(kms, p)
    p.send_signal(sig)
    assert_clean_exit(kms, p, sig, workers, out)


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_while_waiting_for_more_input(keyed, tmp_path, command, sig):
    """Input from a pipe, 16 MiB of it, then nothing: kms-cli waits in read(2) with its workers running."""
    feed = bytes(16 * MiB)
    if command == "decrypt":
        feed = keyed.ok("encrypt", "--key", "k", input=bytes(24 * MiB)).out[: 16 * MiB]
    args = ["encrypt", "--key", "k"] if command == "encrypt" else ["decrypt"]
    out = tmp_path / "out"
    p = popen(keyed, *args, "-o", str(out), stdin=subprocess.PIPE)
    p.stdin.write(feed)
    p.stdin.flush()
    workers = streaming(keyed, p)
    p.send_signal(sig)
    try:
        p.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass  # it landed just before read(2) blocked: Python acts on it once the read returns (see leftovers)
    p.stdin.close()  # end of input: without the signal, encrypt would now succeed and decrypt fail with 5
    assert_clean_exit(keyed, p, sig, workers, out)


# -- SIGKILL: the next command removes what was ours and provably stale ---------------------------


def test_temp_output_of_a_killed_decrypt_is_removed_by_the_next_command(keyed, tmp_path):
    ct = keyed.ok("encrypt", "--key", "k", input=b"plaintext " * (3 * MiB)).out
    p = popen(keyed, "decrypt", "-o", "plain", stdin=subprocess.PIPE)
    p.stdin.write(ct[: len(ct) // 2])
    p.stdin.flush()
    wait_until(lambda: temps(tmp_path) and os.path.getsize(temps(tmp_path)[0]) > 0, what="plaintext in the temp file")
    # a second command while the first one runs: its file is live and stays
    keyed.ok("key", "list")
    assert len(temps(tmp_path)) == 1
    p.kill()
    p.wait()
    p.stdin.close()
    [left] = temps(tmp_path)
    assert b"plaintext" in open(left, "rb").read()
    keyed.ok("key", "list")  # any command
    assert temps(tmp_path) == [] and pending(keyed) == []
    assert not (tmp_path / "plain").exists()


def test_a_file_put_at_a_stale_path_since_is_left_alone(keyed, tmp_path):
    ct = keyed.ok("encrypt", "--key", "k", input=bytes(8 * MiB)).out
    p = popen(keyed, "decrypt", "-o", "plain", stdin=subprocess.PIPE)
    p.stdin.write(ct[: 6 * MiB])
    p.stdin.flush()
    wait_until(lambda: temps(tmp_path) and os.path.getsize(temps(tmp_path)[0]) > 0, what="the temp file")
    p.kill()
    p.wait()
    p.stdin.close()
    [left] = temps(tmp_path)
    os.unlink(left)
    with open(left, "wb") as f:  # the user's own file now, at the very same name
        f.write(b"mine")
    keyed.ok("key", "list")
    assert open(left, "rb").read() == b"mine"
    assert pending(keyed) == []


# -- backup -o --------------------------------------------------------------------------------------


def _bulk_up(kms, mib: int) -> None:
    """Make the vault file large (a table kms-cli never reads), so that copying it takes a while."""
    db = sqlite3.connect(kms.vault, isolation_level=None)
    db.execute("CREATE TABLE ballast (b BLOB)")
    db.execute(f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {mib}) "
               "INSERT INTO ballast SELECT zeroblob(1048576) FROM c")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_during_backup_removes_the_copy_and_its_journal(vault, tmp_path, sig):
    _bulk_up(vault, 200)
    p = popen(vault, "backup", "-o", "b.db")
    wait_until(lambda: temps(tmp_path) and os.path.getsize(temps(tmp_path)[0]) > 0, what="the backup copy")
    p.send_signal(sig)
    code = p.wait(timeout=120)
    assert code == 128 + sig, p.stderr.read().decode()
    assert temps(tmp_path) == [] and not (tmp_path / "b.db").exists()
    assert pending(vault) == []


def test_backup_killed_leaves_nothing_after_the_next_command(vault, tmp_path):
    _bulk_up(vault, 200)
    p = popen(vault, "backup", "-o", "b.db")
    wait_until(lambda: temps(tmp_path) and os.path.getsize(temps(tmp_path)[0]) > 0, what="the backup copy")
    p.kill()
    p.wait()
    assert temps(tmp_path)  # the copy (and, mid-copy, its -journal)
    vault.ok("key", "list")
    assert temps(tmp_path) == [] and pending(vault) == []
    vault.ok("backup", "-o", "b.db")  # and a backup works as usual afterwards
    assert temps(tmp_path) == []


# -- exec --env-file-out ------------------------------------------------------------------------------


def test_env_file_of_a_killed_exec_is_removed_once_its_child_is_gone(vault, tmp_path):
    vault.ok("secret", "put", "app/token", input=b"tok-4242")
    info, outdir = tmp_path / "info", tmp_path / "envdir"
    outdir.mkdir()
    script = f'echo "$$ $KMS_CLI_ENV_FILE" > {info}.new && mv {info}.new {info} && exec sleep 120'
    p = popen(vault, "exec", "-s", "app/token", "--env-file-out", str(outdir), "--", "sh", "-c", script)
    wait_until(info.exists, what="the child")
    child, env_file = info.read_text().split()
    child = int(child)
    try:
        assert "tok-4242" in open(env_file).read()
        p.kill()  # SIGKILL: kms-cli cannot remove the file itself
        p.wait()
        assert os.path.exists(env_file)
        vault.ok("key", "list")
        assert os.path.exists(env_file), "removed while the child still runs"
    finally:
        os.kill(child, signal.SIGKILL)
    wait_until(lambda: not alive(child), what="the child's end")
    vault.ok("key", "list")  # any command
    assert not os.path.exists(env_file)
    assert os.listdir(outdir) == []  # the private directory kms-cli made in it too
    assert pending(vault) == []
