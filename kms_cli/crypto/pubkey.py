"""Public keys across the boundary: SPKI PEM/DER, JWK, raw bytes, detection, fingerprints.

Encodings, per algorithm (public bytes as in `kms_cli.crypto.asym`):

- PEM "PUBLIC KEY" (RFC 7468) around a SubjectPublicKeyInfo DER for every
  algorithm but the hybrid signature. cryptography serialises the ones it
  knows (Ed25519 1.3.101.112, EC P-256/secp256k1, rsaEncryption, ML-KEM-768/1024
  2.16.840.1.101.3.4.4.2/3, ML-DSA-44/65/87 2.16.840.1.101.3.4.3.17/18/19).
  The others are built here with cryptography's ASN.1 encoder, algorithm
  parameters absent and the raw key in the BIT STRING:
  ML-KEM-512 2.16.840.1.101.3.4.4.1, SLH-DSA-SHA2-128s 2.16.840.1.101.3.4.3.20
  (NIST CSOR), X-Wing 1.3.6.1.4.1.62253.25722 (the X-Wing draft's id-XWing).
- ed25519-ml-dsa-65 has no standard SPKI (the LAMPS composite drafts define a
  different construction): its PEM is the custom label
  "KMS-CLI ED25519-ML-DSA-65 PUBLIC KEY" around the raw 1984 public bytes.
- JWK for the classical algorithms only: RFC 8037 {"kty": "OKP", "crv":
  "Ed25519", "x"}; RFC 7518 EC {"kty": "EC", "crv": "P-256" | "secp256k1"
  (RFC 8812), "x", "y"}; RSA {"kty": "RSA", "n", "e"}; each with "use": "sig" or
  "enc". base64url without padding.
- raw: the public bytes themselves.
- fingerprint: SHA-256 of the SPKI DER (what `openssl pkey -pubin -outform DER
  | sha256sum` prints); for the hybrid signature SHA-256(label || 0x00 || raw).

API:
- `to_der(alg, public) -> bytes` (SPKI; UsageError for ed25519-ml-dsa-65)
- `to_pem(alg, public) -> bytes`, `to_jwk(alg, public) -> dict`,
  `to_raw(alg, public) -> bytes`, `export(alg, public, fmt) -> bytes`
- `load_public(data, alg=None) -> (alg, public)`: PEM, SPKI DER or JWK JSON is
  detected; raw bytes need `alg`.
- `fingerprint(alg, public) -> bytes` (32 bytes)

Raises: IntegrityError("invalid public key") for malformed key material;
UsageError for well-formed keys of algorithms kms-cli does not have, JWK for
post-quantum algorithms, or raw bytes without an algorithm.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json

from kms_cli.crypto import asym
from kms_cli.crypto.asym import SIGN, bad_public
from kms_cli.errors import IntegrityError, UsageError

HYBRID_SIG_LABEL = "KMS-CLI ED25519-ML-DSA-65 PUBLIC KEY"
_OIDS = {
    "ml-kem-512": "2.16.840.1.101.3.4.4.1",
    "slh-dsa-sha2-128s": "2.16.840.1.101.3.4.3.20",
    "x25519-ml-kem-768": "1.3.6.1.4.1.62253.25722",
}
_BY_OID = {oid: name for name, oid in _OIDS.items()}
_JWK = ("ed25519", "ecdsa-p256", "ecdsa-secp256k1", "rsa-2048", "rsa-4096", "rsa-oaep-3072")
_RSA_NAMES = {2048: "rsa-2048", 4096: "rsa-4096", 3072: "rsa-oaep-3072"}
_EC_NAMES = {"secp256r1": ("ecdsa-p256", "P-256"), "secp256k1": ("ecdsa-secp256k1", "secp256k1")}


def _object(name: str, public: bytes):
    """Validate `public`; return cryptography's key object, or None where it has none."""
    alg = asym.algorithm(name)
    if alg.purpose == SIGN:
        from kms_cli.crypto import sign

        return sign.public_key_object(alg, public)
    from kms_cli.crypto import kem

    return kem.public_key_object(alg, public)


@functools.lru_cache(maxsize=1)
def _spki_type():
    from cryptography import x509
    from cryptography.hazmat import asn1

    # Built with type() so the annotations are objects, not strings (this
    # module uses postponed evaluation). Parameters are absent for these OIDs.
    algid = asn1.sequence(type("AlgorithmIdentifier", (), {
        "__annotations__": {"algorithm": x509.ObjectIdentifier}}))
    spki = asn1.sequence(type("SubjectPublicKeyInfo", (), {
        "__annotations__": {"algorithm": algid, "subject_public_key": asn1.BitString}}))
    return algid, spki


def to_der(alg: str, public: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of `public` (see the module docstring for OIDs).

    Raises:
        IntegrityError: malformed public bytes.
        UsageError: unknown algorithm, or ed25519-ml-dsa-65 (no SPKI).
    """
    key = _object(alg, public)
    if key is not None:
        from cryptography.hazmat.primitives import serialization

        return key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    if alg not in _OIDS:
        raise UsageError(f"{alg} public keys have no SubjectPublicKeyInfo form",
                         hint="use the pem or raw format")
    from cryptography import x509
    from cryptography.hazmat import asn1

    algid, spki = _spki_type()
    return asn1.encode_der(spki(algorithm=algid(algorithm=x509.ObjectIdentifier(_OIDS[alg])),
                                subject_public_key=asn1.BitString(bytes(public), 0)))


def _pem(label: str, der: bytes) -> bytes:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])
            + "\n").encode("ascii")


def to_pem(alg: str, public: bytes) -> bytes:
    """PEM text (bytes, ASCII, trailing newline) of the public key."""
    if alg == "ed25519-ml-dsa-65":
        _object(alg, public)
        return _pem(HYBRID_SIG_LABEL, bytes(public))
    return _pem("PUBLIC KEY", to_der(alg, public))


def to_raw(alg: str, public: bytes) -> bytes:
    """The public bytes, validated."""
    _object(alg, public)
    return bytes(public)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise bad_public()
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise bad_public() from None
    if _b64u(data) != text:
        raise bad_public()
    return data


def to_jwk(alg: str, public: bytes) -> dict:
    """The JWK (a dict, ready for json.dumps) of a classical public key.

    Raises:
        UsageError: not a classical algorithm.
        IntegrityError: malformed public bytes.
    """
    if alg not in _JWK:
        raise UsageError(f"{alg} public keys have no JWK form", hint="use the pem or raw format")
    key = _object(alg, public)
    use = "sig" if asym.algorithm(alg).purpose == SIGN else "enc"
    if alg == "ed25519":
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(bytes(public)), "use": use}
    if alg.startswith("ecdsa-"):
        return {"kty": "EC", "crv": _EC_NAMES[key.curve.name][1],
                "x": _b64u(public[1:33]), "y": _b64u(public[33:65]), "use": use}
    nums = key.public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "n": _b64u(n), "e": _b64u(e), "use": use}


def export(alg: str, public: bytes, fmt: str) -> bytes:
    """`key public --format`: "pem", "jwk" (JSON text + newline) or "raw"."""
    if fmt == "pem":
        return to_pem(alg, public)
    if fmt == "jwk":
        return (json.dumps(to_jwk(alg, public), sort_keys=True) + "\n").encode("ascii")
    if fmt == "raw":
        return to_raw(alg, public)
    raise UsageError(f"unknown public key format: {fmt}", hint="one of: pem, jwk, raw")


def fingerprint(alg: str, public: bytes) -> bytes:
    """A stable 32-byte id of the public key (SHA-256 of the SPKI DER)."""
    if alg == "ed25519-ml-dsa-65":
        raw = to_raw(alg, public)
        return asym.sha256(HYBRID_SIG_LABEL.encode("ascii") + b"\x00" + raw)
    return asym.sha256(to_der(alg, public))


# ---------------------------------------------------------------- import

def _from_object(key) -> tuple[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa

    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", key.public_bytes_raw()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_NAMES:
        point = key.public_bytes(serialization.Encoding.X962,
                                 serialization.PublicFormat.UncompressedPoint)
        return _EC_NAMES[key.curve.name][0], point
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in _RSA_NAMES:
        return _RSA_NAMES[key.key_size], asym.rsa_public_bytes(key)
    for cls, name in ((mlkem.MLKEM768PublicKey, "ml-kem-768"),
                      (mlkem.MLKEM1024PublicKey, "ml-kem-1024"),
                      (mldsa.MLDSA44PublicKey, "ml-dsa-44"),
                      (mldsa.MLDSA65PublicKey, "ml-dsa-65"),
                      (mldsa.MLDSA87PublicKey, "ml-dsa-87")):
        if isinstance(key, cls):
            return name, key.public_bytes_raw()
    raise UsageError("unsupported public key algorithm")


def _from_der(der: bytes) -> tuple[str, bytes]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        return _from_object(serialization.load_der_public_key(der))
    except UnsupportedAlgorithm:
        pass
    except ValueError:
        raise bad_public() from None
    from cryptography.hazmat import asn1

    try:
        info = asn1.decode_der(_spki_type()[1], der)
    except ValueError:
        raise UsageError("unsupported public key algorithm") from None
    name = _BY_OID.get(info.algorithm.algorithm.dotted_string)
    if name is None or info.subject_public_key.padding_bits() != 0:
        raise UsageError("unsupported public key algorithm")
    public = info.subject_public_key.as_bytes()
    return name, to_raw(name, public)


def _from_jwk(text: bytes) -> tuple[str, bytes]:
    try:
        jwk = json.loads(text)
    except ValueError:
        raise bad_public() from None
    if not isinstance(jwk, dict):
        raise bad_public()
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        return "ed25519", to_raw("ed25519", _unb64u(jwk.get("x")))
    if kty == "EC" and crv in ("P-256", "secp256k1"):
        name = "ecdsa-p256" if crv == "P-256" else "ecdsa-secp256k1"
        x, y = _unb64u(jwk.get("x")), _unb64u(jwk.get("y"))
        if len(x) != 32 or len(y) != 32:
            raise bad_public()
        return name, to_raw(name, b"\x04" + x + y)
    if kty == "RSA":
        from cryptography.hazmat.primitives.asymmetric import rsa

        n = int.from_bytes(_unb64u(jwk.get("n")), "big")
        e = int.from_bytes(_unb64u(jwk.get("e")), "big")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise bad_public() from None
        return _from_object(key)
    raise UsageError("unsupported public key algorithm")


def _unpem(text: bytes) -> tuple[str, bytes]:
    try:
        lines = text.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise bad_public() from None
    lines = [line.strip() for line in lines]
    if len(lines) < 2 or not (lines[0].startswith("-----BEGIN ") and lines[0].endswith("-----")):
        raise bad_public()
    label = lines[0][len("-----BEGIN "):-len("-----")]
    if lines[-1] != f"-----END {label}-----":
        raise bad_public()
    body = "".join(lines[1:-1])
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise bad_public() from None
    if base64.b64encode(der).decode("ascii") != body:
        raise bad_public()
    return label, der


def _is_json(data: bytes) -> bool:
    import json

    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def load_public(data: bytes, alg: str | None = None) -> tuple[str, bytes]:
    """Read a public key file: PEM, SPKI DER, JWK JSON, or raw bytes when `alg` is given.

    Args:
        data: the file's bytes.
        alg: the expected algorithm; required for raw bytes, checked otherwise.

    Returns:
        (algorithm name, public bytes).

    Raises:
        IntegrityError: malformed key material.
        UsageError: unsupported algorithm, raw bytes without `alg`, or a key of
            another algorithm than `alg`.
    """
    data = bytes(data)
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN "):
        label, der = _unpem(stripped)
        if label == "PUBLIC KEY":
            found = _from_der(der)
        elif label == HYBRID_SIG_LABEL:
            found = "ed25519-ml-dsa-65", to_raw("ed25519-ml-dsa-65", der)
        else:
            raise UsageError(f"unsupported PEM block: {label[:40]}")
    elif stripped.startswith(b"{") and (alg is None or _is_json(stripped)):
        # (raw key bytes may begin with "{": 1 in 256 of them; with `alg` they are read as raw)
        found = _from_jwk(stripped)
    elif alg is None and data[:1] == b"\x30":
        found = _from_der(data)
    elif alg is not None:
        try:
            found = alg, to_raw(alg, data)
        except IntegrityError:
            if data[:1] != b"\x30":
                raise
            found = _from_der(data)  # an SPKI DER file given with its algorithm
    else:
        raise UsageError("cannot tell the algorithm of raw public key bytes",
                         hint="export the key as pem")
    if alg is not None and found[0] != alg:
        raise UsageError(f"the public key is {found[0]}, not {alg}")
    return found
