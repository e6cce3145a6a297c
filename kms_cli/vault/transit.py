"""Vault's transit engine over kms-cli keys (`serve`, spec section 10): bytes in, bytes out.

The HTTP handlers (`kms_cli/server/transit.py`) parse JSON and base64 and build Vault's response
shapes; the policy lives here: which key and version may encrypt, decrypt, sign or verify, what a
ciphertext or signature string is bound to, and the audit entry of each request (one entry per
request; a `batch_input` of 100 items is one entry with the counts in its detail).

Ciphertexts are `vault:v<N>:` + base64 of the kms-cli envelope (`kms_cli/envelope.py`) made for
key NAME version N: the header names the vault, the key and the version, and the payload is bound
to them and to the request's `context` and `associated_data` (context pairs
`transit.context=<base64>` and `transit.associated_data=<base64>`, so `kms-cli decrypt --context
transit.context=...` opens the base64-decoded envelope too). The `vN` of the string must match the
header's version: a ciphertext made by another key or vault, tampered, or opened with another
context fails with Vault's wording, "cipher: message authentication failed".

Signatures are `vault:v<N>:` + base64 of the algorithm's standard signature of the input itself (as
Vault makes them, verifiable with the public key from a key read): Ed25519 (RFC 8032), ECDSA P-256
with SHA-256 (DER, or r||s with `marshaling_algorithm=jws`), RSASSA-PSS with SHA-256 (salt 32).

The envelope itself is made and opened by `vault/data.py`'s helpers (the data key's wrap, the
payload suites), in memory here rather than streamed.

Key versions follow kms-cli's policy, not Vault's minimum versions: only the key's active version
encrypts, signs and makes data keys (older versions are decrypt-only after a rotation); a revoked,
destroyed or expired version decrypts and verifies nothing.
"""

from __future__ import annotations

import base64
import binascii
import io

from kms_cli import algorithms, durations, envelope
from kms_cli.errors import IntegrityError, KmsError, NotFoundError, StateError, UsageError
from kms_cli.vault import data, keys, rows

# Vault's key types and the kms-cli algorithm each maps to; kms-cli's own algorithm names are
# accepted as types too (and shown as themselves when Vault has no name for them).
VAULT_TYPES = {
    "aes256-gcm96": "aes-256-gcm",
    "chacha20-poly1305": "chacha20-poly1305",
    "ed25519": "ed25519",
    "ecdsa-p256": "ecdsa-p256",
    "rsa-2048": "rsa-2048",
    "rsa-4096": "rsa-4096",
}
TYPE_OF = {alg: t for t, alg in VAULT_TYPES.items()}
# Vault types kms-cli has no equivalent for (refused with a clear message, not "unknown")
UNSUPPORTED_TYPES = ("aes128-gcm96", "ecdsa-p384", "ecdsa-p521", "rsa-3072", "hmac", "managed_key", "aes128-cmac",
                     "aes256-cmac", "aes192-cmac", "xchacha20-poly1305")
HASHES = ("sha1", "sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-224", "sha3-256", "sha3-384", "sha3-512",
          "none")
DATAKEY_BITS = (128, 256, 512)
CONTEXT_KEY = "transit.context"
AAD_KEY = "transit.associated_data"

AUTH_FAILED = "cipher: message authentication failed"
TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
MISSING = {"encrypt": "encryption key not found", "decrypt": "encryption key not found",
           "rewrap": "encryption key not found", "datakey": "encryption key not found",
           "sign": "signing key not found", "verify": "signature verification key not found"}


class TransitError(UsageError):
    """A malformed request or item: Vault answers 400 with this message."""


class VersionError(StateError):
    """A key version the key's policy does not let serve this use: 400 with this message."""


class KeyMissing(NotFoundError):
    """The key named by the path does not exist (Vault answers 400 with `message`, not 404)."""


def vault_type(algorithm: str) -> str:
    return TYPE_OF.get(algorithm, algorithm)


def algorithm_for(type_: str) -> str:
    """The kms-cli algorithm of a Vault key type (or of a kms-cli algorithm name)."""
    if type_ in VAULT_TYPES:
        return VAULT_TYPES[type_]
    if type_ in algorithms.ALGORITHMS:
        return type_
    if type_ in UNSUPPORTED_TYPES:
        raise UsageError(f"key type {type_} is not supported by kms-cli",
                         hint="supported: " + ", ".join((*VAULT_TYPES, *(a for a in algorithms.ALGORITHMS
                                                                             if a not in TYPE_OF))))
    raise UsageError(f"unknown key type {type_}")


# -- the key a request uses ------------------------------------------------------------------

_WHAT = {"encrypt": "message encryption", "decrypt": "message decryption", "rewrap": "message encryption",
         "datakey": "message encryption", "sign": "signing", "verify": "verification"}


class _Key:
    """One request's view of a key: its authenticated record and each version it opened."""

    def __init__(self, vault, full: str, use: str):
        self.vault, self.full, self.use = vault, full, use
        k = rows.load_key(vault, full)
        if k is None:
            raise KeyMissing(MISSING[use])
        self.k = k
        self.alg = algorithms.get(k.row["algorithm"])
        wants = "sign" if use in ("sign", "verify") else "encrypt"
        if self.alg.purpose != wants:
            if use in ("sign", "verify"):
                raise VersionError(f"key type {vault_type(self.alg.name)} does not support {_WHAT[use]}")
            raise VersionError(f"{_WHAT[use]} not supported for key type {vault_type(self.alg.name)}")
        keys._require_usable_key(k.row, vault.ns.relative(full))  # disabled, scheduled for destruction, destroyed
        self.latest = max(k.versions)
        self._material: dict[int, bytes] = {}
        self._public: dict[int, bytes | None] = {}

    def version(self, n: int | None, use: str | None = None) -> dict:
        """Version `n` (None or 0: the primary one) if it may serve `use` (encrypt/sign need the
        active version; decrypt/verify any version not revoked, destroyed or past its grace)."""
        use = use or self.use
        if not n:
            n = self.k.row["primary_version"]
        if n > self.latest:
            if use in ("encrypt", "sign", "datakey", "rewrap"):
                raise TransitError("requested version for encryption is higher than the latest key version"
                                   if use != "sign" else "requested version for signing is higher than the latest "
                                                         "key version")
            raise TransitError(("invalid signature" if use == "verify" else "invalid ciphertext")
                               + ": version is too new")
        v = self.k.version(n)
        if v is None:
            raise VersionError(TOO_OLD)
        state = keys.version_state(v, durations.now())
        if use in ("encrypt", "sign", "datakey", "rewrap"):
            if state != keys.V_ACTIVE:
                raise VersionError(f"key version {n} is {state}: only the active version "
                                   f"({self.k.row['primary_version']}) may be used for {_WHAT[use]}")
        elif state in (keys.V_REVOKED, keys.V_DESTROYED, keys.V_EXPIRED):
            raise VersionError(TOO_OLD)
        return v

    def material(self, v: dict) -> bytes:
        n = v["version"]
        if n not in self._material:
            self._material[n] = self.vault.open_material(self.full, n, self.alg.name, v["material"])
        return self._material[n]

    def public(self, v: dict) -> bytes | None:
        n = v["version"]
        if n not in self._public:
            self._public[n] = data._public_of(self.vault, self.full, v, self.alg)
        return self._public[n]


def _pairs(context: bytes | None, aad: bytes | None) -> list[tuple[str, str]]:
    """The envelope's context pairs for a request's `context` and `associated_data` (canonical
    base64, so two spellings of the same bytes bind alike; empty is absent, as in Vault)."""
    out = []
    if context:
        out.append((CONTEXT_KEY, base64.b64encode(context).decode()))
    if aad:
        out.append((AAD_KEY, base64.b64encode(aad).decode()))
    return out


def _seal(key: _Key, v: dict, plaintext: bytes, pairs) -> bytes:
    from kms_cli.crypto import chunked
    from kms_cli.crypto.primitives import random_bytes

    vault, alg = key.vault, key.alg
    dek = random_bytes(32)
    header = envelope.Header(suite=data._suite_for(alg.name), vault_id=vault.vault_id, name=key.full,
                             version=v["version"])
    header.wrap = data._wrap_dek(vault, alg, key.material(v), dek, header, key.public(v))
    if header.suite == envelope.SUITE_COBBLESTONE:
        return header.to_bytes() + chunked.seal(dek, plaintext, envelope.payload_context(header, pairs))
    out = io.BytesIO()
    out.write(header.to_bytes())
    data._seal_payload(header, dek, pairs, io.BytesIO(plaintext), out)
    return out.getvalue()


def format_ciphertext(version: int, blob: bytes) -> str:
    return f"vault:v{version}:" + base64.b64encode(blob).decode()


def _split(text, what: str) -> tuple[int, str]:
    """`vault:v<N>:<base64>` -> (N, base64 text), or Vault's error for the string."""
    if not isinstance(text, str) or not text.startswith("vault:"):
        raise TransitError(f"invalid {what}: no prefix")
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise TransitError(f"invalid {what}: wrong number of fields")
    tag = parts[1]
    if not (tag.startswith("v") and tag[1:].isascii() and tag[1:].isdigit() and len(tag) < 12):
        raise TransitError(f"invalid {what}: version number could not be decoded")
    if int(tag[1:]) < 1:
        raise VersionError(TOO_OLD)
    return int(tag[1:]), parts[2]


def _b64(text: str, message: str) -> bytes:
    try:
        return base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        raise TransitError(message) from None


def _open_ciphertext(key: _Key, text, pairs, use: str):
    """(header, data key, payload, version row) of a ciphertext of this key, authenticated."""
    n, body = _split(text, "ciphertext")
    v = key.version(n, "decrypt")
    blob = _b64(body, "invalid ciphertext: could not decode base64")
    src = io.BytesIO(blob)
    try:
        header = envelope.read_header(src)
    except IntegrityError:
        raise TransitError("invalid ciphertext: not a kms-cli ciphertext") from None
    if header.vault_id != key.vault.vault_id or header.name != key.full or header.version != n:
        raise IntegrityError(AUTH_FAILED)
    try:
        dek = data._unwrap_dek(key.vault, key.alg, key.material(v), header, v["fingerprint"])
    except IntegrityError:
        raise IntegrityError(AUTH_FAILED) from None
    payload = src.read()
    try:
        plaintext = _open_payload(header, dek, pairs, payload)
    except IntegrityError:
        raise IntegrityError(AUTH_FAILED) from None
    return header, dek, payload, plaintext, v


def _open_payload(header, dek: bytes, pairs, payload: bytes) -> bytes:
    from kms_cli.crypto import chunked

    if header.suite == envelope.SUITE_COBBLESTONE:
        return chunked.open(dek, payload, envelope.payload_context(header, pairs))
    out = io.BytesIO()
    data._open_payload(header, dek, pairs, io.BytesIO(payload), out)
    return out.getvalue()


def _finish(rec, results: list, batch: bool, versions: set) -> None:
    if len(versions) == 1:
        rec.version = next(iter(versions))
    if batch:
        rec.extra = {"items": len(results), "failed": sum(isinstance(r, Exception) for r in results)}


def _each(items: list, run, batch: bool) -> tuple[list, set]:
    """run(item) for each item that parsed (an item that did not is its own error), per-item errors
    kept in a batch; a single request's error propagates (its entry records it)."""
    out, versions = [], set()
    for item in items:
        if isinstance(item, Exception):
            if not batch:
                raise item
            out.append(item)
            continue
        try:
            result = run(item)
        except KmsError as exc:
            if not batch:
                raise
            out.append(exc)
            continue
        versions.add(result[0])
        out.append(result)
    return out, versions


# -- operations --------------------------------------------------------------------------------

def key_exists(vault, full: str) -> bool:
    """Whether `full` names a key (no audit entry: the caller is allowed to create it)."""
    with vault.store.read():
        return vault.store.key(full) is not None


def encrypt(vault, full: str, items: list, *, batch: bool = False) -> list:
    """items: (plaintext, context, associated_data, key_version) or an exception (an item that did
    not parse). Returns per item (version, ciphertext string) or the exception."""
    with vault.operation("encrypt", full, write=False) as rec:
        key = _Key(vault, full, "encrypt")

        def run(item):
            plaintext, context, aad, version = item
            v = key.version(version)
            return v["version"], format_ciphertext(v["version"], _seal(key, v, plaintext, _pairs(context, aad)))

        out, versions = _each(items, run, batch)
        _finish(rec, out, batch, versions)
    return out


def decrypt(vault, full: str, items: list, *, batch: bool = False) -> list:
    """items: (ciphertext string, context, associated_data) or an exception. Returns per item
    (version, plaintext bytes) or the exception."""
    with vault.operation("decrypt", full, write=False) as rec:
        key = _Key(vault, full, "decrypt")

        def run(item):
            text, context, aad = item
            _, _, _, plaintext, v = _open_ciphertext(key, text, _pairs(context, aad), "decrypt")
            return v["version"], plaintext

        out, versions = _each(items, run, batch)
        _finish(rec, out, batch, versions)
    return out


def rewrap(vault, full: str, items: list, *, batch: bool = False) -> list:
    """items: (ciphertext string, context, associated_data, key_version) or an exception. The
    ciphertext is authenticated (with its context) and its data key re-wrapped by the active
    version; the payload is kept. Returns per item (version, ciphertext string) or the exception."""
    with vault.operation("rewrap", full, write=False) as rec:
        key = _Key(vault, full, "rewrap")

        def run(item):
            text, context, aad, version = item
            target = key.version(version, "rewrap")
            header, dek, payload, _, old = _open_ciphertext(key, text, _pairs(context, aad), "rewrap")
            header.version = target["version"]
            header.wrap = data._wrap_dek(vault, key.alg, key.material(target), dek, header, key.public(target))
            return target["version"], format_ciphertext(target["version"], header.to_bytes() + payload)

        out, versions = _each(items, run, batch)
        _finish(rec, out, batch, versions)
    return out


def datakey(vault, full: str, bits: int, context: bytes | None, aad: bytes | None) -> tuple[int, bytes, str]:
    """A fresh random key of `bits` bits: (version, the key, its ciphertext under the active version)."""
    from kms_cli.crypto.primitives import random_bytes

    if bits not in DATAKEY_BITS:
        raise TransitError("invalid bit length")
    with vault.operation("datakey", full, write=False) as rec:
        key = _Key(vault, full, "datakey")
        v = key.version(None)
        rec.version = v["version"]
        rec.extra = {"bits": bits}
        plaintext = random_bytes(bits // 8)
        return v["version"], plaintext, format_ciphertext(v["version"], _seal(key, v, plaintext,
                                                                              _pairs(context, aad)))


# -- signatures ----------------------------------------------------------------------------------

class SignOptions:
    """Vault's signature parameters, checked against what kms-cli makes for the key's algorithm."""

    __slots__ = ("hash_algorithm", "marshaling", "prehashed", "signature_algorithm", "salt_length")

    def __init__(self, hash_algorithm: str | None = None, marshaling: str | None = None, prehashed: bool = False,
                 signature_algorithm: str | None = None, salt_length=None):
        self.hash_algorithm = hash_algorithm or "sha2-256"
        self.marshaling = marshaling or "asn1"
        self.prehashed = prehashed
        self.signature_algorithm = signature_algorithm or "pss"
        self.salt_length = salt_length

    def check(self, alg) -> None:
        if self.hash_algorithm not in HASHES:
            raise UsageError(f'invalid hash algorithm "{self.hash_algorithm}"')
        if self.marshaling not in ("asn1", "jws"):
            raise UsageError(f'invalid marshaling type "{self.marshaling}"')
        if self.prehashed:
            raise UsageError("prehashed input is not supported by kms-cli: send the input itself")
        family = alg.name.split("-")[0]
        if family in ("ecdsa", "rsa") and self.hash_algorithm != "sha2-256":
            raise UsageError(f"hash algorithm {self.hash_algorithm} is not supported for {vault_type(alg.name)} "
                             "keys by kms-cli (only sha2-256)")
        if family == "rsa":
            if self.signature_algorithm != "pss":
                raise UsageError(f"rsa signature algorithm {self.signature_algorithm} is not supported by kms-cli "
                                 "(only pss)")
            salt = self.salt_length
            if salt not in (None, "", "auto", "hash", "32", 32):
                raise UsageError(f"salt length {salt} is not supported by kms-cli (its PSS salt is the hash "
                                 "length, 32 bytes: use auto or hash)")


def _der_to_raw(der: bytes, size: int) -> bytes:
    """An ECDSA DER Ecdsa-Sig-Value -> r || s (JWS, RFC 7518 section 3.4)."""
    def integer(buf: bytes, i: int) -> tuple[int, int]:
        if buf[i] != 0x02 or buf[i + 1] > 0x7F:
            raise ValueError("not a DER integer")
        n = buf[i + 1]
        return int.from_bytes(buf[i + 2:i + 2 + n], "big"), i + 2 + n

    if der[0] != 0x30:
        raise ValueError("not a DER sequence")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    r, i = integer(der, i)
    s, _ = integer(der, i)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _raw_to_der(raw: bytes) -> bytes:
    def integer(n: int) -> bytes:
        b = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes([len(b)]) + b

    half = len(raw) // 2
    body = integer(int.from_bytes(raw[:half], "big")) + integer(int.from_bytes(raw[half:], "big"))
    return b"\x30" + (bytes([len(body)]) if len(body) < 0x80 else b"\x81" + bytes([len(body)])) + body


def _encode_signature(alg, version: int, sig: bytes, marshaling: str) -> str:
    if marshaling == "jws":
        if alg.name.startswith("ecdsa-"):
            sig = _der_to_raw(sig, 32)
        return f"vault:v{version}:" + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    return f"vault:v{version}:" + base64.b64encode(sig).decode()


def _decode_signature(alg, body: str, marshaling: str) -> bytes:
    if marshaling == "jws":
        try:
            sig = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise TransitError("invalid base64 signature value") from None
        if alg.name.startswith("ecdsa-"):
            if len(sig) != 64:
                return b""  # verifies as false
            sig = _raw_to_der(sig)
        return sig
    return _b64(body, "invalid base64 signature value")


def sign(vault, full: str, items: list, options: SignOptions, *, batch: bool = False) -> list:
    """items: (input, key_version) or an exception. Returns per item (version, signature string)."""
    from kms_cli.crypto import sign as crypto_sign

    with vault.operation("sign", full, write=False) as rec:
        key = _Key(vault, full, "sign")
        options.check(key.alg)

        def run(item):
            message, version = item
            v = key.version(version, "sign")
            sig = crypto_sign.sign(key.alg.name, key.material(v), message)
            return v["version"], _encode_signature(key.alg, v["version"], sig, options.marshaling)

        out, versions = _each(items, run, batch)
        _finish(rec, out, batch, versions)
    return out


def verify(vault, full: str, items: list, options: SignOptions, *, batch: bool = False) -> list:
    """items: (input, signature string) or an exception. Returns per item (version, valid: bool)."""
    from kms_cli.crypto import sign as crypto_sign

    with vault.operation("verify", full, write=False) as rec:
        key = _Key(vault, full, "verify")
        options.check(key.alg)

        def run(item):
            message, text = item
            n, body = _split(text, "signature")
            v = key.version(n, "verify")
            sig = _decode_signature(key.alg, body, options.marshaling)
            public = key.public(v)
            if public is None:
                raise StateError(f"key version {n} has no public key")
            return n, bool(sig) and crypto_sign.verify(key.alg.name, public, message, sig)

        out, versions = _each(items, run, batch)
        _finish(rec, out, batch, versions)
        if batch:
            rec.extra["invalid"] = sum(1 for r in out if not isinstance(r, Exception) and not r[1])
        elif out and not isinstance(out[0], Exception) and not out[0][1]:
            rec.extra = {"valid": False}
    return out


# -- keys --------------------------------------------------------------------------------------

_CURVE = {"ed25519": "ed25519", "ecdsa-p256": "P-256", "ecdsa-secp256k1": "secp256k1"}


def _describe(vault, k) -> dict:
    """What a Vault key read shows of key `k`: type, versions (creation time, public key), flags."""
    from kms_cli.crypto import pubkey

    alg = algorithms.get(k.row["algorithm"])
    now = durations.now()
    versions = []
    usable = []
    for v in k.ordered():
        state = keys.version_state(v, now)
        if state == keys.V_DESTROYED:
            continue
        if state in (keys.V_ACTIVE, keys.V_DECRYPT_ONLY):
            usable.append(v["version"])
        public = None
        if not alg.symmetric and v["public"] is not None:
            raw = vault.open_material(k.name, v["version"], alg.name, v["public"], kind="public")
            if alg.name == "ed25519":
                public = base64.b64encode(raw).decode()
            else:
                try:
                    public = pubkey.to_pem(alg.name, raw).decode()
                except UsageError:
                    public = base64.b64encode(raw).decode()
        versions.append({"version": v["version"], "created": v["created"], "state": state, "public_key": public})
    return {
        "name": k.name,
        "type": vault_type(alg.name),
        "algorithm": alg.name,
        "purpose": alg.purpose,
        "symmetric": alg.symmetric,
        "curve": _CURVE.get(alg.name, alg.name),
        "versions": versions,
        "latest_version": max(k.versions),
        "primary_version": k.row["primary_version"],
        "min_decryption_version": min(usable) if usable else max(k.versions),
        "rotate_every": k.row["rotate_every"] or 0,
        "state": keys.key_state(k.row, k.ordered(), now),
    }


def read_key(vault, full: str) -> dict:
    with vault.operation("key.show", full, write=False):
        k = rows.load_key(vault, full)
        if k is None:
            raise NotFoundError(f"no key named {vault.ns.relative(full)!r}")
        return _describe(vault, k)


def list_keys(vault, under: str) -> list[str]:
    """Full names of the keys inside the namespace `under` ("" = all)."""
    with vault.operation("key.list", under or None, write=False):
        return [k.name for k in rows.load_keys(vault, under)]


def _after_write(vault, full: str) -> dict:
    """The key as the request that just changed it leaves it (that request's entry records it)."""
    with vault.store.read():
        return _describe(vault, rows.load_key(vault, full))


def create_key(vault, full: str, type_: str, rotate_every: int | None) -> tuple[bool, dict]:
    """Create key `full` of Vault type `type_` (an existing key is left as it is, as Vault does, and
    the request is recorded as a read of it): (created, its description)."""
    algorithm = algorithm_for(type_)
    with vault.store.write():  # the check and the creation in one transaction
        if vault.store.key(full) is None:
            keys.create(vault, vault.ns.relative(full), algorithm, rotate_every, None, {})
            return True, _after_write(vault, full)
        return False, read_key(vault, full)


def rotate_key(vault, full: str) -> dict:
    keys.rotate(vault, vault.ns.relative(full))
    return _after_write(vault, full)
