"""Data operations: streamed encrypt, decrypt and rewrap of the envelope format, and data keys."""

from __future__ import annotations

import base64
import struct

from kms_cli import envelope
from kms_cli.crypto import chunked, wrap
from kms_cli.crypto.primitives import hkdf_sha256, random_bytes
from kms_cli.errors import IntegrityError, KmsError, NotFoundError
from kms_cli.vault import keys

SUITE_OF = {"aes-256-gcm": envelope.SUITE_COBBLESTONE, "chacha20-poly1305": envelope.SUITE_AGE_STREAM}
_CHACHA_LABEL = b"kms-cli/payload/age-stream/v1\x00"


def _suite_for(algorithm: str) -> int:
    return SUITE_OF.get(algorithm, envelope.SUITE_COBBLESTONE)


# For asymmetric encryption keys the `wrap` field is
#   fingerprint(32) || u16 len(kem_ct) || kem_ct || AEAD(kek, data key)
# with kek = HKDF-SHA-256(shared secret, info = label || fingerprint || kem_ct || wrap AAD):
# the KEM (RSA-OAEP, ML-KEM or the X-Wing hybrid, whose combiner already binds both shared
# secrets, ciphertexts and public keys) carries a key-encryption key, so `rewrap` can
# re-encapsulate to a new version while the payload's data key stays the same.
_KEM_LABEL = b"kms-cli/kem-kek/v1\x00"
NO_VAULT = bytes(16)  # header vault id of `encrypt --public-key`: the key is found by fingerprint


def _kek(shared: bytes, fp: bytes, kem_ct: bytes, header: envelope.Header) -> bytes:
    return hkdf_sha256(shared, salt=None, info=_KEM_LABEL + fp + kem_ct + header.wrap_aad())


def wrap_to_public(alg_name: str, public: bytes, dek: bytes, header: envelope.Header) -> bytes:
    from kms_cli.crypto import kem, pubkey

    fp = pubkey.fingerprint(alg_name, public)
    kem_ct, shared = kem.encapsulate(alg_name, public)
    sealed = wrap.seal("aes-256-gcm", _kek(shared, fp, kem_ct, header), dek, header.wrap_aad())
    return fp + struct.pack(">H", len(kem_ct)) + kem_ct + sealed


def _split_kem_wrap(blob: bytes) -> tuple[bytes, bytes, bytes]:
    if len(blob) < 34:
        raise IntegrityError("the ciphertext header failed authentication")
    fp, (n,) = blob[:32], struct.unpack(">H", blob[32:34])
    kem_ct, sealed = blob[34:34 + n], blob[34 + n:]
    if len(kem_ct) != n:
        raise IntegrityError("the ciphertext header failed authentication")
    return fp, kem_ct, sealed


def _wrap_dek(vault, alg, material: bytes, dek: bytes, header: envelope.Header, public: bytes | None) -> bytes:
    if alg.symmetric:
        return wrap.seal(alg.name, material, dek, header.wrap_aad())
    return wrap_to_public(alg.name, public, dek, header)


def _unwrap_dek(vault, alg, material: bytes, header: envelope.Header, fingerprint: str | None) -> bytes:
    try:
        if alg.symmetric:
            return wrap.open(alg.name, material, header.wrap, header.wrap_aad())
        from kms_cli.crypto import kem

        fp, kem_ct, sealed = _split_kem_wrap(header.wrap)
        if fp.hex() != fingerprint:
            raise IntegrityError("fingerprint mismatch")
        shared = kem.decapsulate(alg.name, material, kem_ct)
        return wrap.open("aes-256-gcm", _kek(shared, fp, kem_ct, header), sealed, header.wrap_aad())
    except IntegrityError:
        raise IntegrityError("the ciphertext header failed authentication") from None


def _public_of(vault, full: str, v, alg) -> bytes | None:
    if alg.symmetric:
        return None
    return vault.open_material(full, v["version"], alg.name, v["public"], kind="public")


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


def _begin_encrypt(vault, full: str, v, alg):
    """A fresh data key and the header that wraps it under key version `v`."""
    material = vault.open_material(full, v["version"], alg.name, v["material"])
    dek = random_bytes(32)
    header = envelope.Header(suite=_suite_for(alg.name), vault_id=vault.vault_id, name=full, version=v["version"])
    header.wrap = _wrap_dek(vault, alg, material, dek, header, _public_of(vault, full, v, alg))
    return header, dek


def _encrypt_with(vault, full: str, v, alg, context_pairs, src, dst) -> None:
    """Header and payload under key version `v`: a fresh data key, wrapped by that version."""
    header, dek = _begin_encrypt(vault, full, v, alg)
    dst.write(header.to_bytes())
    _seal_payload(header, dek, context_pairs, src, dst)


def _stream_after_entry(vault, rec, run) -> None:
    """Stream a payload once the operation's entry is durable; a stream that then fails (input
    that does not authenticate, a read error) records a second entry saying so."""
    try:
        run()
    except KmsError as exc:
        vault.record(rec, exc)
        raise


def encrypt(vault, name: str, context_pairs, src, dst) -> dict:
    full = vault.ns.full(name)
    with vault.operation("encrypt", full, write=False) as rec:
        _, v, alg = keys.usable_version(vault, full, None, "encrypt")
        rec.version = v["version"]
        header, dek = _begin_encrypt(vault, full, v, alg)

    def run():
        dst.write(header.to_bytes())
        _seal_payload(header, dek, context_pairs, src, dst)

    _stream_after_entry(vault, rec, run)
    return {"key": name, "version": v["version"]}


def _resolve(vault, header: envelope.Header, use: str):
    """The key a header names (by vault, name and version, or by public-key fingerprint for
    `encrypt --public-key` files), or exit 5 when it is not this vault's."""
    if header.vault_id == NO_VAULT and not header.name and header.version == 0:
        if len(header.wrap) < 32:
            raise IntegrityError("the ciphertext header failed authentication")
        rows = [r for r in vault.store.key_versions_by_fingerprint(header.wrap[:32].hex())
                if vault.ns.contains(r["name"])]
        if not rows:
            raise IntegrityError("the ciphertext was encrypted to a public key this vault does not hold")
        full, version = rows[0]["name"], rows[0]["version"]
    else:
        if header.vault_id != vault.vault_id:
            raise IntegrityError("the ciphertext belongs to another vault")
        if not vault.ns.contains(header.name):
            raise IntegrityError("the ciphertext's key is not in this vault")
        full, version = header.name, header.version
    try:
        row, v, alg = keys.usable_version(vault, full, version, use)
    except NotFoundError:
        raise IntegrityError("the ciphertext's key or version is not in this vault") from None
    return full, row, v, alg


def decrypt(vault, context_pairs, src, dst) -> dict:
    with vault.operation("decrypt", write=False) as rec:
        header = envelope.read_header(src)
        if header.vault_id == vault.vault_id and vault.ns.contains(header.name):
            rec.target, rec.version = header.name, header.version
        full, row, v, alg = _resolve(vault, header, "decrypt")
        rec.target, rec.version = full, v["version"]
        material = vault.open_material(full, v["version"], alg.name, v["material"])
        dek = _unwrap_dek(vault, alg, material, header, v["fingerprint"])
    # No plaintext leaves before the entry is durable (to stdout, chunks go out as they authenticate).
    _stream_after_entry(vault, rec, lambda: _open_payload(header, dek, context_pairs, src, dst))
    return {"key": vault.ns.relative(full), "version": v["version"]}


def rewrap(vault, src, dst) -> dict:
    """Re-wrap the data key to the key's current version; the payload is copied unchanged."""
    import shutil

    with vault.operation("rewrap", write=False) as rec:
        header = envelope.read_header(src)
        if header.vault_id == vault.vault_id and vault.ns.contains(header.name):
            rec.target, rec.version = header.name, header.version
        full, row, v, alg = _resolve(vault, header, "rewrap")
        rec.target = full
        material = vault.open_material(full, v["version"], alg.name, v["material"])
        dek = _unwrap_dek(vault, alg, material, header, v["fingerprint"])
        _, cur, _ = keys.usable_version(vault, full, None, "encrypt")
        new_material = vault.open_material(full, cur["version"], alg.name, cur["material"])
        if header.vault_id != NO_VAULT:
            header.version = cur["version"]
        header.wrap = _wrap_dek(vault, alg, new_material, dek, header, _public_of(vault, full, cur, alg))
        rec.version = cur["version"]
        rec.extra = {"from_version": v["version"], "to_version": cur["version"]}
        dst.write(header.to_bytes())
        shutil.copyfileobj(src, dst, 1 << 20)
        return {"key": vault.ns.relative(full), "from_version": v["version"], "version": cur["version"]}


def encrypt_to_public_key(key_file_bytes: bytes, context_pairs, src, dst) -> dict:
    """`encrypt --public-key FILE`: no vault needed. The header names no vault or key, only
    the recipient's public-key fingerprint, which the holder's vault looks up on decrypt."""
    from kms_cli.crypto import asym, pubkey

    alg_name, public = pubkey.load_public(key_file_bytes)
    asym.algorithm(alg_name, "encrypt")
    dek = random_bytes(32)
    header = envelope.Header(suite=envelope.SUITE_COBBLESTONE, vault_id=NO_VAULT, name="", version=0)
    header.wrap = wrap_to_public(alg_name, public, dek, header)
    dst.write(header.to_bytes())
    _seal_payload(header, dek, context_pairs, src, dst)
    return {"algorithm": alg_name, "fingerprint": pubkey.fingerprint(alg_name, public).hex()}


def datakey(vault, name: str) -> dict:
    """A fresh 32-byte data key and its ciphertext (which `decrypt` opens)."""
    import io

    full = vault.ns.full(name)
    with vault.operation("datakey", full, write=False) as rec:
        row, v, alg = keys.usable_version(vault, full, None, "datakey")
        rec.version = v["version"]
        plaintext = random_bytes(32)
        out = io.BytesIO()
        _encrypt_with(vault, full, v, alg, [], io.BytesIO(plaintext), out)
        return {
            "plaintext": base64.b64encode(plaintext).decode(),
            "ciphertext": base64.b64encode(out.getvalue()).decode(),
            "key": name,
            "version": v["version"],
        }
