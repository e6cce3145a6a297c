"""A local Azure Key Vault: speaks the keys REST wire format over TLS, with real RSA-OAEP-256 inside.

No emulator of Key Vault exists, so this server stands in for it: the real
azure-keyvault-keys client talks to it over HTTPS (a self-signed certificate
for 127.0.0.1, trusted through `connection_verify`). It performs the bearer
challenge handshake (401 + WWW-Authenticate, then `Authorization: Bearer`),
creates/gets RSA keys, wraps and unwraps with RSA-OAEP-256, counts requests
per operation (so tests prove unwrap really reaches it), and can deny tokens,
answer 5xx, or be stopped.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections import Counter

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.servers.wire import SelfSignedCert, WireServer

GOOD_TOKEN = "good-token"
FORBIDDEN_TOKEN = "forbidden-token"
_ROUTE = re.compile(r"^/keys/([A-Za-z0-9-]+)(?:/([A-Za-z0-9]*))?(?:/(create|wrapkey|unwrapkey))?/?$")
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _error(status: int, code: str, message: str, headers: dict | None = None):
    return status, headers or {}, {"error": {"code": code, "message": message}}


class FakeKeyVault(WireServer):
    def __init__(self, cert: SelfSignedCert, tokens: set[str] | None = None) -> None:
        super().__init__(tls=cert)
        self.tokens = tokens if tokens is not None else {GOOD_TOKEN}
        self.forbidden_tokens = {FORBIDDEN_TOKEN}
        self.keys: dict[str, dict[str, rsa.RSAPrivateKey]] = {}
        self.latest: dict[str, str] = {}
        self.counts: Counter = Counter()
        self.fail_next: list[int] = []

    # -- admin --------------------------------------------------------------
    def create_key(self, name: str) -> str:
        """A new RSA-2048 version of `name`; returns the version."""
        version = uuid.uuid4().hex
        self.keys.setdefault(name, {})[version] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.latest[name] = version
        return version

    def _bundle(self, name: str, version: str) -> dict:
        pub = self.keys[name][version].public_key().public_numbers()
        now = int(time.time())
        return {
            "key": {
                "kid": f"{self.url}/keys/{name}/{version}",
                "kty": "RSA",
                "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"],
                "n": b64url(_int_bytes(pub.n)),
                "e": b64url(_int_bytes(pub.e)),
            },
            "attributes": {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"},
        }

    # -- wire ---------------------------------------------------------------
    def handle(self, method, path, headers, body):
        path = path.split("?", 1)[0]
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if not auth.startswith("Bearer "):
            with self.lock:
                self.counts["challenge"] += 1
            return _error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", {
                "WWW-Authenticate": 'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"'
            })
        token = auth[len("Bearer "):]
        match = _ROUTE.match(path)
        op = (match.group(3) or ("get" if method == "GET" else "?")) if match else "?"
        with self.lock:
            self.counts[op] += 1
            if self.fail_next:
                return _error(self.fail_next.pop(0), "InternalServerError", "injected failure")
        if token in self.forbidden_tokens:
            return _error(403, "Forbidden", "The user, group or application does not have keys permissions.")
        if token not in self.tokens:
            return _error(401, "Unauthorized", "AKV10032: Invalid issuer.")
        if not match:
            return _error(404, "NotFound", f"no route {method} {path}")
        name, version, action = match.groups()
        if action == "create" and method == "POST":
            version = self.create_key(name)
            return 200, {}, self._bundle(name, version)
        if name not in self.keys:
            return _error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
        version = version or self.latest[name]
        if version not in self.keys[name]:
            return _error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault.")
        kid = f"{self.url}/keys/{name}/{version}"
        if action is None and method == "GET":
            return 200, {}, self._bundle(name, version)
        try:
            req = json.loads(body or b"{}")
            value = unb64url(req["value"])
        except (ValueError, KeyError):
            return _error(400, "BadParameter", "Property 'value' is required.")
        if req.get("alg") != "RSA-OAEP-256":
            return _error(400, "BadParameter", "Unsupported algorithm.")
        private = self.keys[name][version]
        if action == "wrapkey":
            return 200, {}, {"kid": kid, "value": b64url(private.public_key().encrypt(value, _OAEP))}
        if action == "unwrapkey":
            try:
                return 200, {}, {"kid": kid, "value": b64url(private.decrypt(value, _OAEP))}
            except ValueError:
                return _error(400, "BadParameter", "The parameter is incorrect.")
        return _error(405, "MethodNotAllowed", f"{method} {path}")


class StaticTokenCredential:
    """An azure-core TokenCredential returning a fixed bearer token, counting requests."""

    def __init__(self, token: str = GOOD_TOKEN) -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)
