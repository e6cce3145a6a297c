"""Chunked streaming encryption: Cobblestone-256 and age's payload STREAM.

Cobblestone-256 (c2sp.org/chunked-encryption with SHA-512 and AEAD_AES_256_GCM)::

    key || base nonce || commitment = HKDF-Expand-SHA-512(prk = input key,
        info = "c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM" || 0x00 || salt || context,
        length = 32 + 12 + 32)
    ciphertext = salt (24) || commitment (32) || AES-256-GCM chunks

The plaintext is cut in 16 KiB chunks; the final chunk is always shorter than
16 KiB (possibly empty), which is what marks the end of the message. Chunk i is
sealed with nonce = base nonce XOR i (big-endian, 12 bytes wide) and empty AAD.
Decryption checks the commitment (constant time) before touching any chunk and
rejects truncation, extension and reordering: all of these end in
`IntegrityError`.

age STREAM (age.md, "Payload")::

    payload = nonce (16) || ChaCha20-Poly1305 chunks of 64 KiB
    payload key = HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload")
    chunk nonce = 11-byte big-endian counter || 0x01 for the final chunk, 0x00 before

The final chunk may be a full 64 KiB but is never empty unless the whole
payload is.

Performance: the block functions seal or open every chunk of a block with
`encrypt_into` / `decrypt_into` straight into reused output buffers (no per-chunk
allocation besides the 12-byte nonce). The streaming functions hand them to the engine
in `kms_cli.crypto.streaming` (imported only when a stream runs), which processes large
streams in parallel, in worker processes, in constant memory and in order; large
in-memory messages are processed by a few threads.

Errors: anything wrong with a ciphertext (or a wrong key / key size at
decryption time) raises `IntegrityError` with a short message; `ValueError` is
only raised at encryption time for programming errors (bad key or salt size).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from kms_cli.crypto import primitives
from kms_cli.crypto.blocks import BlockViews, InputChangedError, WorkerError, default_threads, resolve_threads
from kms_cli.crypto.primitives import AESGCM, ChaCha20Poly1305
from kms_cli.errors import IntegrityError

__all__ = [
    "TAG",
    "CHUNK_SIZE",
    "SALT_SIZE",
    "COMMITMENT_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "AGE_CHUNK_SIZE",
    "AGE_NONCE_SIZE",
    "AGE_FILE_KEY_SIZE",
    "seal",
    "open",
    "encrypt_stream",
    "decrypt_stream",
    "age_encrypt_stream",
    "age_decrypt_stream",
    "ciphertext_size",
    "default_threads",
    "WorkerError",
    "InputChangedError",
]

TAG = 16

# Cobblestone-256
CHUNK_SIZE = 16384
_CT_CHUNK = CHUNK_SIZE + TAG
SALT_SIZE = 24
COMMITMENT_SIZE = 32
HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE
KEY_SIZE = 32
NONCE_SIZE = 12
MAX_CHUNKS = 1 << 38
AEAD_NAME = b"AEAD_AES_256_GCM"
_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+" + AEAD_NAME + b"\x00"

# age payload STREAM
AGE_CHUNK_SIZE = 65536
_AGE_CT_CHUNK = AGE_CHUNK_SIZE + TAG
AGE_NONCE_SIZE = 16
AGE_FILE_KEY_SIZE = 16
# age's file key is 128 bits; kms-cli feeds the STREAM a 256-bit key derived from its data key
# (HKDF accepts either as input keying material), so both sizes are accepted.
AGE_FILE_KEY_SIZES = (16, 32)
_AGE_MAX_CHUNKS = 1 << 88  # 11-byte counter

# Streaming geometry: chunks per block (one block = one worker task), ~1 MiB of plaintext.
_COB_BLOCK_CHUNKS = 64
_AGE_BLOCK_CHUNKS = 16

_ERR_TRUNCATED = "ciphertext is truncated"
_ERR_COMMITMENT = "key commitment mismatch: wrong key or context"
_ERR_KEY_SIZE = "wrong key size"


def ciphertext_size(plaintext_size: int) -> int:
    """Length of the Cobblestone-256 ciphertext of a message of `plaintext_size` bytes."""
    return HEADER_SIZE + plaintext_size + (plaintext_size // CHUNK_SIZE + 1) * TAG


# --------------------------------------------------------------------------
# One-AEAD-call helpers (also what the AEAD vector tests exercise).


def _seal_into(aead, nonce: bytes, data, aad, out) -> None:
    """One AEAD seal of `data` into `out` (len(data) + TAG bytes), as the chunk loops do."""
    aead.encrypt_into(nonce, data, aad, out)


def _open_into(aead, nonce: bytes, data, aad, out) -> bool:
    """One AEAD open of `data` into `out` (len(data) - TAG bytes); False if it does not authenticate.

    `out` may hold garbage after a failure: never release it then.
    """
    try:
        aead.decrypt_into(nonce, data, aad, out)
    except InvalidTag:
        return False
    return True


# --------------------------------------------------------------------------
# Key schedules.


def _derive(key: bytes, salt: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    """Cobblestone-256 key schedule: (AEAD key, base nonce, commitment)."""
    okm = primitives.hkdf_expand(
        bytes(key),
        info=_INFO_PREFIX + bytes(salt) + bytes(context),
        length=KEY_SIZE + NONCE_SIZE + COMMITMENT_SIZE,
        hash_name="sha512",
    )
    return okm[:KEY_SIZE], okm[KEY_SIZE : KEY_SIZE + NONCE_SIZE], okm[KEY_SIZE + NONCE_SIZE :]


class _Cobblestone:
    __slots__ = ("aead", "base", "commitment")

    def __init__(self, key: bytes, salt: bytes, context: bytes):
        aead_key, base_nonce, self.commitment = _derive(key, salt, context)
        self.aead = AESGCM(aead_key)
        self.base = int.from_bytes(base_nonce, "big")


def _age_aead(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    payload_key = primitives.hkdf_sha256(bytes(file_key), salt=bytes(nonce), info=b"payload", length=32)
    return ChaCha20Poly1305(payload_key)


def _check_seal_key(key: bytes, size: int | tuple[int, ...]) -> None:
    sizes = size if isinstance(size, tuple) else (size,)
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) not in sizes:
        raise ValueError(f"key must be {' or '.join(map(str, sizes))} bytes")


def _check_open_key(key: bytes, size: int | tuple[int, ...]) -> None:
    sizes = size if isinstance(size, tuple) else (size,)
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) not in sizes:
        raise IntegrityError(_ERR_KEY_SIZE)


# --------------------------------------------------------------------------
# Block functions: work(state, views, n, first, at_eof) seals or opens the `n` input bytes
# of one block (a contiguous run of chunks, the first numbered `first`; `views` are its
# `blocks.BlockViews`). Each returns (output bytes ready in outmv, error message or None);
# on error the first `output bytes` of outmv are authenticated plaintext.


def _cob_seal_block(st: _Cobblestone, v: BlockViews, n: int, first: int, at_eof: bool):
    nfull = n // CHUNK_SIZE
    if first + nfull + (1 if at_eof else 0) > MAX_CHUNKS:
        raise ValueError("message is too long for chunked encryption")
    ins, outs = v.chunks(nfull)
    enc = st.aead.encrypt_into
    base = st.base
    i = first
    for src, dst in zip(ins, outs):
        enc((base ^ i).to_bytes(12, "big"), src, None, dst)
        i += 1
    out_len = nfull * _CT_CHUNK
    if at_eof:  # the short (possibly empty) final chunk
        rem = n - nfull * CHUNK_SIZE
        final_out = v.outmv[out_len : out_len + rem + TAG]
        _seal_into(st.aead, (base ^ i).to_bytes(12, "big"), v.inmv[nfull * CHUNK_SIZE : n], None, final_out)
        out_len += rem + TAG
    return out_len, None


def _cob_open_block(st: _Cobblestone, v: BlockViews, n: int, first: int, at_eof: bool):
    nfull = n // _CT_CHUNK
    rem = n - nfull * _CT_CHUNK
    if first + nfull + (1 if rem else 0) > MAX_CHUNKS:
        return 0, "ciphertext has too many chunks"
    ins, outs = v.chunks(nfull)
    dec = st.aead.decrypt_into
    base = st.base
    i = first
    try:
        for src, dst in zip(ins, outs):
            dec((base ^ i).to_bytes(12, "big"), src, None, dst)
            i += 1
    except InvalidTag:
        return (i - first) * CHUNK_SIZE, f"chunk {i} failed authentication"
    out_len = nfull * CHUNK_SIZE
    if at_eof:
        # The final chunk must be short: a ciphertext ending on a full chunk is truncated.
        if rem < TAG:
            return out_len, _ERR_TRUNCATED
        final_out = v.outmv[out_len : out_len + rem - TAG]
        if not _open_into(st.aead, (base ^ i).to_bytes(12, "big"), v.inmv[nfull * _CT_CHUNK : n], None, final_out):
            return out_len, f"chunk {i} failed authentication"
        out_len += rem - TAG
    return out_len, None


def _age_seal_block(aead: ChaCha20Poly1305, v: BlockViews, n: int, first: int, at_eof: bool):
    nfull = n // AGE_CHUNK_SIZE
    rem = n - nfull * AGE_CHUNK_SIZE
    if at_eof and rem == 0 and nfull > 0:
        nplain = nfull - 1  # the last full chunk is the final one
    else:
        nplain = nfull
    if first + nplain + (1 if at_eof else 0) > _AGE_MAX_CHUNKS:  # pragma: no cover - unreachable
        raise ValueError("message is too long for the age stream")
    ins, outs = v.chunks(nplain)
    enc = aead.encrypt_into
    i = first
    for src, dst in zip(ins, outs):
        enc((i << 8).to_bytes(12, "big"), src, None, dst)
        i += 1
    out_len = nplain * _AGE_CT_CHUNK
    if at_eof:
        start = nplain * AGE_CHUNK_SIZE
        size = n - start  # 1..64 KiB, or 0 only for an empty payload (first == 0)
        final_out = v.outmv[out_len : out_len + size + TAG]
        _seal_into(aead, ((i << 8) | 1).to_bytes(12, "big"), v.inmv[start:n], None, final_out)
        out_len += size + TAG
    return out_len, None


def _age_open_block(aead: ChaCha20Poly1305, v: BlockViews, n: int, first: int, at_eof: bool):
    nfull = n // _AGE_CT_CHUNK
    rem = n - nfull * _AGE_CT_CHUNK
    if at_eof and rem == 0 and nfull > 0:
        nplain = nfull - 1  # a full-size final chunk
        rem = _AGE_CT_CHUNK
    else:
        nplain = nfull
    ins, outs = v.chunks(nplain)
    dec = aead.decrypt_into
    i = first
    try:
        for src, dst in zip(ins, outs):
            dec((i << 8).to_bytes(12, "big"), src, None, dst)
            i += 1
    except InvalidTag:
        return (i - first) * AGE_CHUNK_SIZE, f"chunk {i} failed authentication"
    out_len = nplain * AGE_CHUNK_SIZE
    if at_eof:
        if rem < TAG:
            return out_len, _ERR_TRUNCATED
        if rem == TAG and i != 0:
            return out_len, "final chunk is empty"
        start = nplain * _AGE_CT_CHUNK
        final_out = v.outmv[out_len : out_len + rem - TAG]
        if not _open_into(aead, ((i << 8) | 1).to_bytes(12, "big"), v.inmv[start : start + rem], None, final_out):
            return out_len, f"chunk {i} failed authentication"
        out_len += rem - TAG
    return out_len, None


def _run_blocks(work, state, views: list, threads: int | None):
    """Run work on in-memory blocks [(views, n, first, at_eof)], in parallel if there are several."""
    if len(views) > 1:
        threads = resolve_threads(threads)
    if len(views) <= 1 or threads <= 1:
        return [work(state, *item) for item in views]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kms-chunked") as pool:
        futures = [pool.submit(work, state, *item) for item in views]
        return [f.result() for f in futures]


# --------------------------------------------------------------------------
# Cobblestone-256, in memory.


def seal(key: bytes, plaintext: bytes, context: bytes, *, salt: bytes | None = None) -> bytes:
    """Cobblestone-256 encryption of a whole message: salt(24) || commitment(32) || chunks."""
    _check_seal_key(key, KEY_SIZE)
    if salt is None:
        salt = primitives.random_bytes(SALT_SIZE)
    elif len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    st = _Cobblestone(key, salt, context)
    pt = memoryview(plaintext).cast("B")
    size = len(pt)
    out = bytearray(ciphertext_size(size))
    out[:SALT_SIZE] = salt
    out[SALT_SIZE:HEADER_SIZE] = st.commitment
    omv = memoryview(out)[HEADER_SIZE:]
    per_block = CHUNK_SIZE * _COB_BLOCK_CHUNKS
    items = []
    first = 0
    start = 0
    while True:
        end = min(start + per_block, size)
        at_eof = end - start < per_block or end == size
        ostart = first * _CT_CHUNK
        oend = ostart + (end - start) + ((end - start) // CHUNK_SIZE + (1 if at_eof else 0)) * TAG
        items.append((BlockViews(pt[start:end], omv[ostart:oend], CHUNK_SIZE, _CT_CHUNK), end - start, first, at_eof))
        if at_eof:
            break
        first += _COB_BLOCK_CHUNKS
        start = end
    _run_blocks(_cob_seal_block, st, items, None)
    return bytes(out)


def open(key: bytes, ciphertext: bytes, context: bytes) -> bytes:  # noqa: A001 - module API
    """Cobblestone-256 decryption of a whole message; IntegrityError on any failure."""
    _check_open_key(key, KEY_SIZE)
    ct = memoryview(ciphertext).cast("B")
    if len(ct) < HEADER_SIZE:
        raise IntegrityError(_ERR_TRUNCATED)
    st = _Cobblestone(key, ct[:SALT_SIZE], context)
    if not primitives.equal(st.commitment, bytes(ct[SALT_SIZE:HEADER_SIZE])):
        raise IntegrityError(_ERR_COMMITMENT)
    body = ct[HEADER_SIZE:]
    size = len(body)
    nfull, rem = divmod(size, _CT_CHUNK)
    if rem < TAG:  # ends on a full chunk (missing final chunk) or a partial tag
        raise IntegrityError(_ERR_TRUNCATED)
    out = bytearray(size - (nfull + 1) * TAG)
    omv = memoryview(out)
    per_block = _CT_CHUNK * _COB_BLOCK_CHUNKS
    items = []
    first = 0
    start = 0
    while True:
        end = min(start + per_block, size)
        at_eof = end == size
        ostart = first * CHUNK_SIZE
        nb = (end - start) // _CT_CHUNK
        oend = ostart + nb * CHUNK_SIZE + (rem - TAG if at_eof else 0)
        items.append((BlockViews(body[start:end], omv[ostart:oend], _CT_CHUNK, CHUNK_SIZE), end - start, first, at_eof))
        if at_eof:
            break
        first += _COB_BLOCK_CHUNKS
        start = end
    for _out_len, err in _run_blocks(_cob_open_block, st, items, None):
        if err is not None:
            raise IntegrityError(err)
    return bytes(out)


# --------------------------------------------------------------------------
# Cobblestone-256, streaming.


def encrypt_stream(
    key: bytes, context: bytes, src, dst, *, salt: bytes | None = None, threads: int | None = None
) -> int:
    """Encrypt src (from its position to EOF) to dst as Cobblestone-256; returns bytes written."""
    _check_seal_key(key, KEY_SIZE)
    if salt is None:
        salt = primitives.random_bytes(SALT_SIZE)
    elif len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes")
    from kms_cli.crypto import streaming

    st = _Cobblestone(key, salt, context)
    streaming.write_all(dst, memoryview(bytes(salt) + st.commitment))
    return HEADER_SIZE + streaming.run(src, dst, _cob_seal_block, st, CHUNK_SIZE, _CT_CHUNK, _COB_BLOCK_CHUNKS, threads)


def decrypt_stream(key: bytes, context: bytes, src, dst, *, threads: int | None = None) -> int:
    """Decrypt a Cobblestone-256 ciphertext from src to dst; returns plaintext bytes written.

    The commitment is checked before any chunk; chunks are written in order and only once
    authenticated; the first failure raises IntegrityError after the authenticated prefix.
    """
    from kms_cli.crypto import streaming

    _check_open_key(key, KEY_SIZE)
    header = bytearray(HEADER_SIZE)
    if streaming.read_full(src, memoryview(header)) < HEADER_SIZE:
        raise IntegrityError(_ERR_TRUNCATED)
    st = _Cobblestone(key, header[:SALT_SIZE], context)
    if not primitives.equal(st.commitment, bytes(header[SALT_SIZE:])):
        raise IntegrityError(_ERR_COMMITMENT)
    return streaming.run(src, dst, _cob_open_block, st, _CT_CHUNK, CHUNK_SIZE, _COB_BLOCK_CHUNKS, threads)


# --------------------------------------------------------------------------
# age payload STREAM.


def age_encrypt_stream(file_key: bytes, src, dst, *, nonce: bytes | None = None, threads: int | None = None) -> int:
    """Write age's payload (nonce || STREAM chunks) for src to dst; returns bytes written."""
    _check_seal_key(file_key, AGE_FILE_KEY_SIZES)
    if nonce is None:
        nonce = primitives.random_bytes(AGE_NONCE_SIZE)
    elif len(nonce) != AGE_NONCE_SIZE:
        raise ValueError(f"nonce must be {AGE_NONCE_SIZE} bytes")
    from kms_cli.crypto import streaming

    aead = _age_aead(file_key, nonce)
    streaming.write_all(dst, memoryview(bytes(nonce)))
    return AGE_NONCE_SIZE + streaming.run(
        src, dst, _age_seal_block, aead, AGE_CHUNK_SIZE, _AGE_CT_CHUNK, _AGE_BLOCK_CHUNKS, threads
    )


def age_decrypt_stream(file_key: bytes, src, dst, *, threads: int | None = None) -> int:
    """Decrypt age's payload from src to dst; returns plaintext bytes written (IntegrityError on failure)."""
    from kms_cli.crypto import streaming

    _check_open_key(file_key, AGE_FILE_KEY_SIZES)
    nonce = bytearray(AGE_NONCE_SIZE)
    if streaming.read_full(src, memoryview(nonce)) < AGE_NONCE_SIZE:
        raise IntegrityError(_ERR_TRUNCATED)
    aead = _age_aead(file_key, nonce)
    return streaming.run(src, dst, _age_open_block, aead, _AGE_CT_CHUNK, AGE_CHUNK_SIZE, _AGE_BLOCK_CHUNKS, threads)
