"""A vault on a real PostgreSQL server, through the real CLI (spec section 8, issue 15).

Concurrent writers from many processes, a client SIGKILLed inside a large import, the server
stopped in the middle of a command and restarted between two, an unreachable or silent server, a
password refused in the URI, TLS with verify-full, statements bounded by KMS_CLI_TIMEOUT, and two
vaults in one database. Every server is real (tests/servers/postgres.py); nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kmshelp import Kms, base_env

pytestmark = pytest.mark.server

PUT = [sys.executable, "-m", "kms_cli", "secret", "put"]


# -- helpers ---------------------------------------------------------------------------------

def runner(tmp: Path, cluster, uri: str, **env: str) -> Kms:
    """A Kms runner on `uri` with the cluster's PGPASSFILE and its own HOME under `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    e = base_env(tmp)
    e.update(cluster.env, KMS_CLI_VAULT=uri, **env)
    return Kms(tmp, e)


def admin(cluster, db: str = "kms"):
    """A superuser connection over the cluster's Unix socket (autocommit)."""
    import psycopg

    return psycopg.connect(host=cluster.sock, port=cluster.port, user="postgres", dbname=db, autocommit=True)


def schema_of(kms: Kms) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(kms.env["KMS_CLI_VAULT"]).query)["vault"][-1]


def secret_names(kms: Kms) -> set[str]:
    return {s["name"] for s in kms.ok("--json", "secret", "list").json()}


def audit(kms: Kms) -> list[dict]:
    return kms.ok("--json", "audit", "log").json_lines()


def one_line_error(err: str) -> None:
    """A clean failure: `kms-cli: error: ...` (and at most a hint), never a traceback."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("kms-cli: error: "), err
    assert all(l.startswith(("kms-cli: error: ", "kms-cli: hint: ")) for l in lines), err
    assert sum(l.startswith("kms-cli: error: ") for l in lines) == 1, err


def wait_for_write_txn(cluster, proc: subprocess.Popen, timeout: float = 30) -> int:
    """Until a kms-cli session holds a write transaction that has written rows (an xid); the pid
    of its server process."""
    deadline = time.monotonic() + timeout
    with admin(cluster) as conn:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before it was caught writing"
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'kms-cli' "
                               "AND backend_xid IS NOT NULL").fetchone()
            if row:
                return row[0]
            time.sleep(0.02)
    raise AssertionError("no kms-cli write transaction seen")


def dotenv(n: int, tag: str = "") -> bytes:
    return "".join(f"K{i:05d}=value-{tag}{i}\n" for i in range(n)).encode()


# -- 1. concurrent writers: nothing lost, versions without gaps, one chain ----------------------

WRITER = r"""
import io, sys
from kms_cli.cli.entry import run

n, who = int(sys.argv[1]), sys.argv[2]
for i in range(n):  # 25 commands through the CLI's entry point, each its own connection and transaction
    sys.stdin = io.TextIOWrapper(io.BytesIO(f"value-{who}-{i}".encode()))
    code = run(["secret", "put", f"w{who}/s{i}"])
    if code != 0:
        sys.exit(code)
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_and_keep_one_chain(pg_vault, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = [subprocess.Popen([sys.executable, str(script), "25", str(w)], env=pg_vault.env, cwd=tmp_path,
                                stderr=subprocess.PIPE) for w in range(4)]
    # 20 processes racing on one name: each waits on its stdin, then all are released at once
    shared = [subprocess.Popen([*PUT, "shared"], env=pg_vault.env, cwd=tmp_path, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(20)]
    values = {p.pid: f"shared-{p.pid}".encode() for p in shared}
    for p in shared:
        p.stdin.write(values[p.pid])
    for p in shared:
        p.stdin.close()
    for p in shared:
        p.wait(timeout=120)
        assert p.returncode == 0, p.stderr.read().decode()
    for w in writers:
        assert w.wait(timeout=240) == 0, w.stderr.read().decode()

    assert secret_names(pg_vault) == {f"w{w}/s{i}" for w in range(4) for i in range(25)} | {"shared"}
    history = pg_vault.ok("--json", "secret", "history", "shared").json()
    assert sorted(h["version"] for h in history) == list(range(1, 21))

    entries = audit(pg_vault)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    puts = [e for e in entries if e["op"] == "secret.put"]
    assert all(e["result"] == "ok" for e in puts)
    assert sorted((e["target"], e["version"]) for e in puts if e["target"] != "shared") == \
        sorted((f"w{w}/s{i}", 1) for w in range(4) for i in range(25))
    # the shared name: one entry per process (its pid), versions 1..20 each exactly once
    by_version = {e["version"]: e["actor"]["pid"] for e in puts if e["target"] == "shared"}
    assert sorted(by_version) == list(range(1, 21))
    assert set(by_version.values()) == set(values)
    for v in (1, 7, 20):  # the value of a version is what the process that wrote it sent
        assert pg_vault.ok("secret", "get", "shared", "--version", str(v)).out == values[by_version[v]]
    assert pg_vault.ok("secret", "get", "shared").out == values[by_version[20]]
    assert pg_vault.ok("secret", "get", "w3/s24").out == b"value-3-24"
    pg_vault.ok("audit", "verify")


# -- 2. SIGKILL inside a large import: all or nothing --------------------------------------------

@pytest.mark.slow
def test_sigkill_during_a_large_import_leaves_all_or_nothing(pg_vault, pg_cluster, tmp_path):
    pg_vault.ok("secret", "put", "before", input="kept")
    n = 20_000
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "import", "-"], env=pg_vault.env,
                         cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(dotenv(n))
    p.stdin.close()
    wait_for_write_txn(pg_cluster, p)
    time.sleep(0.3)
    assert p.poll() is None, "the import finished before it could be killed: make it larger"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    names = secret_names(pg_vault)
    assert names - {"before"} in (set(), {f"K{i:05d}" for i in range(n)})
    assert "before" in names
    # the dead client's transaction and its lock are gone: the next writer does not wait
    start = time.monotonic()
    pg_vault.ok("secret", "put", "after", input="v", env={"KMS_CLI_TIMEOUT": "5"})
    assert time.monotonic() - start < 10
    pg_vault.ok("audit", "verify")
    ops = [e["op"] for e in audit(pg_vault)]
    assert ops.count("secret.import") == (1 if len(names) > 1 else 0)


# -- a private cluster for the tests that stop the server or turn TLS on -------------------------

@pytest.fixture(scope="module")
def own_cluster(pg_cluster):
    """A second server of our own (the session's stays up for the other tests), database `kms`."""
    from tests.servers.postgres import Cluster

    cluster = Cluster().start()  # in the system's temp dir: the postgres user must reach it
    try:
        cluster.createdb("kms")
        yield cluster
    finally:
        cluster.stop()


def run_import(kms: Kms, n: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "kms_cli", "secret", "import", "-"], env=kms.env, cwd=kms.tmp,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(dotenv(n))
    p.stdin.close()
    p.stdin = None
    return p


# -- 3. the server stops during a command; restarts between two ----------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_stopped_during_a_command_fails_it_cleanly(own_cluster, tmp_path, mode):
    kms = runner(tmp_path, own_cluster, own_cluster.uri("kms", vault=f"stopped_{mode}"))
    kms.ok("init")
    kms.ok("secret", "put", "before", input="kept")
    p = run_import(kms, 20_000)
    try:
        wait_for_write_txn(own_cluster, p)
        own_cluster.stop_server(mode)
        out, err = p.communicate(timeout=60)
    finally:
        own_cluster.start_server()
    err = err.decode()
    assert p.returncode == 7, err
    one_line_error(err)
    # the cause, not what a later attempt on the dead connection said (its audit entry)
    assert "the connection is closed" not in err, err
    assert any(why in err for why in ("terminating connection", "closed the connection")), err
    assert out == b""
    # nothing of the import is there, and the vault (its chain) is whole
    assert secret_names(kms) == {"before"}
    assert kms.ok("secret", "get", "before").out == b"kept"
    kms.ok("audit", "verify")
    assert "secret.import" not in [e["op"] for e in audit(kms)]


@pytest.mark.slow
def test_a_server_that_stops_answering_mid_command_is_bounded_by_the_timeout(own_cluster, tmp_path):
    """The server process serving the command freezes (SIGSTOP: its kernel still acknowledges
    every packet, as with a hung host or a cut with no reset): the server's own statement_timeout
    cannot fire, so the client bounds its wait itself. Exit 7 within a few KMS_CLI_TIMEOUTs."""
    kms = runner(tmp_path, own_cluster, own_cluster.uri("kms", vault="frozen"), KMS_CLI_TIMEOUT="1")
    kms.ok("init")
    p = run_import(kms, 20_000)
    backend = wait_for_write_txn(own_cluster, p)
    os.kill(backend, signal.SIGSTOP)
    start = time.monotonic()
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("the command still waited for the frozen server after 30 s") from None
    finally:
        os.kill(backend, signal.SIGCONT)
    took = time.monotonic() - start
    err = err.decode()
    assert p.returncode == 7, err
    one_line_error(err)
    assert "stopped answering" in err, err
    assert took < 12, took
    assert secret_names(kms) == set()  # the frozen transaction never committed
    kms.ok("audit", "verify")


def test_a_restart_between_two_commands_is_invisible(own_cluster, tmp_path):
    kms = runner(tmp_path, own_cluster, own_cluster.uri("kms", vault="restarted"))
    kms.ok("init")
    kms.ok("secret", "put", "a", input="1")
    own_cluster.stop_server("fast")
    own_cluster.start_server()
    assert kms.ok("secret", "get", "a").out == b"1"
    kms.ok("secret", "put", "a", input="2")
    assert kms.ok("secret", "get", "a").out == b"2"
    kms.ok("audit", "verify")


def test_a_restart_is_invisible_to_commands_the_agent_serves(own_cluster, tmp_path):
    from agenthelp import agent_pids, stop_agent

    kms = runner(tmp_path, own_cluster, own_cluster.uri("kms", vault="restarted_agent"))
    kms.ok("init")
    kms.ok("secret", "put", "a", input="1")
    try:
        kms.ok("unlock")
        assert agent_pids(kms)
        held = lambda: [(v["vault"], v["id"], v["unlocked"]) for v in kms.ok("--json", "agent", "status").json()["vaults"]]  # noqa: E731
        before = held()
        assert len(before) == 1
        assert kms.ok("secret", "get", "a", env={"KMS_CLI_MASTER_KEY": None}).out == b"1"
        own_cluster.stop_server("fast")
        own_cluster.start_server()
        # served by the agent (no master key in this environment): the restart is not seen
        r = kms.ok("secret", "get", "a", env={"KMS_CLI_MASTER_KEY": None})
        assert r.out == b"1" and r.err == ""
        kms.ok("secret", "put", "a", input="2", env={"KMS_CLI_MASTER_KEY": None})
        assert kms.ok("secret", "get", "a", env={"KMS_CLI_MASTER_KEY": None}).out == b"2"
        # the agent still holds the vault it held before the restart (nothing was unlocked again)
        assert held() == before
    finally:
        stop_agent(kms)
    kms.ok("audit", "verify")


# -- 4. an unreachable server: exit 7, nothing changed, no credential shown ----------------------

def test_an_unreachable_server_is_exit_7_without_credentials(tmp_path, pg_cluster):
    from tests.servers import free_port

    port = free_port()
    uri = f"postgresql://kms@127.0.0.1:{port}/kms?vault=gone"
    kms = runner(tmp_path, pg_cluster, uri, PGPASSWORD="pw-in-env-4f1c9a", PGCONNECT_TIMEOUT="2")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args, stdin in ((("init",), None), (("secret", "put", "x"), "value-7e2d"), (("secret", "get", "x"), None),
                        (("audit", "verify"), None)):
        r = kms(*args, input=stdin)
        assert r.code == 7, (args, r.err)
        one_line_error(r.err)
        assert uri in r.err, r.err
        assert "pw-in-env-4f1c9a" not in r.err + r.text
        assert open(pg_cluster.passfile).read().split(":")[-1].strip() not in r.err + r.text
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_server_that_never_answers_is_bounded_by_the_timeout(tmp_path, pg_cluster):
    """A port that accepts connections and says nothing (a hung server, a black hole behind a
    proxy): the connection attempt ends within KMS_CLI_TIMEOUT, exit 7."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        kms = runner(tmp_path, pg_cluster, f"postgresql://kms@127.0.0.1:{port}/kms", KMS_CLI_TIMEOUT="2")
        start = time.monotonic()
        r = kms("secret", "get", "x", timeout=30)
        took = time.monotonic() - start
    finally:
        silent.close()
    assert r.code == 7, r.err
    one_line_error(r.err)
    assert took < 12, took


# -- 5. a password inside the URI is refused and never echoed ------------------------------------

@pytest.mark.parametrize("form", ["userinfo", "query", "sslpassword"])
def test_a_password_in_the_uri_is_refused_and_never_shown(tmp_path, pg_cluster, form):
    pw = "S3cr3t-pw-91ab"
    host = f"127.0.0.1:{pg_cluster.port}"
    uri = {"userinfo": f"postgresql://kms:{pw}@{host}/kms?vault=pw",
           "query": f"postgresql://kms@{host}/kms?password={pw}&vault=pw",
           "sslpassword": f"postgres://kms@{host}/kms?sslpassword={pw}"}[form]
    kms = runner(tmp_path, pg_cluster, uri)
    for args, via_flag in ((("init",), False), (("secret", "get", "x"), False), (("secret", "list"), True),
                           (("--json", "secret", "list"), False)):
        if via_flag:
            r = kms("--vault", uri, *args, env={"KMS_CLI_VAULT": None})
        else:
            r = kms(*args)
        assert r.code == 2, (args, r.err)
        if "--json" not in args:
            one_line_error(r.err)
            hint = r.err.split("kms-cli: hint: ", 1)[1]
            for where in ("PGPASSWORD", ".pgpass", "PGPASSFILE"):
                assert where in hint, r.err
        assert pw not in r.err and pw.encode() not in r.out, r.err
    # nothing was created on the server
    with admin(pg_cluster) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pw'").fetchone()[0] == 0
    # and the hint's way works: the same URI without the password, the password in PGPASSWORD
    ok = f"postgresql://kms@{host}/kms?vault=pwok_{form}"
    kms.ok("init", env={"KMS_CLI_VAULT": ok, "PGPASSFILE": str(tmp_path / "none"), "PGPASSWORD": pg_cluster.password})


# -- 6. TLS: verify-full with the right CA works, a wrong CA is exit 7 ----------------------------

def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=kms-cli test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


@pytest.fixture(scope="module")
def tls(own_cluster, tmp_path_factory):
    """own_cluster with ssl=on: a server certificate for 127.0.0.1 from our CA; database `tlsonly`
    refuses connections without TLS. Returns the directory holding ca.pem and other-ca.pem."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf", cwd=d)
    for f in ("server.crt", "server.key"):
        dst = os.path.join(own_cluster.data, f)
        shutil.copy(d / f, dst)
        os.chmod(dst, 0o600)
        if os.geteuid() == 0:
            shutil.chown(dst, "postgres", "postgres")
    hba = os.path.join(own_cluster.data, "pg_hba.conf")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:
        f.write("hostnossl tlsonly all 127.0.0.1/32 reject\n" + rules)
    own_cluster.createdb("tlsonly")
    own_cluster.psql("ALTER SYSTEM SET ssl = on")
    own_cluster.psql("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
    own_cluster.psql("ALTER SYSTEM SET ssl_key_file = 'server.key'")
    own_cluster.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while own_cluster.psql("SHOW ssl").strip() != "on":
        assert time.monotonic() < deadline, "the server did not turn TLS on (see its server.log)"
        time.sleep(0.1)
    return d


def test_tls_verify_full_with_the_servers_ca(own_cluster, tls, tmp_path):
    uri = own_cluster.uri("tlsonly", vault="tls", sslmode="verify-full", sslrootcert=str(tls / "ca.pem"))
    kms = runner(tmp_path, own_cluster, uri)
    kms.ok("init")
    kms.ok("secret", "put", "over/tls", input="encrypted in transit")
    assert kms.ok("secret", "get", "over/tls").out == b"encrypted in transit"
    kms.ok("audit", "verify")
    # the database refuses clear-text connections: the commands above did run over TLS
    r = kms("secret", "get", "over/tls", env={"KMS_CLI_VAULT": own_cluster.uri("tlsonly", vault="tls",
                                                                               sslmode="disable")})
    assert r.code == 7, r.err
    one_line_error(r.err)


@pytest.mark.parametrize("how", ["wrong CA", "no such CA file"])
def test_tls_with_a_wrong_ca_is_exit_7(own_cluster, tls, tmp_path, how):
    ca = tls / ("other-ca.pem" if how == "wrong CA" else "missing.pem")
    uri = own_cluster.uri("tlsonly", vault="tls_wrong", sslmode="verify-full", sslrootcert=str(ca))
    kms = runner(tmp_path, own_cluster, uri)
    for args in (("init",), ("secret", "get", "x")):
        r = kms(*args)
        assert r.code == 7, r.err
        one_line_error(r.err)
        assert "postgresql://kms@127.0.0.1" in r.err
    with admin(own_cluster, "tlsonly") as conn:  # nothing was created
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'tls_wrong'").fetchone()[0] == 0


# -- 7. KMS_CLI_TIMEOUT bounds a statement; writers queue behind the vault's lock ----------------

@pytest.mark.slow
def test_a_blocked_statement_fails_within_the_timeout(pg_vault, pg_cluster):
    pg_vault.ok("secret", "put", "x", input="1")
    with admin(pg_cluster) as conn, conn.transaction():
        conn.execute(f'LOCK TABLE "{schema_of(pg_vault)}".secrets IN ACCESS EXCLUSIVE MODE')
        for args, stdin in ((("secret", "get", "x"), None), (("secret", "put", "x"), "2"),
                            (("secret", "list"), None)):
            start = time.monotonic()
            r = pg_vault(*args, input=stdin, env={"KMS_CLI_TIMEOUT": "1.5"}, timeout=60)
            took = time.monotonic() - start
            assert r.code == 7, (args, r.err)
            one_line_error(r.err)
            assert "in time" in r.err, r.err
            assert took < 10, (args, took)
    assert pg_vault.ok("secret", "get", "x").out == b"1"  # the put that timed out changed nothing
    pg_vault.ok("audit", "verify")


@pytest.mark.slow
def test_a_writer_waits_for_another_writers_transaction(pg_vault, pg_cluster, tmp_path):
    """A writer stopped inside its transaction (SIGSTOP) holds the vault's lock: a second writer
    waits for it, beyond its own statement timeout, instead of failing or interleaving; both land."""
    p = run_import(pg_vault, 1000)
    wait_for_write_txn(pg_cluster, p)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        second = subprocess.Popen([*PUT, "later"], env={**pg_vault.env, "KMS_CLI_TIMEOUT": "1"}, cwd=tmp_path,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        second.stdin.write(b"after the import")
        second.stdin.close()
        time.sleep(2.5)
        assert second.poll() is None, second.stderr.read().decode()  # still waiting for the lock
    finally:
        os.kill(p.pid, signal.SIGCONT)
    assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    assert second.wait(timeout=60) == 0, second.stderr.read().decode()
    assert len(secret_names(pg_vault)) == 1001
    entries = audit(pg_vault)
    ops = [(e["op"], e["target"]) for e in entries]
    assert ops.index(("secret.put", "later")) > ops.index(("secret.import", None))  # one after the other
    pg_vault.ok("audit", "verify")


# -- 8. two vaults in one database ---------------------------------------------------------------

@pytest.mark.slow
def test_two_vaults_in_one_database_are_independent(pg_cluster, worker_schema, tmp_path):
    from kms_cli.store.postgres import _lock_key

    a = runner(tmp_path / "a", pg_cluster, pg_cluster.uri("kms", vault=f"{worker_schema}_a"),
               KMS_CLI_MASTER_KEY="aa" * 32)
    b = runner(tmp_path / "b", pg_cluster, pg_cluster.uri("kms", vault=f"{worker_schema}_b"),
               KMS_CLI_MASTER_KEY="bb" * 32)
    a.ok("init")
    assert b("secret", "list").code == 3  # a's vault is not b's
    b.ok("init")
    a.ok("secret", "put", "db/password", input="for a")
    b.ok("secret", "put", "db/password", input="for b")
    b.ok("secret", "put", "only/in/b", input="b")
    assert a.ok("secret", "get", "db/password").out == b"for a"
    assert b.ok("secret", "get", "db/password").out == b"for b"
    assert secret_names(a) == {"db/password"}
    assert secret_names(b) == {"db/password", "only/in/b"}
    assert a("secret", "get", "only/in/b").code == 3
    # each opens with its own master key only
    r = a("secret", "get", "db/password", env={"KMS_CLI_MASTER_KEY": "bb" * 32})
    assert r.code == 4, r.err
    # init again is refused for one, and --force replaces one and leaves the other whole
    assert a("init").code == 8
    a.ok("init", "--force")
    assert secret_names(a) == set()
    assert b.ok("secret", "get", "only/in/b").out == b"b"
    # two chains: b's log has its own entries only, both verify
    log_b = audit(b)
    assert [e["op"] for e in log_b].count("vault.init") == 1
    assert [(e["target"], e["version"]) for e in log_b if e["op"] == "secret.put"] == \
        [("db/password", 1), ("only/in/b", 1)]
    assert [e["op"] for e in audit(a)][0] == "vault.init"
    a.ok("audit", "verify")
    b.ok("audit", "verify")
    # and two locks: a writer of b does not wait for one holding a's
    with admin(pg_cluster) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(f"{worker_schema}_a"),))
        start = time.monotonic()
        b.ok("secret", "put", "while/a/is/locked", input="v", env={"KMS_CLI_TIMEOUT": "2"})
        assert time.monotonic() - start < 10
        slow = subprocess.Popen([*PUT, "waits"], env=a.env, cwd=a.tmp, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        slow.stdin.write(b"v")
        slow.stdin.close()
        time.sleep(1.5)
        assert slow.poll() is None  # a's writer waits for a's lock
    assert slow.wait(timeout=30) == 0, slow.stderr.read().decode()
    assert secret_names(a) == {"waits"}
