"""Key encapsulation: RSA-OAEP key wrapping, ML-KEM and the X-Wing hybrid behind one interface.

Every encryption algorithm yields a 32-byte shared secret for the chunked
format's key derivation, and a KEM ciphertext to store in the header:

=================  =====================================================================
rsa-oaep-3072      "encapsulate" draws 32 random bytes and encrypts them with RSAES-OAEP
                   (SHA-256, MGF1-SHA-256, empty label); 384-byte ciphertext.
                   Decapsulation fails unless the plaintext is exactly 32 bytes.
ml-kem-512         FIPS 203 ML-KEM-512 through pqcrypto (768-byte ciphertext).
ml-kem-768/1024    FIPS 203 ML-KEM through cryptography/OpenSSL (1088/1568 bytes).
x25519-ml-kem-768  X-Wing (draft-connolly-cfrg-xwing-kem; the KEM age's
                   mlkem768x25519 and HPKE's MLKEM768-X25519 use), exactly:

                   seed (32 bytes) -> SHAKE256(seed, 96) = d||z (64) || sk_X (32)
                   (ek_M, dk_M) = ML-KEM-768.KeyGen(d||z);  pk_X = X25519(sk_X, 9)
                   public key  = ek_M (1184) || pk_X (32)
                   ciphertext  = ct_M (1088) || ct_X (32),  ct_X = X25519(e, 9)
                   shared key  = SHA3-256(ss_M || ss_X || ct_X || pk_X || XWING_LABEL)
                   XWING_LABEL = b"\\.//^\\" (0x5c2e2f2f5e5c)
=================  =====================================================================

X25519 all-zero shared secrets (low-order points) are refused by OpenSSL: for
X-Wing this makes encapsulation to such a public key an IntegrityError("invalid
public key") and decapsulation of such a ciphertext an IntegrityError, where
the draft would derive a key anyway. ML-KEM decapsulation uses implicit
rejection: a forged ciphertext of the right length yields an unrelated secret,
which the AEAD above then rejects.

API:
- `encapsulate(alg, public) -> (kem_ciphertext, shared_secret_32)`
- `decapsulate(alg, private, kem_ciphertext) -> shared_secret_32`
- `x25519(private32, public32) -> shared32` and `oaep_decrypt(private_pkcs8,
  ciphertext, *, label=b"") -> bytes`: the raw steps, exposed for conformance
  tests.
- `xwing_combiner(ss_m, ss_x, ct_x, pk_x) -> bytes`.
- `generate(alg)`, `public_from_private(alg, private)`: used through `keygen`.

Raises: UsageError/StateError for unknown or signing algorithms;
IntegrityError("invalid public key"/"invalid private key") for malformed keys;
IntegrityError("invalid key encapsulation") for any ciphertext that cannot be
decapsulated (wrong length, OAEP failure, low-order X25519 share).
"""

from __future__ import annotations

from kms_cli.crypto import asym
from kms_cli.crypto.asym import ENCRYPT, Algorithm, bad_private, bad_public
from kms_cli.errors import IntegrityError

XWING_LABEL = b"\\.//^\\"
_RSA_BITS = 3072
_SS = 32


def _bad_ct() -> IntegrityError:
    return IntegrityError("invalid key encapsulation")


def _mlkem(name: str):
    from cryptography.hazmat.primitives.asymmetric import mlkem

    return {
        "ml-kem-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey),
        "ml-kem-1024": (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey),
        "x25519-ml-kem-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey),
    }[name]


def _pq512():
    return asym.pq_module("kem", "ml_kem_512")


def _oaep():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


# ---------------------------------------------------------------- X25519 / X-Wing

def _x_private(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    if len(raw) != 32:
        raise bad_private()
    return X25519PrivateKey.from_private_bytes(raw)


def _x_public(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    if len(raw) != 32:
        raise bad_public()
    return X25519PublicKey.from_public_bytes(raw)


def x25519(private: bytes, public: bytes) -> bytes:
    """RFC 7748 X25519(private, public).

    Raises:
        IntegrityError: malformed input, or an all-zero result (low-order public
            key), which is refused.
    """
    key, peer = _x_private(bytes(private)), _x_public(bytes(public))
    try:
        return key.exchange(peer)
    except ValueError:
        raise IntegrityError("invalid key agreement") from None


def xwing_combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """X-Wing's combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWING_LABEL)."""
    return asym.sha3_256(b"".join((ss_m, ss_x, ct_x, pk_x, XWING_LABEL)))


def _xwing_expand(seed: bytes):
    from cryptography.hazmat.primitives import hashes

    if len(seed) != 32:
        raise bad_private()
    h = hashes.Hash(hashes.SHAKE256(96))
    h.update(seed)
    expanded = h.finalize()
    return _mlkem("x25519-ml-kem-768")[0].from_seed_bytes(expanded[:64]), _x_private(expanded[64:])


def _xwing_public(public: bytes):
    if len(public) != 1216:
        raise bad_public()
    try:
        pk_m = _mlkem("x25519-ml-kem-768")[1].from_public_bytes(public[:1184])
        return pk_m, _x_public(public[1184:])
    except ValueError:
        raise bad_public() from None


# ---------------------------------------------------------------- keys

def _mlkem512_public_of(private: bytes) -> bytes:
    # FIPS 203 dk = dk_PKE (768) || ek (800) || H(ek) (32) || z (32); check H(ek) (section 7.3)
    if len(private) != 1632:
        raise bad_private()
    ek = private[768:1568]
    if asym.sha3_256(ek) != private[1568:1600]:
        raise bad_private()
    return ek


def public_key_object(alg: Algorithm, public: bytes):
    """The `cryptography` public key object for PEM/JWK export (None for pqcrypto/hybrid)."""
    public = bytes(public)
    if alg.family == "rsa-oaep":
        return asym.rsa_public(public, _RSA_BITS)
    if alg.family == "x-wing":
        _xwing_public(public)
        return None
    if alg.name == "ml-kem-512":
        if len(public) != 800:
            raise bad_public()
        return None
    if len(public) != alg.public_size:
        raise bad_public()
    try:
        return _mlkem(alg.name)[1].from_public_bytes(public)
    except ValueError:
        raise bad_public() from None


def generate(alg: Algorithm) -> tuple[bytes, bytes]:
    """A fresh key pair of an encryption algorithm (see `keygen.generate`)."""
    if alg.family == "rsa-oaep":
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        return asym.rsa_private_bytes(key), asym.rsa_public_bytes(key.public_key())
    if alg.family == "x-wing":
        from kms_cli.crypto.primitives import random_bytes

        seed = random_bytes(32)
        return seed, public_from_private(alg, seed)
    if alg.name == "ml-kem-512":
        pk, sk = _pq512().keygen()
        return bytes(sk), bytes(pk)
    key = _mlkem(alg.name)[0].generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def public_from_private(alg: Algorithm, private: bytes) -> bytes:
    """The public bytes of a private key of an encryption algorithm (see `keygen.public_key`)."""
    private = bytes(private)
    if alg.family == "rsa-oaep":
        return asym.rsa_public_bytes(asym.rsa_private(private, _RSA_BITS).public_key())
    if alg.family == "x-wing":
        mk, xk = _xwing_expand(private)
        return mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    if alg.name == "ml-kem-512":
        return _mlkem512_public_of(private)
    if len(private) != 64:
        raise bad_private()
    return _mlkem(alg.name)[0].from_seed_bytes(private).public_key().public_bytes_raw()


# ---------------------------------------------------------------- encapsulation

def encapsulate(alg: str, public: bytes) -> tuple[bytes, bytes]:
    """Encapsulate a fresh 32-byte shared secret to `public`.

    Args:
        alg: an encryption algorithm's name.
        public: its public bytes.

    Returns:
        (kem_ciphertext, shared_secret) with a 32-byte shared secret.

    Raises:
        UsageError, StateError: unknown or signing algorithm.
        IntegrityError: malformed public key ("invalid public key").
    """
    spec = asym.algorithm(alg, ENCRYPT)
    public = bytes(public)
    if spec.family == "rsa-oaep":
        from kms_cli.crypto.primitives import random_bytes

        key = asym.rsa_public(public, _RSA_BITS)
        secret = random_bytes(_SS)
        return key.encrypt(secret, _oaep()), secret
    if spec.family == "x-wing":
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        pk_m, pk_x = _xwing_public(public)
        eph = X25519PrivateKey.generate()
        try:
            ss_x = eph.exchange(pk_x)
        except ValueError:
            raise bad_public() from None
        ss_m, ct_m = pk_m.encapsulate()
        ct_x = eph.public_key().public_bytes_raw()
        return ct_m + ct_x, xwing_combiner(ss_m, ss_x, ct_x, public[1184:])
    if spec.name == "ml-kem-512":
        if len(public) != 800:
            raise bad_public()
        try:
            ct, ss = _pq512().encaps(public)
        except ValueError:
            raise bad_public() from None
        return bytes(ct), bytes(ss)
    key = public_key_object(spec, public)
    ss, ct = key.encapsulate()
    return ct, ss


def decapsulate(alg: str, private: bytes, ciphertext: bytes) -> bytes:
    """Recover the 32-byte shared secret of `ciphertext` with `private`.

    Raises:
        UsageError, StateError: unknown or signing algorithm.
        IntegrityError: malformed private key ("invalid private key") or a
            ciphertext that does not decapsulate ("invalid key encapsulation").
    """
    spec = asym.algorithm(alg, ENCRYPT)
    private, ciphertext = bytes(private), bytes(ciphertext)
    if spec.family == "rsa-oaep":
        secret = oaep_decrypt(private, ciphertext)
        if len(secret) != _SS:
            raise _bad_ct()
        return secret
    if spec.family == "x-wing":
        mk, xk = _xwing_expand(private)
        if len(ciphertext) != spec.output_size:
            raise _bad_ct()
        ct_x = ciphertext[1088:]
        try:
            ss_m = mk.decapsulate(ciphertext[:1088])
            ss_x = xk.exchange(_x_public(ct_x))
        except ValueError:
            raise _bad_ct() from None
        return xwing_combiner(ss_m, ss_x, ct_x, xk.public_key().public_bytes_raw())
    if spec.name == "ml-kem-512":
        _mlkem512_public_of(private)
        if len(ciphertext) != spec.output_size:
            raise _bad_ct()
        try:
            return bytes(_pq512().decaps(private, ciphertext))
        except ValueError:
            raise _bad_ct() from None
    if len(private) != 64:
        raise bad_private()
    key = _mlkem(spec.name)[0].from_seed_bytes(private)
    if len(ciphertext) != spec.output_size:
        raise _bad_ct()
    try:
        return key.decapsulate(ciphertext)
    except ValueError:
        raise _bad_ct() from None


def oaep_decrypt(private: bytes, ciphertext: bytes, *, label: bytes = b"") -> bytes:
    """RSAES-OAEP (SHA-256, MGF1-SHA-256) decryption with a 3072-bit PKCS#8 key.

    Raises:
        IntegrityError: malformed key ("invalid private key") or any decryption
            failure ("invalid key encapsulation": one message for every cause).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = asym.rsa_private(bytes(private), _RSA_BITS)
    pad = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                       label=bytes(label) or None)
    try:
        return key.decrypt(bytes(ciphertext), pad)
    except ValueError:
        raise _bad_ct() from None
