"""`kms-cli serve`, the HTTP layer (spec section 10): a real server process on 127.0.0.1 with a
certificate made by `openssl req`, driven with `requests`, raw sockets and a TLS-1.2-only `ssl`
client. TLS 1.3 only, plain HTTP only on loopback, tokens (missing, unknown, revoked, expired,
outside their namespace or ops: 403, audited), 413, 400, 404, 429 with Retry-After, sys/health and
sys/metrics, SIGTERM answering what is in flight, SIGHUP reloading the certificate.

The transit handlers (kms_cli/server/transit.py) are the endpoint under test where a route is
needed; their shapes are tested elsewhere."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kmshelp import Kms, base_env

requests = pytest.importorskip("requests")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")

START = 60.0  # seconds for a server to say where it listens


def make_pair(directory: Path, stem: str = "") -> tuple[Path, Path]:
    cert, key = directory / f"{stem}cert.pem", directory / f"{stem}key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=kms-test-{stem or 'a'}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


class Server:
    """`kms-cli serve` in a subprocess: its URL once it listens, its stderr as it comes."""

    def __init__(self, kms: Kms, *args: str, cert: Path | None = None, key: Path | None = None):
        tls = ["--tls-cert", str(cert), "--tls-key", str(key)] if cert else ["--no-tls"]
        self.cert = cert
        self.proc = subprocess.Popen([sys.executable, "-m", "kms_cli", "serve", "--listen", "127.0.0.1:0", *tls,
                                      *args], env=kms.env, cwd=kms.tmp, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        line = self.wait_for(r"serving (https?://127\.0\.0\.1:\d+)")
        self.url = re.search(r"(https?://127\.0\.0\.1:\d+)", line).group(1)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain(self) -> None:
        for raw in self.proc.stderr:
            with self._new:
                self.lines.append(raw.decode(errors="replace"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float = START) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    if re.search(pattern, line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    raise AssertionError(f"no {pattern!r} on the server's stderr (exit {self.proc.poll()}): "
                                         + "".join(self.lines))
                self._new.wait(min(left, 0.2))

    @property
    def err(self) -> str:
        return "".join(self.lines)

    def request(self, method: str, path: str, token: str | None = None, header: str = "X-Vault-Token", **kw):
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers[header] = token if header == "X-Vault-Token" else f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30,
                                verify=str(self.cert) if self.cert else True, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A vault with a key app/k, tokens, and one TLS server for the tests that do not stop it."""
    tmp = tmp_path_factory.mktemp("serve")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    tokens = {}
    for name, args in (("app", ["--allow", "encrypt,decrypt,health", "--namespace", "app"]),
                       ("other", ["--allow", "encrypt,decrypt", "--namespace", "other"]),
                       ("enc", ["--allow", "encrypt", "--namespace", "app"]),
                       ("slow", ["--allow", "encrypt", "--namespace", "app"]),
                       ("gone", ["--allow", "decrypt"]),
                       ("reader", ["--allow", "key.read"]),
                       ("short", ["--allow", "decrypt", "--ttl", "2s"])):
        tokens[name] = kms.ok("token", "create", name, *args).text.strip()
    cert, key = make_pair(tmp)
    server = Server(kms, "--token-rate", "slow=2/s", cert=cert, key=key)
    yield kms, server, tokens, cert
    assert server.stop() == 0
    assert "Traceback" not in server.err


def _encrypt(server, token, name="app/k", plaintext=b"x" * 64):
    return server.request("POST", f"/v1/transit/encrypt/{name}", token, json={"plaintext": _b64(plaintext)})


# -- TLS ------------------------------------------------------------------------------------------

def test_tls_1_3_works_and_a_tls_1_2_client_is_refused(site):
    kms, server, tokens, cert = site
    r = server.request("GET", "/v1/sys/health")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store" and "server" not in r.headers

    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"

    old = ssl.create_default_context(cafile=str(cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    assert server.request("GET", "/v1/sys/health").status_code == 200  # still serving


def test_plain_http_only_on_loopback_and_tls_needs_a_pair(tmp_path):
    kms = Kms(tmp_path, base_env(tmp_path))
    kms.ok("init")
    r = kms("serve", "--listen", "0.0.0.0:0", "--no-tls")
    assert r.code == 2 and "loopback" in r.err and "Traceback" not in r.err
    r = kms("serve", "--listen", "127.0.0.1:0")
    assert r.code == 2 and "--tls-cert" in r.err and "openssl req" in r.err
    r = kms("serve", "--listen", "127.0.0.1:0", "--tls-cert", "nope.pem", "--tls-key", "nope.pem")
    assert r.code == 2 and "no TLS certificate file" in r.err
    for bad in (["--listen", "localhost"], ["--listen", "127.0.0.1:99999"], ["--rate-limit", "fast"],
                ["--max-body", "huge"], ["--token-rate", "x"]):
        r = kms("serve", "--no-tls", *bad)
        assert r.code == 2 and "Traceback" not in r.err, bad
    # nothing was unlocked for these: no audit entry but init's
    assert [e["op"] for e in kms.ok("--json", "audit", "log").json_lines()] == ["vault.init"]


# -- tokens ---------------------------------------------------------------------------------------

def test_requests_without_a_good_token_are_403_and_audited(site):
    kms, server, tokens, cert = site
    ct = _encrypt(server, tokens["app"]).json()["data"]["ciphertext"]
    ok = server.request("POST", "/v1/transit/decrypt/app/k", tokens["app"], header="Authorization",
                        json={"ciphertext": ct})
    assert ok.status_code == 200 and base64.b64decode(ok.json()["data"]["plaintext"]) == b"x" * 64

    def decrypt(token, name="app/k"):
        return server.request("POST", f"/v1/transit/decrypt/{name}", token, json={"ciphertext": ct})

    refused = {
        "no token": decrypt(None),
        "unknown token": decrypt("kms." + "A" * 43),
        "outside its namespace": decrypt(tokens["other"]),
        "outside its namespace, missing name": decrypt(tokens["other"], "app/missing"),
        "an operation it lacks": decrypt(tokens["enc"]),
    }
    kms.ok("token", "revoke", "gone")  # effective at the next request
    refused["revoked"] = decrypt(tokens["gone"])
    time.sleep(max(0.0, 2.2 - 0.0))
    refused["expired"] = decrypt(tokens["short"])
    for why, r in refused.items():
        assert (r.status_code, r.json()) == (403, {"errors": ["permission denied"]}), why

    log = kms.ok("--json", "audit", "log")
    assert not any(t in log.text for t in tokens.values())
    denied = [e for e in log.json_lines() if e["op"] == "http.denied"]
    users = [e["actor"]["user"] for e in denied]
    assert users.count("anonymous") >= 2  # no token, unknown token
    for name in ("other", "enc", "gone", "short"):
        assert f"token:{name}" in users, name
    assert all(e["actor"]["host"] == "127.0.0.1" and e["result"] == "denied" for e in denied)
    assert {e["detail"]["why"] for e in denied} >= {"missing token", "unknown token", "revoked token",
                                                     "expired token"}
    assert [e for e in denied if e["actor"]["user"] == "token:other"][0]["target"] in ("app/k", "app/missing")
    ok_entry = [e for e in log.json_lines() if e["op"] == "decrypt" and e["result"] == "ok"][-1]
    assert ok_entry["actor"]["user"] == "token:app" and ok_entry["target"] == "app/k"
    assert kms.ok("audit", "verify").code == 0


# -- limits ---------------------------------------------------------------------------------------

def test_body_limit_malformed_json_and_unknown_paths(site):
    kms, server, tokens, cert = site
    big = server.request("POST", "/v1/transit/encrypt/app/k", tokens["app"], data=b"{" + b" " * (1 << 20) + b"}",
                         headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["errors"]
    for body in (b'{"plaintext": ', b"\xff\xfe", b"[1, 2]", b'"text"', b"[" * 100_000 + b"]" * 100_000):
        r = server.request("POST", "/v1/transit/encrypt/app/k", tokens["app"], data=body)
        assert r.status_code == 400 and r.json()["errors"][0].startswith("failed to parse JSON input"), body
    r = server.request("GET", "/v1/nowhere/at/all", tokens["app"])
    assert r.status_code == 404 and r.json()["errors"]
    r = server.request("DELETE", "/v1/transit/encrypt/app/k", tokens["app"])
    assert r.status_code == 405
    # PUT is POST (the bao CLI), and the server still works after all that
    r = server.request("PUT", "/v1/transit/encrypt/app/k", tokens["app"], json={"plaintext": _b64(b"y")})
    assert r.status_code == 200 and r.json()["data"]["ciphertext"].startswith("vault:v")


def test_vaults_list_method_and_get_with_list_true(site):
    kms, server, tokens, cert = site
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            for _ in range(2):  # twice on one keep-alive connection
                tls.sendall(b"LIST /v1/transit/keys HTTP/1.1\r\nHost: x\r\nX-Vault-Token: "
                            + tokens["reader"].encode() + b"\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    data += tls.recv(65536)
                assert data.startswith(b"HTTP/1.1 200 "), data[:200]
                assert "app/k" in json.loads(data.split(b"\r\n\r\n", 1)[1])["data"]["keys"]
    r = server.request("GET", "/v1/transit/keys?list=true", tokens["reader"])
    assert r.status_code == 200 and "app/k" in r.json()["data"]["keys"]


def test_a_token_over_its_rate_gets_429_with_retry_after(site):
    kms, server, tokens, cert = site
    with requests.Session() as s:
        codes, waits = [], []
        for _ in range(8):
            r = s.post(server.url + "/v1/transit/encrypt/app/k", headers={"X-Vault-Token": tokens["slow"]},
                       json={"plaintext": _b64(b"z")}, timeout=30, verify=str(cert))
            codes.append(r.status_code)
            if r.status_code == 429:
                waits.append(int(r.headers["Retry-After"]))
                assert r.json() == {"errors": ["rate limit exceeded"]}
    assert codes[0] == 200 and 429 in codes and waits and min(waits) >= 1, codes
    # another token is not slowed down by it
    assert _encrypt(server, tokens["app"]).status_code == 200


def test_a_client_leaving_mid_request_harms_nobody(site):
    kms, server, tokens, cert = site
    ctx = ssl.create_default_context(cafile=str(cert))
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"POST /v1/transit/encrypt/app/k HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + tokens["app"].encode()
                    + b"\r\nContent-Length: 100\r\n\r\n{\"plaintext\": ")
        tls.close()
    assert _encrypt(server, tokens["app"]).status_code == 200


@pytest.mark.slow
def test_slow_and_idle_clients_are_bounded(site):
    """A request head that never ends is cut after 10 s, a body that never ends is 408 after 10 s,
    an idle keep-alive connection is closed after 5 s (the three at once)."""
    kms, server, tokens, cert = site
    ctx = ssl.create_default_context(cafile=str(cert))
    outcome = {}

    def connect():
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def read_all(tls) -> bytes:
        data = b""
        try:
            while chunk := tls.recv(65536):
                data += chunk
        except (ssl.SSLError, OSError):
            pass
        return data

    def slow_head():
        with connect() as tls:
            tls.sendall(b"POST /v1/transit/encrypt/app/k HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            outcome["head"] = (read_all(tls), time.monotonic() - t0)

    def slow_body():
        with connect() as tls:
            tls.sendall(b"POST /v1/transit/encrypt/app/k HTTP/1.1\r\nHost: x\r\nX-Vault-Token: "
                        + tokens["app"].encode() + b"\r\nContent-Length: 100\r\n\r\n{\"plaintext\": ")
            t0 = time.monotonic()
            outcome["body"] = (read_all(tls), time.monotonic() - t0)

    def idle():
        with connect() as tls:
            tls.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            outcome["idle"] = (read_all(tls), time.monotonic() - t0)

    threads = [threading.Thread(target=f) for f in (slow_head, slow_body, idle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    data, took = outcome["head"]
    assert b"HTTP/1.1 200" not in data and 8 < took < 20, (data[:100], took)
    data, took = outcome["body"]
    assert data.startswith(b"HTTP/1.1 408 ") and 8 < took < 20, (data[:100], took)
    data, took = outcome["idle"]
    assert data.startswith(b"HTTP/1.1 200 ") and 4 < took < 15, (data[:100], took)


# -- sys ------------------------------------------------------------------------------------------

def test_health_without_and_with_a_token_and_metrics(site):
    kms, server, tokens, cert = site
    r = server.request("GET", "/v1/sys/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "healthy" and "checks" not in body
    assert body["initialized"] is True and body["sealed"] is False and body["standby"] is False
    assert isinstance(body["server_time_utc"], int) and body["version"]
    r = server.request("GET", "/v1/sys/health", tokens["app"])
    names = {c["name"]: c["status"] for c in r.json()["checks"]}
    assert r.status_code == 200 and names["audit.chain"] == "ok" and names["serve.audit"] == "ok"
    assert "slot.1" not in names  # no second unlock
    before = len([e for e in kms.ok("--json", "audit", "log").json_lines() if e["op"] == "health"])
    assert before >= 1  # the token's health request is audited, the anonymous one is not

    r = server.request("GET", "/v1/sys/metrics?format=prometheus", tokens["app"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert re.search(r'kms_cli_http_requests_total\{endpoint="sys.health",status="200"\} [1-9]', text)
    assert "kms_cli_http_request_duration_seconds_bucket" in text and "kms_cli_serve_commits_total" in text
    assert re.search(r"^kms_cli_health_status 0$", text, re.M)  # the gauges of `kms-cli health --format prometheus`
    for token in (None, tokens["enc"]):  # a health token is needed
        assert server.request("GET", "/v1/sys/metrics?format=prometheus", token).status_code == 403


def test_group_commit_answers_concurrent_requests(site):
    kms, server, tokens, cert = site
    results = []

    def client():
        with requests.Session() as s:
            for _ in range(10):
                results.append(s.post(server.url + "/v1/transit/encrypt/app/k",
                                      headers={"X-Vault-Token": tokens["app"]},
                                      json={"plaintext": _b64(b"q" * 64)}, timeout=30,
                                      verify=str(cert)).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 80
    text = server.request("GET", "/v1/sys/metrics", tokens["app"]).text
    commits = int(re.search(r"^kms_cli_serve_commits_total (\d+)$", text, re.M).group(1))
    committed = int(re.search(r"^kms_cli_serve_committed_requests_total (\d+)$", text, re.M).group(1))
    assert commits <= committed
    assert kms.ok("audit", "verify").code == 0


# -- signals --------------------------------------------------------------------------------------

def test_sigterm_answers_the_requests_in_flight_then_exits_0(tmp_path):
    kms = Kms(tmp_path, base_env(tmp_path))
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    token = kms.ok("token", "create", "t", "--allow", "encrypt").text.strip()
    server = Server(kms)
    body = json.dumps({"plaintext": _b64(b"p" * 64)}).encode()
    head = (b"POST /v1/transit/encrypt/app/k HTTP/1.1\r\nHost: x\r\nX-Vault-Token: " + token.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    in_flight = []
    for _ in range(4):  # head and half the body sent: these requests are in flight at SIGTERM
        s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        s.sendall(head + body[:10])
        in_flight.append(s)
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no new connection is accepted
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)
    answers = []
    for s in in_flight:
        s.sendall(body[10:])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        answers.append(data.split(b"\r\n", 1)[0])
        s.close()
    assert answers == [b"HTTP/1.1 200 OK"] * 4
    assert server.proc.wait(30) == 0
    assert "Traceback" not in server.err and "stopped" in server.err
    entries = [e for e in kms.ok("--json", "audit", "log").json_lines() if e["op"] == "encrypt"]
    assert len(entries) == 4 and all(e["actor"]["user"] == "token:t" for e in entries)


def test_sigterm_under_load_answers_every_accepted_request(tmp_path):
    kms = Kms(tmp_path, base_env(tmp_path))
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    token = kms.ok("token", "create", "t", "--allow", "encrypt").text.strip()
    server = Server(kms, "--rate-limit", "0")
    codes, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                r = requests.post(server.url + "/v1/transit/encrypt/app/k", headers={"X-Vault-Token": token},
                                  json={"plaintext": _b64(b"l" * 64)}, timeout=30)
            except requests.ConnectionError:
                return  # refused or closed: the server stopped accepting
            codes.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert server.stop() == 0
    stop.set()
    for t in threads:
        t.join(30)
    assert codes and set(codes) == {200}, set(codes)
    assert "Traceback" not in server.err
    encrypts = [e for e in kms.ok("--json", "audit", "log").json_lines() if e["op"] == "encrypt"]
    assert len(encrypts) >= len(codes)  # every answered request has its entry
    assert kms.ok("audit", "verify").code == 0


def _peer_fingerprint(port: int, cafile: Path | None = None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def _fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def test_sighup_reloads_the_certificate(tmp_path):
    kms = Kms(tmp_path, base_env(tmp_path))
    kms.ok("init")
    cert, key = make_pair(tmp_path)
    server = Server(kms, cert=cert, key=key)
    first = _fingerprint(cert)
    assert _peer_fingerprint(server.port) == first
    new_cert, new_key = make_pair(tmp_path, "new-")
    shutil.copy(new_cert, cert)
    shutil.copy(new_key, key)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("reloaded the TLS certificate")
    assert _peer_fingerprint(server.port) == _fingerprint(new_cert) != first
    # a broken pair is refused: the server keeps the last good one
    key.write_text("not a key\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("kept the previous TLS certificate")
    assert _peer_fingerprint(server.port) == _fingerprint(new_cert)
    assert server.stop() == 0
    assert "Traceback" not in server.err


# -- fail-closed ----------------------------------------------------------------------------------

def test_a_request_whose_audit_entry_cannot_be_committed_fails_503(tmp_path, small_fs):
    env = base_env(tmp_path)
    env["KMS_CLI_VAULT"] = str(small_fs / "vault.db")
    kms = Kms(tmp_path, env)
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    token = kms.ok("token", "create", "t", "--allow", "encrypt,health").text.strip()
    server = Server(kms)
    try:
        assert _encrypt(server, token).status_code == 200
        filler = small_fs / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        for _ in range(2):
            r = _encrypt(server, token)
            assert r.status_code == 503 and "data" not in r.json() and r.json()["errors"], r.text
            assert str(small_fs) not in r.text  # no server-side detail for the client
        health = server.request("GET", "/v1/sys/health")
        assert health.status_code == 503 and health.json()["status"] == "failing"
        filler.unlink()
        assert _encrypt(server, token).status_code == 200
        assert server.request("GET", "/v1/sys/health").status_code == 200
    finally:
        assert server.stop() == 0
    encrypts = [e for e in kms.ok("--json", "audit", "log").json_lines() if e["op"] == "encrypt"]
    assert [e["result"] for e in encrypts] == ["ok", "ok"]  # the refused ones left nothing behind
    kms.ok("audit", "verify")
    assert "Traceback" not in server.err and "failed to commit" in server.err


def test_a_client_whose_requests_keep_being_refused_is_slowed_down(tmp_path):
    kms = Kms(tmp_path, base_env(tmp_path))
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    good = kms.ok("token", "create", "good", "--allow", "encrypt").text.strip()
    server = Server(kms, "--rate-limit", "5/s")
    try:
        assert _encrypt(server, good).status_code == 200
        codes = [_encrypt(server, "kms." + "B" * 43).status_code for _ in range(15)]
        assert codes[0] == 403 and 429 in codes, codes
        assert _encrypt(server, good).status_code == 200  # a token known to be good is not held up
    finally:
        assert server.stop() == 0
    denied = [e for e in kms.ok("--json", "audit", "log").json_lines() if e["op"] == "http.denied"]
    assert 1 <= len(denied) == codes.count(403) <= 8


# -- the agent ------------------------------------------------------------------------------------

def test_serve_unlocks_through_the_agent(tmp_path):
    """A passphrase vault held by the agent: serve needs no passphrase; the client's SIGTERM reaches
    the server the agent runs for it, which answers and exits 0."""
    from agenthelp import passphrase_vault, stop_agent, unlock

    kms = passphrase_vault(tmp_path)
    try:
        kms.ok("agent", "start")
        unlock(kms)
        kms.ok("key", "create", "app/k")
        token = kms.ok("token", "create", "t", "--allow", "encrypt").text.strip()
        server = Server(kms)
        assert _encrypt(server, token).status_code == 200
        assert server.stop() == 0
        assert "Traceback" not in server.err and "stopped" in server.err
    finally:
        stop_agent(kms)
    assert kms("--no-agent", "serve", "--listen", "127.0.0.1:0", "--no-tls").code == 4  # no agent, no passphrase: no unlock


# -- PostgreSQL -----------------------------------------------------------------------------------

@pytest.mark.server
def test_serve_a_postgresql_vault(pg_vault):
    kms = pg_vault
    kms.ok("key", "create", "app/k")
    token = kms.ok("token", "create", "t", "--allow", "encrypt,decrypt,health").text.strip()
    server = Server(kms)
    try:
        ct = _encrypt(server, token).json()["data"]["ciphertext"]
        r = server.request("POST", "/v1/transit/decrypt/app/k", token, json={"ciphertext": ct})
        assert r.status_code == 200 and base64.b64decode(r.json()["data"]["plaintext"]) == b"x" * 64
        health = server.request("GET", "/v1/sys/health", token).json()
        checks = {c["name"]: c["status"] for c in health["checks"]}
        assert health["status"] == "healthy" and checks["vault.server"] == "ok", health
        kms.ok("token", "revoke", "t")  # another process's write, seen at the next request
        assert _encrypt(server, token).status_code == 403
    finally:
        assert server.stop() == 0
    ops = [(e["op"], e["result"]) for e in kms.ok("--json", "audit", "log").json_lines()]
    assert ("encrypt", "ok") in ops and ("decrypt", "ok") in ops and ("http.denied", "denied") in ops
    kms.ok("audit", "verify")
    assert "Traceback" not in server.err
