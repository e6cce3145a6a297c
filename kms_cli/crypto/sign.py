"""Signatures: bare algorithm signatures, streaming signers, and kms-cli signed statements.

Two kinds of signature leave this module.

**Raw (bare) signatures** are exactly what the algorithm's standard defines,
over the message itself, so other tools verify them (`sign --raw`):

==================  =================================================================
ed25519             pure Ed25519 (RFC 8032) over the message; the raw stream is
                    buffered in memory (Ed25519 has no streaming form; Ed25519ph
                    would not verify with `openssl pkeyutl -rawin`).
ecdsa-p256,         ECDSA with SHA-256, DER `Ecdsa-Sig-Value`; always produced
ecdsa-secp256k1     low-S (s <= n/2), verification accepts high-S. Streams: SHA-256
                    of the input, signed as Prehashed(SHA-256), which is the same
                    signature (`openssl dgst -sha256 -verify` checks it).
rsa-2048, rsa-4096  RSASSA-PSS, SHA-256, MGF1-SHA-256, salt length 32; streams the
                    same way (`openssl dgst -sha256 -sigopt rsa_padding_mode:pss
                    -sigopt rsa_pss_saltlen:32`).
ml-dsa-44/65/87     pure ML-DSA (FIPS 204, hedged) with the optional context (empty
                    by default, at most 255 bytes). Streams in constant memory: the
                    message representative mu is computed incrementally
                    (`MLDSAMuHasher`) and signed with `sign_mu`, which yields the
                    same pure signature.
slh-dsa-sha2-128s   pure SLH-DSA (FIPS 205) with the optional context, through
                    pqcrypto; the raw stream is buffered in memory.
ed25519-ml-dsa-65   the hybrid, `sig = ed_sig (64) || mldsa_sig (3309)`, 3373 bytes.
                    With M' = HYBRID_LABEL || u8(len(ctx)) || ctx || M, ed_sig is
                    Ed25519(M') and mldsa_sig is ML-DSA-65(M', context=HYBRID_LABEL).
                    Valid only when both halves verify; neither half verifies as a
                    plain Ed25519 / ML-DSA-65 signature of M. Buffered in memory.
==================  =================================================================

A context in raw mode is accepted only by the algorithms that define one
(ML-DSA, SLH-DSA, the hybrid); the others raise UsageError.

**kms-cli signatures** (the default of `sign`) sign a small *signed statement*
with the algorithm's bare signature, for every algorithm alike, so any input
streams in constant memory::

    statement = STATEMENT_PREFIX                       b"kms-cli signed statement v1\\x00"
             || u8(len(alg)) || alg                    the algorithm name, ASCII
             || u16be(len(binding)) || binding         caller's bytes (key name/version)
             || u8(len(ctx)) || ctx                    the context (any algorithm)
             || SHA-512(message)                       64 bytes

The binding is opaque here: the caller encodes key name and version into it
unambiguously (e.g. the signature envelope's header). In this mode the context
lives only in the statement (the algorithm's native context stays empty).

API (all take the algorithm's spec name; keys are the bytes of `asym`):

- `generate(alg)` / `public_from_private(alg, private)`: used through `keygen`.
- `sign(alg, private, message, *, context=b"") -> bytes`: raw signature.
- `verify(alg, public, message, signature, *, context=b"") -> bool`: raw.
- `begin_sign(alg, private, *, raw=False, binding=b"", context=b"") -> Signer`.
- `begin_verify(alg, public, signature, *, raw=False, binding=b"", context=b"")
  -> Verifier`; `update(chunk)` any number of times, then `finalize()` once.
- `signed_statement(alg, digest, *, binding=b"", context=b"") -> bytes`.

Raises: UsageError (unknown algorithm, context too long or not supported),
StateError (an encryption algorithm), IntegrityError (malformed key bytes,
message "invalid private key"/"invalid public key"). A signature that does not
verify, whatever is wrong with it, is `False`, never an exception; a context
longer than 255 bytes also verifies as False (FIPS 204/205 semantics).
"""

from __future__ import annotations

import struct

from kms_cli.crypto import asym
from kms_cli.crypto.asym import SIGN, Algorithm, bad_private, bad_public
from kms_cli.errors import UsageError

STATEMENT_PREFIX = b"kms-cli signed statement v1\x00"
HYBRID_LABEL = b"kms-cli ed25519-ml-dsa-65 v1"

# Group orders, for producing low-S ECDSA signatures (SEC 2, sections 2.4.1 and 2.4.2).
_ORDERS = {
    "ecdsa-p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ecdsa-secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
_RSA_BITS = {"rsa-2048": 2048, "rsa-4096": 4096}
_ED_SIG = 64


# ---------------------------------------------------------------- key objects

def _curve(alg: Algorithm):
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.SECP256R1() if alg.name == "ecdsa-p256" else ec.SECP256K1()


def _mldsa(name: str):
    from cryptography.hazmat.primitives.asymmetric import mldsa

    return {
        "ml-dsa-44": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey),
        "ml-dsa-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
        "ml-dsa-87": (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey),
        "ed25519-ml-dsa-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
    }[name]


def _ed_private(seed: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if len(seed) != 32:
        raise bad_private()
    return Ed25519PrivateKey.from_private_bytes(seed)


def _ed_public(point: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(point) != 32:
        raise bad_public()
    try:
        return Ed25519PublicKey.from_public_bytes(point)
    except ValueError:
        raise bad_public() from None


def _private(alg: Algorithm, private: bytes):
    """The private key object(s) of `alg` (IntegrityError for malformed bytes)."""
    private = bytes(private)
    fam = alg.family
    if fam == "ed25519":
        return _ed_private(private)
    if fam == "ecdsa":
        from cryptography.hazmat.primitives.asymmetric import ec

        scalar = int.from_bytes(private, "big")
        if len(private) != 32 or not 0 < scalar < _ORDERS[alg.name]:
            raise bad_private()
        return ec.derive_private_key(scalar, _curve(alg))
    if fam == "rsa-pss":
        return asym.rsa_private(private, _RSA_BITS[alg.name])
    if fam == "ml-dsa":
        if len(private) != 32:
            raise bad_private()
        return _mldsa(alg.name)[0].from_seed_bytes(private)
    if fam == "slh-dsa":
        if len(private) != 64:
            raise bad_private()
        return private
    if fam == "ed25519-ml-dsa":
        if len(private) != 64:
            raise bad_private()
        return _ed_private(private[:32]), _mldsa(alg.name)[0].from_seed_bytes(private[32:])
    raise AssertionError(fam)  # pragma: no cover


def _public(alg: Algorithm, public: bytes):
    """The public key object(s) of `alg` (IntegrityError for malformed bytes)."""
    public = bytes(public)
    fam = alg.family
    if fam == "ed25519":
        return _ed_public(public)
    if fam == "ecdsa":
        from cryptography.hazmat.primitives.asymmetric import ec

        if len(public) != 65 or public[0] != 4:
            raise bad_public()
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(_curve(alg), public)
        except ValueError:
            raise bad_public() from None
    if fam == "rsa-pss":
        return asym.rsa_public(public, _RSA_BITS[alg.name])
    if fam == "ml-dsa":
        if len(public) != alg.public_size:
            raise bad_public()
        try:
            return _mldsa(alg.name)[1].from_public_bytes(public)
        except ValueError:
            raise bad_public() from None
    if fam == "slh-dsa":
        if len(public) != 32:
            raise bad_public()
        return public
    if fam == "ed25519-ml-dsa":
        if len(public) != alg.public_size:
            raise bad_public()
        try:
            ml = _mldsa(alg.name)[1].from_public_bytes(public[32:])
        except ValueError:
            raise bad_public() from None
        return _ed_public(public[:32]), ml
    raise AssertionError(fam)  # pragma: no cover


def public_key_object(alg: Algorithm, public: bytes):
    """The `cryptography` public key object for PEM/JWK export (None for pqcrypto/hybrid)."""
    if alg.family in ("slh-dsa", "ed25519-ml-dsa"):
        _public(alg, public)
        return None
    return _public(alg, public)


def generate(alg: Algorithm) -> tuple[bytes, bytes]:
    """A fresh key pair of a signing algorithm (see `keygen.generate`)."""
    fam = alg.family
    if fam == "ed25519":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()
    if fam == "ecdsa":
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(_curve(alg))
        return key.private_numbers().private_value.to_bytes(32, "big"), _ec_point(key.public_key())
    if fam == "rsa-pss":
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[alg.name])
        return asym.rsa_private_bytes(key), asym.rsa_public_bytes(key.public_key())
    if fam == "ml-dsa":
        key = _mldsa(alg.name)[0].generate()
        return key.private_bytes_raw(), key.public_key().public_bytes_raw()
    if fam == "slh-dsa":
        pk, sk = asym.pq_module("sign", "slh_dsa_sha2_128s").keygen()
        return bytes(sk), bytes(pk)
    if fam == "ed25519-ml-dsa":
        ed_priv, ed_pub = generate(asym.algorithm("ed25519"))
        ml_priv, ml_pub = generate(asym.algorithm("ml-dsa-65"))
        return ed_priv + ml_priv, ed_pub + ml_pub
    raise AssertionError(fam)  # pragma: no cover


def public_from_private(alg: Algorithm, private: bytes) -> bytes:
    """The public bytes of a private key of a signing algorithm (see `keygen.public_key`)."""
    key = _private(alg, private)
    fam = alg.family
    if fam == "ed25519":
        return key.public_key().public_bytes_raw()
    if fam == "ecdsa":
        return _ec_point(key.public_key())
    if fam == "rsa-pss":
        return asym.rsa_public_bytes(key.public_key())
    if fam == "ml-dsa":
        return key.public_key().public_bytes_raw()
    if fam == "slh-dsa":
        return key[32:]  # FIPS 205 sk = SK.seed || SK.prf || PK.seed || PK.root
    ed, ml = key
    return ed.public_key().public_bytes_raw() + ml.public_key().public_bytes_raw()


def _ec_point(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


# ---------------------------------------------------------------- bare signatures

def _pss():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _low_s(alg: Algorithm, der: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )

    r, s = decode_dss_signature(der)
    n = _ORDERS[alg.name]
    return der if s <= n // 2 else encode_dss_signature(r, n - s)


def _hybrid_message(message: bytes, context: bytes) -> bytes:
    return HYBRID_LABEL + bytes([len(context)]) + bytes(context) + bytes(message)


def _sign_with(alg: Algorithm, key, message: bytes, context: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    fam = alg.family
    if fam == "ed25519":
        return key.sign(message)
    if fam == "ecdsa":
        from cryptography.hazmat.primitives.asymmetric import ec

        return _low_s(alg, key.sign(message, ec.ECDSA(hashes.SHA256())))
    if fam == "rsa-pss":
        return key.sign(message, _pss(), hashes.SHA256())
    if fam == "ml-dsa":
        return key.sign(message, context or None)
    if fam == "slh-dsa":
        slh = asym.pq_module("sign", "slh_dsa_sha2_128s")
        return bytes(slh.sign(key, message, context or None))
    ed, ml = key
    m2 = _hybrid_message(message, context)
    return ed.sign(m2) + ml.sign(m2, HYBRID_LABEL)


def _verify_with(alg: Algorithm, key, message: bytes, signature: bytes, context: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    if len(context) > 255:
        return False
    signature = bytes(signature)
    fam = alg.family
    try:
        if fam == "ed25519":
            key.verify(signature, message)
        elif fam == "ecdsa":
            from cryptography.hazmat.primitives.asymmetric import ec

            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif fam == "rsa-pss":
            key.verify(signature, message, _pss(), hashes.SHA256())
        elif fam == "ml-dsa":
            key.verify(signature, message, context or None)
        elif fam == "slh-dsa":
            slh = asym.pq_module("sign", "slh_dsa_sha2_128s")
            from pqcrypto import InvalidSignatureError

            try:
                slh.verify(key, message, signature, context or None)
            except InvalidSignatureError:
                return False
        else:
            if len(signature) != alg.output_size:
                return False
            ed, ml = key
            m2 = _hybrid_message(message, context)
            ed_ok = _verify_with(asym.algorithm("ed25519"), ed, m2, signature[:_ED_SIG], b"")
            ml_ok = _verify_with(asym.algorithm("ml-dsa-65"), ml, m2, signature[_ED_SIG:],
                                 HYBRID_LABEL)
            return ed_ok and ml_ok
    except (InvalidSignature, ValueError, TypeError, OverflowError):
        return False
    return True


def _check_context(alg: Algorithm, context: bytes, raw: bool) -> None:
    if raw and context and not alg.native_context:
        raise UsageError(f"{alg.name} takes no context in a raw signature")


def sign(alg: str, private: bytes, message: bytes, *, context: bytes = b"") -> bytes:
    """The raw (standard) signature of `message`; see the module docstring per algorithm.

    Args:
        alg: a signing algorithm's name.
        private: its private bytes.
        message: the whole message.
        context: FIPS 204/205 context (ML-DSA, SLH-DSA, hybrid only), <= 255 bytes.

    Returns:
        The signature bytes.

    Raises:
        UsageError, StateError, IntegrityError: see the module docstring.
    """
    spec = asym.algorithm(alg, SIGN)
    _check_context(spec, context, True)
    if len(context) > 255:
        raise UsageError("the context is longer than 255 bytes")
    return _sign_with(spec, _private(spec, private), bytes(message), bytes(context))


def verify(alg: str, public: bytes, message: bytes, signature: bytes, *,
           context: bytes = b"") -> bool:
    """Whether `signature` is a valid raw signature of `message` under `public`.

    Returns:
        True or False; never raises for a bad signature.

    Raises:
        UsageError, StateError: algorithm problems; IntegrityError: malformed
        public key bytes.
    """
    spec = asym.algorithm(alg, SIGN)
    _check_context(spec, context, True)
    return _verify_with(spec, _public(spec, public), bytes(message), signature, bytes(context))


def signed_statement(alg: str, digest: bytes, *, binding: bytes = b"",
                     context: bytes = b"") -> bytes:
    """The statement a kms-cli signature signs (format in the module docstring).

    Args:
        alg: the algorithm name (bound into the statement).
        digest: SHA-512 of the message (64 bytes).
        binding: caller-encoded key identity (at most 65535 bytes).
        context: at most 255 bytes.

    Raises:
        UsageError: context longer than 255 bytes.
        ValueError: wrong digest length or binding too long (programming errors).
    """
    name = alg.encode("ascii")
    if len(digest) != 64:
        raise ValueError("digest must be a 64-byte SHA-512")
    if len(binding) > 0xFFFF:
        raise ValueError("binding longer than 65535 bytes")
    if len(context) > 255:
        raise UsageError("the context is longer than 255 bytes")
    return b"".join((
        STATEMENT_PREFIX, bytes([len(name)]), name,
        struct.pack(">H", len(binding)), bytes(binding),
        bytes([len(context)]), bytes(context), bytes(digest),
    ))


# ---------------------------------------------------------------- streaming

class _Buffer:
    """Collects the whole input, for algorithms that cannot stream."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    def finalize(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        return data


def _hash(name: str):
    from cryptography.hazmat.primitives import hashes

    return hashes.Hash(hashes.SHA512() if name == "sha512" else hashes.SHA256())


class _Stream:
    __slots__ = ("_acc", "_finish", "_done")

    def __init__(self, acc, finish) -> None:
        self._acc = acc
        self._finish = finish
        self._done = False

    def update(self, data: bytes) -> None:
        """Feed the next chunk of the input."""
        if self._done:
            raise ValueError("already finalized")
        self._acc.update(data)

    def _final(self):
        if self._done:
            raise ValueError("already finalized")
        self._done = True
        return self._finish(self._acc.finalize())


class Signer(_Stream):
    """Returned by `begin_sign`: `update(chunk)`..., then `finalize() -> signature`."""

    __slots__ = ()

    def finalize(self) -> bytes:
        return self._final()


class Verifier(_Stream):
    """Returned by `begin_verify`: `update(chunk)`..., then `finalize() -> bool`."""

    __slots__ = ()

    def finalize(self) -> bool:
        return self._final()


def _prehashed(alg: Algorithm):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    pre = utils.Prehashed(hashes.SHA256())
    if alg.family == "ecdsa":
        return (ec.ECDSA(pre),)
    return (_pss(), pre)


def begin_sign(alg: str, private: bytes, *, raw: bool = False, binding: bytes = b"",
               context: bytes = b"") -> Signer:
    """Start signing a stream.

    Args:
        alg: a signing algorithm's name.
        private: its private bytes (validated now).
        raw: False for a kms-cli signature over the signed statement (constant
            memory for every algorithm); True for the raw standard signature of
            the input itself (constant memory only where `raw_streams`).
        binding: the caller's key identity bytes (statement mode only).
        context: see the module docstring.

    Returns:
        A Signer.

    Raises:
        UsageError, StateError, IntegrityError: see the module docstring.
        ValueError: a binding with raw=True.
    """
    spec = asym.algorithm(alg, SIGN)
    _check_context(spec, context, raw)
    if len(context) > 255:
        raise UsageError("the context is longer than 255 bytes")
    if raw and binding:
        raise ValueError("a raw signature carries no binding")
    if len(binding) > 0xFFFF:
        raise ValueError("binding longer than 65535 bytes")
    key = _private(spec, private)
    context = bytes(context)
    if not raw:
        def finish(digest):
            return _sign_with(spec, key, signed_statement(alg, digest, binding=binding,
                                                          context=context), b"")
        return Signer(_hash("sha512"), finish)
    if spec.family in ("ecdsa", "rsa-pss"):
        def finish(digest):
            sig = key.sign(digest, *_prehashed(spec))
            return _low_s(spec, sig) if spec.family == "ecdsa" else sig
        return Signer(_hash("sha256"), finish)
    if spec.family == "ml-dsa":
        from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSAMuHasher

        return Signer(MLDSAMuHasher(key.public_key(), context or None), key.sign_mu)
    return Signer(_Buffer(), lambda message: _sign_with(spec, key, message, context))


def begin_verify(alg: str, public: bytes, signature: bytes, *, raw: bool = False,
                 binding: bytes = b"", context: bytes = b"") -> Verifier:
    """Start verifying a stream against `signature` (made by `begin_sign` with the same mode).

    Returns:
        A Verifier whose `finalize()` is True or False.

    Raises:
        UsageError, StateError: algorithm problems; IntegrityError: malformed
        public key bytes; ValueError: a binding with raw=True.
    """
    spec = asym.algorithm(alg, SIGN)
    _check_context(spec, context, raw)
    if raw and binding:
        raise ValueError("a raw signature carries no binding")
    if len(binding) > 0xFFFF:
        raise ValueError("binding longer than 65535 bytes")
    key = _public(spec, public)
    signature, context = bytes(signature), bytes(context)
    if len(context) > 255:
        return Verifier(_Buffer(), lambda _: False)
    if not raw:
        def finish(digest):
            statement = signed_statement(alg, digest, binding=binding, context=context)
            return _verify_with(spec, key, statement, signature, b"")
        return Verifier(_hash("sha512"), finish)
    if spec.family in ("ecdsa", "rsa-pss"):
        def finish(digest):
            from cryptography.exceptions import InvalidSignature

            try:
                key.verify(signature, digest, *_prehashed(spec))
            except (InvalidSignature, ValueError):
                return False
            return True
        return Verifier(_hash("sha256"), finish)
    if spec.family == "ml-dsa":
        from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSAMuHasher

        def finish(mu):
            from cryptography.exceptions import InvalidSignature

            try:
                key.verify_mu(signature, mu)
            except (InvalidSignature, ValueError):
                return False
            return True
        return Verifier(MLDSAMuHasher(key, context or None), finish)
    return Verifier(_Buffer(), lambda message: _verify_with(spec, key, message, signature,
                                                            context))
