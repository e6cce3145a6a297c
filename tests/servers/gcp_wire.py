"""A local Cloud KMS: speaks the v1 REST wire format of encrypt/decrypt, with real AES-256-GCM inside.

No emulator of Cloud KMS exists, so this server stands in for it: the real
google-cloud-kms client (REST transport) talks to it over loopback HTTP. It
checks and returns the CRC32C integrity fields like the service, counts
requests, and can deny keys, fail with 5xx, or corrupt checksums on demand.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections import Counter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.servers.wire import WireServer

_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+):(encrypt|decrypt)$")
_MAGIC = b"FKMS"


def _crc(data: bytes) -> int:
    import google_crc32c

    return google_crc32c.value(data)


def _error(code: int, status: str, message: str):
    return code, {}, {"error": {"code": code, "message": message, "status": status}}


class FakeCloudKms(WireServer):
    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, dict[int, bytes]] = {}
        self.primary: dict[str, int] = {}
        self.denied: set[str] = set()
        self.counts: Counter = Counter()
        self.fail_next: list[int] = []  # statuses to answer with, one per request
        self.corrupt_next: str | None = None  # "ciphertext_crc", "plaintext_crc", "unverified"
        self.seen_request_crcs: Counter = Counter()

    # -- admin --------------------------------------------------------------
    def create_key(self, name: str) -> str:
        self.keys[name] = {1: AESGCM.generate_key(256)}
        self.primary[name] = 1
        return name

    def rotate(self, name: str) -> int:
        version = max(self.keys[name]) + 1
        self.keys[name][version] = AESGCM.generate_key(256)
        self.primary[name] = version
        return version

    # -- wire ---------------------------------------------------------------
    def handle(self, method, path, headers, body):
        path = path.split("?", 1)[0]
        match = _PATH.match(path)
        if method != "POST" or not match:
            return _error(404, "NOT_FOUND", f"unknown route {method} {path}")
        name, op = match.groups()
        with self.lock:
            self.counts[op] += 1
            if self.fail_next:
                status = self.fail_next.pop(0)
                return _error(status, "INTERNAL" if status >= 500 else "UNAVAILABLE", "injected failure")
            corrupt, self.corrupt_next = self.corrupt_next, None
        if name in self.denied:
            return _error(403, "PERMISSION_DENIED", f"Permission 'cloudkms.cryptoKeyVersions.use{op.title()}' denied")
        if name not in self.keys:
            return _error(404, "NOT_FOUND", f"CryptoKey {name} not found.")
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "invalid JSON payload")
        aad = base64.b64decode(req.get("additionalAuthenticatedData", ""))
        for field, data_field in (
            ("additionalAuthenticatedDataCrc32c", aad),
            ("plaintextCrc32c", "plaintext"),
            ("ciphertextCrc32c", "ciphertext"),
        ):
            if field in req:
                self.seen_request_crcs[field] += 1
                data = data_field if isinstance(data_field, bytes) else base64.b64decode(req.get(data_field, ""))
                if int(req[field]) != _crc(data):
                    return _error(400, "INVALID_ARGUMENT", f"The checksum in field {field} did not match the data.")
        if op == "encrypt":
            return self._encrypt(name, req, aad, corrupt)
        return self._decrypt(name, req, aad, corrupt)

    def _encrypt(self, name, req, aad, corrupt):
        plaintext = base64.b64decode(req.get("plaintext", ""))
        version = self.primary[name]
        nonce = os.urandom(12)
        ciphertext = _MAGIC + struct.pack(">I", version) + nonce + AESGCM(self.keys[name][version]).encrypt(
            nonce, plaintext, aad
        )
        crc = _crc(ciphertext) ^ (1 if corrupt == "ciphertext_crc" else 0)
        return 200, {}, {
            "name": f"{name}/cryptoKeyVersions/{version}",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "ciphertextCrc32c": str(crc),
            "verifiedPlaintextCrc32c": "plaintextCrc32c" in req and corrupt != "unverified",
            "verifiedAdditionalAuthenticatedDataCrc32c": "additionalAuthenticatedDataCrc32c" in req,
            "protectionLevel": "SOFTWARE",
        }

    def _decrypt(self, name, req, aad, corrupt):
        ciphertext = base64.b64decode(req.get("ciphertext", ""))
        bad = _error(400, "INVALID_ARGUMENT", "Decryption failed: the ciphertext is invalid.")
        if len(ciphertext) < 4 + 4 + 12 + 16 or not ciphertext.startswith(_MAGIC):
            return bad
        (version,) = struct.unpack(">I", ciphertext[4:8])
        key = self.keys[name].get(version)
        if key is None:
            return bad
        try:
            plaintext = AESGCM(key).decrypt(ciphertext[8:20], ciphertext[20:], aad)
        except InvalidTag:
            return bad
        crc = _crc(plaintext) ^ (1 if corrupt == "plaintext_crc" else 0)
        return 200, {}, {
            "plaintext": base64.b64encode(plaintext).decode(),
            "plaintextCrc32c": str(crc),
            "usedPrimary": version == self.primary[name],
            "protectionLevel": "SOFTWARE",
        }
