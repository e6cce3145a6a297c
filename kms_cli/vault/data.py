"""Data operations: streamed encrypt, decrypt and rewrap of the envelope format, and data keys."""

from __future__ import annotations

import base64

from kms_cli import envelope
from kms_cli.crypto import chunked, wrap
from kms_cli.crypto.primitives import hkdf_sha256, random_bytes
from kms_cli.errors import IntegrityError, NotFoundError
from kms_cli.vault import keys

SUITE_OF = {"aes-256-gcm": envelope.SUITE_COBBLESTONE, "chacha20-poly1305": envelope.SUITE_AGE_STREAM}
_CHACHA_LABEL = b"kms-cli/payload/age-stream/v1\x00"


def _suite_for(algorithm: str) -> int:
    return SUITE_OF.get(algorithm, envelope.SUITE_COBBLESTONE)


def _wrap_dek(vault, alg, material: bytes, dek: bytes, header: envelope.Header) -> bytes:
    return wrap.seal(alg.name, material, dek, header.wrap_aad())


def _unwrap_dek(vault, alg, material: bytes, header: envelope.Header) -> bytes:
    try:
        return wrap.open(alg.name, material, header.wrap, header.wrap_aad())
    except IntegrityError:
        raise IntegrityError("the ciphertext header failed authentication") from None


def _seal_payload(header, dek: bytes, context_pairs, src, dst) -> None:
    ctx = envelope.payload_context(header, context_pairs)
    if header.suite == envelope.SUITE_COBBLESTONE:
        chunked.encrypt_stream(dek, ctx, src, dst)
    else:
        okm = hkdf_sha256(dek, salt=None, info=_CHACHA_LABEL + ctx, length=64)
        dst.write(okm[32:])  # key commitment, checked before any chunk is opened
        chunked.age_encrypt_stream(okm[:32], src, dst)


def _open_payload(header, dek: bytes, context_pairs, src, dst) -> None:
    from kms_cli.crypto.primitives import equal

    ctx = envelope.payload_context(header, context_pairs)
    if header.suite == envelope.SUITE_COBBLESTONE:
        chunked.decrypt_stream(dek, ctx, src, dst)
    else:
        okm = hkdf_sha256(dek, salt=None, info=_CHACHA_LABEL + ctx, length=64)
        commitment = envelope.read_exact(src, 32)
        if len(commitment) != 32 or not equal(commitment, okm[32:]):
            raise IntegrityError("key commitment mismatch: wrong context or altered header")
        chunked.age_decrypt_stream(okm[:32], src, dst)


def encrypt(vault, name: str, context_pairs, src, dst) -> dict:
    full = vault.ns.full(name)
    with vault.operation("encrypt", full, write=False) as rec:
        row, v, alg = keys.usable_version(vault, full, None, "encrypt")
        rec.version = v["version"]
        material = vault.open_material(full, v["version"], alg.name, v["material"])
        dek = random_bytes(32)
        header = envelope.Header(suite=_suite_for(alg.name), vault_id=vault.vault_id, name=full, version=v["version"])
        header.wrap = _wrap_dek(vault, alg, material, dek, header)
        dst.write(header.to_bytes())
        _seal_payload(header, dek, context_pairs, src, dst)
        return {"key": name, "version": v["version"]}


def _resolve(vault, header: envelope.Header, use: str):
    """The key version a header names, or exit 5 when it is not this vault's."""
    if header.vault_id != vault.vault_id:
        raise IntegrityError("the ciphertext belongs to another vault")
    if not vault.ns.contains(header.name):
        raise IntegrityError("the ciphertext's key is not in this vault")
    try:
        return keys.usable_version(vault, header.name, header.version, use)
    except NotFoundError:
        raise IntegrityError("the ciphertext's key or version is not in this vault") from None


def decrypt(vault, context_pairs, src, dst) -> dict:
    with vault.operation("decrypt", write=False) as rec:
        header = envelope.read_header(src)
        if header.vault_id == vault.vault_id and vault.ns.contains(header.name):
            rec.target, rec.version = header.name, header.version
        row, v, alg = _resolve(vault, header, "decrypt")
        material = vault.open_material(header.name, v["version"], alg.name, v["material"])
        dek = _unwrap_dek(vault, alg, material, header)
        _open_payload(header, dek, context_pairs, src, dst)
        return {"key": vault.ns.relative(header.name), "version": header.version}


def rewrap(vault, src, dst) -> dict:
    """Re-wrap the data key to the key's current version; the payload is copied unchanged."""
    import shutil

    with vault.operation("rewrap", write=False) as rec:
        header = envelope.read_header(src)
        if header.vault_id == vault.vault_id and vault.ns.contains(header.name):
            rec.target, rec.version = header.name, header.version
        row, v, alg = _resolve(vault, header, "rewrap")
        material = vault.open_material(header.name, v["version"], alg.name, v["material"])
        dek = _unwrap_dek(vault, alg, material, header)
        _, cur, _ = keys.usable_version(vault, header.name, None, "encrypt")
        new_material = vault.open_material(header.name, cur["version"], alg.name, cur["material"])
        header.version = cur["version"]
        header.wrap = _wrap_dek(vault, alg, new_material, dek, header)
        rec.extra = {"from_version": v["version"], "to_version": cur["version"]}
        dst.write(header.to_bytes())
        shutil.copyfileobj(src, dst, 1 << 20)
        return {"key": vault.ns.relative(header.name), "from_version": v["version"], "version": cur["version"]}


def datakey(vault, name: str) -> dict:
    """A fresh 32-byte data key and its ciphertext (which `decrypt` opens)."""
    import io

    full = vault.ns.full(name)
    with vault.operation("datakey", full, write=False) as rec:
        row, v, alg = keys.usable_version(vault, full, None, "datakey")
        rec.version = v["version"]
        material = vault.open_material(full, v["version"], alg.name, v["material"])
        plaintext = random_bytes(32)
        dek = random_bytes(32)
        header = envelope.Header(suite=_suite_for(alg.name), vault_id=vault.vault_id, name=full, version=v["version"])
        header.wrap = _wrap_dek(vault, alg, material, dek, header)
        out = io.BytesIO()
        out.write(header.to_bytes())
        _seal_payload(header, dek, [], io.BytesIO(plaintext), out)
        return {
            "plaintext": base64.b64encode(plaintext).decode(),
            "ciphertext": base64.b64encode(out.getvalue()).decode(),
            "key": name,
            "version": v["version"],
        }
