"""Signatures and public keys: sign, verify (finding the version after rotation), key public.

A kms-cli signature is a small binary envelope naming the key and version, so
`verify` finds the version after rotation:

    magic "kms-cli.sig" | format 0x01 | vault id (16) | u16 name | name | u32 version
    | u8 algorithm | algorithm | u32 signature | signature

The algorithm signs kms-cli's domain-separated statement over SHA-512 of the
input, bound to (vault id, name, version) and the `--context` string, which is not
carried: the verifier must give the same one (see `kms_cli.crypto.sign`). `--raw`
writes the bare algorithm signature of the input itself instead (verifiable with
OpenSSL from `key public`); `verify` tells the two apart by the magic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kms_cli.errors import IntegrityError, NotFoundError, StateError
from kms_cli.vault import keys

MAGIC = b"kms-cli.sig"
FORMAT = 1
_CHUNK = 1 << 20


@dataclass
class Signature:
    vault_id: bytes
    name: str
    version: int
    algorithm: str
    signature: bytes

    def to_bytes(self) -> bytes:
        n, a = self.name.encode(), self.algorithm.encode()
        return (MAGIC + bytes([FORMAT]) + self.vault_id + struct.pack(">H", len(n)) + n
                + struct.pack(">I", self.version) + bytes([len(a)]) + a
                + struct.pack(">I", len(self.signature)) + self.signature)

    @classmethod
    def parse(cls, raw: bytes) -> "Signature":
        bad = IntegrityError("malformed kms-cli signature")
        try:
            if raw[: len(MAGIC)] != MAGIC or raw[len(MAGIC)] != FORMAT:
                raise bad
            i = len(MAGIC) + 1
            vault_id = raw[i:i + 16]
            i += 16
            (n,) = struct.unpack(">H", raw[i:i + 2])
            name = raw[i + 2:i + 2 + n].decode()
            i += 2 + n
            (version,) = struct.unpack(">I", raw[i:i + 4])
            i += 4
            a = raw[i]
            algorithm = raw[i + 1:i + 1 + a].decode()
            i += 1 + a
            (s,) = struct.unpack(">I", raw[i:i + 4])
            sig = raw[i + 4:i + 4 + s]
            if len(vault_id) != 16 or len(sig) != s or i + 4 + s != len(raw):
                raise bad
        except (IndexError, struct.error, UnicodeDecodeError):
            raise bad from None
        return cls(vault_id, name, version, algorithm, sig)


def is_kms_signature(raw: bytes) -> bool:
    return raw.startswith(MAGIC)


def _binding(vault_id: bytes, name: str, version: int) -> bytes:
    n = name.encode()
    return vault_id + struct.pack(">H", len(n)) + n + struct.pack(">I", version)


def _feed(stream, src) -> None:
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            return
        stream.update(chunk)


def sign(vault, name: str, src, *, raw: bool, context: bytes) -> bytes:
    from kms_cli.crypto import sign as crypto_sign

    full = vault.ns.full(name)
    with vault.operation("sign", full, write=False) as rec:
        row, v, alg = keys.usable_version(vault, full, None, "sign")
        rec.version = v["version"]
        private = vault.open_material(full, v["version"], alg.name, v["material"])
        if raw:
            signer = crypto_sign.begin_sign(alg.name, private, raw=True, context=context)
        else:
            signer = crypto_sign.begin_sign(alg.name, private, binding=_binding(vault.vault_id, full, v["version"]),
                                            context=context)
        _feed(signer, src)
        sig = signer.finalize()
        if raw:
            return sig
        return Signature(vault.vault_id, full, v["version"], alg.name, sig).to_bytes()


def _public(vault, full: str, v, alg) -> bytes:
    if v["public"] is None:
        raise StateError(f"key {vault.ns.relative(full)!r} version {v['version']} has no public key")
    return vault.open_material(full, v["version"], alg.name, v["public"], kind="public")


def verify(vault, name: str, signature: bytes, src, *, context: bytes) -> dict:
    """Valid -> returns; invalid -> IntegrityError (exit 5); revoked/expired version -> StateError (6)."""
    from kms_cli.crypto import sign as crypto_sign

    full = vault.ns.full(name)
    with vault.operation("verify", full, write=False) as rec:
        k = keys.rows.load_key(vault, full)
        if k is None:
            raise NotFoundError(f"no key named {name!r}")
        if is_kms_signature(signature):
            sig = Signature.parse(signature)
            if sig.vault_id != vault.vault_id or sig.name != full:
                raise IntegrityError("the signature was not made by this key")
            rec.version = sig.version
            try:
                row, v, alg = keys.usable_version(vault, full, sig.version, "verify")
            except NotFoundError:
                raise IntegrityError(f"key {name!r} has no version {sig.version}: invalid signature") from None
            if alg.name != sig.algorithm:
                raise IntegrityError("invalid signature: algorithm mismatch")
            verifier = crypto_sign.begin_verify(alg.name, _public(vault, full, v, alg), sig.signature,
                                                binding=_binding(vault.vault_id, full, sig.version),
                                                context=context)
            _feed(verifier, src)
            if not verifier.finalize():
                raise IntegrityError("invalid signature")
            return {"valid": True, "key": name, "version": sig.version, "algorithm": alg.name}
        # A bare signature: check it under every version at once, in one pass over the input.
        alg = keys.algorithms.get(k.row["algorithm"])
        if alg.purpose != "sign":
            raise StateError(f"key {name!r} is an encryption key ({alg.name}); it cannot verify")
        candidates = []
        for v in reversed(k.ordered()):
            if v["public"] is not None:
                public = _public(vault, full, v, alg)
                candidates.append((v["version"], crypto_sign.begin_verify(alg.name, public, signature, raw=True,
                                                                          context=context)))
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            for _, verifier in candidates:
                verifier.update(chunk)
        valid_under = next((version for version, verifier in candidates if verifier.finalize()), None)
        if valid_under is None:
            raise IntegrityError("invalid signature")
        rec.version = valid_under
        keys.usable_version(vault, full, valid_under, "verify")
        return {"valid": True, "key": name, "version": valid_under, "algorithm": alg.name}


def public_key(vault, name: str, version: int | None, fmt: str) -> tuple[bytes, dict]:
    from kms_cli.crypto import pubkey

    full = vault.ns.full(name)
    with vault.operation("key.public", full, version, write=False) as rec:
        k = keys.rows.load_key(vault, full)
        if k is None:
            raise NotFoundError(f"no key named {name!r}")
        alg = keys.algorithms.get(k.row["algorithm"])
        if alg.symmetric:
            raise StateError(f"key {name!r} is a symmetric key ({alg.name}): it has no public key")
        v = k.version(version or k.row["primary_version"])
        if v is None:
            raise NotFoundError(f"key {name!r} has no version {version}")
        rec.version = v["version"]
        public = _public(vault, full, v, alg)
        return pubkey.export(alg.name, public, fmt), {
            "name": name, "version": v["version"], "algorithm": alg.name, "fingerprint": v["fingerprint"]}
