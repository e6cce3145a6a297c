"""The /v1/transit/* handlers: Vault's transit API over kms-cli keys (spec section 10).

Request and response shapes are Vault's (checked field by field against OpenBao in
tests/unit/test_server_handlers.py); the policy is the vault layer's (`kms_cli/vault/transit.py`).
Every handler calls `req.authorize(op, name)` before it looks anything up, so outside the token's
namespace a missing key is 403 like an existing one. Operations:

  POST transit/encrypt/NAME            encrypt    (a missing key is created, aes256-gcm96 or `type`,
                                                   when the token also allows key.rotate: Vault's upsert)
  POST transit/decrypt/NAME            decrypt
  POST transit/rewrap/NAME             rewrap
  POST transit/datakey/KIND/NAME       datakey    (KIND plaintext or wrapped; bits 128, 256 or 512)
  POST transit/sign/NAME[/HASH]        sign
  POST transit/verify/NAME[/HASH]      verify
  GET  transit/keys/NAME               key.read
  LIST transit/keys                    key.read   (the keys inside the token's namespace)
  POST transit/keys/NAME               key.rotate (creating a key is a write on keys: the op that
                                                   adds key versions; an existing key is left as is)
  POST transit/keys/NAME/rotate        key.rotate
  POST transit/keys/NAME/config        key.rotate (accepted only when it changes nothing kms-cli has)

NAME may contain `/`. A path ending in a hash name (sign/app/k/sha2-256) names the hash algorithm, as
in Vault; so does a trailing `/rotate` or `/config` under keys/. Batch answers carry per-item results
and errors as Vault's do; encrypt and decrypt answer 400 when an item failed (or
`partial_failure_response_code` when some succeeded), sign, verify and rewrap 200 (as OpenBao does).
A status other than 200 with a body is set in `req.extra["status"]` (see api.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from kms_cli import names
from kms_cli.errors import KmsError, NotFoundError, UsageError
from kms_cli.server.api import ApiError, Route
from kms_cli.vault import transit as vt

# -- shared helpers (kv.py uses them too) --------------------------------------------------------


def respond(data, warnings: list[str] | None = None) -> dict:
    """Vault's response envelope around `data`."""
    return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": data, "wrap_info": None, "warnings": warnings or None, "auth": None}


def body_of(req) -> dict:
    body = req.body
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "failed to parse JSON input: expected a JSON object")
    return body


def name_of(req, key: str = "name") -> str:
    name = req.params.get(key) or ""
    try:
        return names.validate(name.strip("/") if name.endswith("/") else name)
    except UsageError as exc:
        raise ApiError(400, exc.message) from None


def ignored(body: dict, known: tuple) -> list[str] | None:
    extra = sorted(k for k in body if k not in known)
    return [f"Endpoint ignored these unrecognized parameters: [{' '.join(extra)}]"] if extra else None


def to_int(value, field: str, default=None):
    """An integer parameter as Vault reads it (a JSON number or a string of digits; `bao write k=v`
    sends strings)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ApiError(400, f'error converting input for field "{field}": expected an integer')
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        return int(value)
    raise ApiError(400, f'error converting input for field "{field}": cannot parse value as \'int\'')


def to_bool(value, field: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "t", "f"):
        return value.lower() in ("true", "1", "t")
    if isinstance(value, int):
        return value != 0
    raise ApiError(400, f'error converting input for field "{field}": cannot parse value as \'bool\'')


def to_str(value, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    raise ApiError(400, f'error converting input for field "{field}": expected a string')


def b64(value: str, prefix: str = "") -> bytes:
    """Standard base64 with padding, as Go's decoder reads it (CR and LF skipped)."""
    text = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    pos = next((i for i, c in enumerate(text) if c not in alphabet), len(text))
    if pos < len(text) and text[pos] == "=":  # padding in the wrong place, or too much of it
        pos = max(pos, len(text.rstrip("=")))
    raise vt.TransitError(f"{prefix}illegal base64 data at input byte {pos}")


def _optional_b64(item: dict, field: str) -> bytes | None:
    value = to_str(item.get(field), field)
    return b64(value) if value else None


# -- request parsing ---------------------------------------------------------------------------------

def _batch(body: dict):
    """The batch_input list, or None for a single request."""
    items = body.get("batch_input")
    if items is None:
        return None
    if not isinstance(items, list):
        raise ApiError(400, "failed to parse batch input: source data must be an array or slice")
    if not items:
        raise ApiError(400, "missing batch input to process")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"failed to parse batch input: [{i}] expected a map")
    return items


def _parse(body: dict, batch: list | None, parse) -> list:
    """A single request parsed (its error is the request's), or each batch item parsed or the error
    that item is answered with."""
    if batch is None:
        return [parse(body)]
    out = []
    for item in batch:
        try:
            out.append(parse(item))
        except vt.TransitError as exc:
            out.append(exc)
    return out


def _reference(item: dict) -> str:
    ref = item.get("reference")
    return ref if isinstance(ref, str) else ("" if ref is None else str(ref))


def _batch_results(batch: list, results: list, ok, failed: dict) -> list[dict]:
    """`batch_results` as Vault gives them: per item `ok(result)`, or `failed`'s fields and the
    error, each with the item's `reference`."""
    return [{**failed, "error": _message(r), "reference": _reference(item)} if isinstance(r, Exception)
            else {**ok(r), "reference": _reference(item)} for item, r in zip(batch, results)]


def _run(call):
    """A vault-layer call; a missing key is Vault's 400 with its message, not 404."""
    try:
        return call()
    except vt.KeyMissing as exc:
        raise ApiError(400, exc.message) from None


def _batch_status(req, body: dict, results: list) -> None:
    """Encrypt and decrypt: 400 when an item failed, or partial_failure_response_code when some
    succeeded (Vault's rule)."""
    failed = sum(isinstance(r, Exception) for r in results)
    if not failed:
        return
    code = to_int(body.get("partial_failure_response_code"), "partial_failure_response_code")
    if failed < len(results) and code is not None and 200 <= code < 600:
        req.extra["status"] = code
    else:
        req.extra["status"] = 400


def _single(results: list):
    r = results[0]
    if isinstance(r, Exception):
        raise r
    return r


# -- encrypt, decrypt, rewrap, datakey -----------------------------------------------------------------

_ENCRYPT = ("plaintext", "context", "key_version", "nonce", "batch_input", "type", "convergent_encryption",
            "associated_data", "partial_failure_response_code", "key_derivation_function")


def encrypt(req):
    full = name_of(req)
    req.authorize("encrypt", full)
    body = body_of(req)
    batch = _batch(body)

    def parse(item):
        plaintext = to_str(item.get("plaintext"), "plaintext")
        if plaintext is None:
            raise ApiError(400, "missing plaintext to encrypt")
        version = to_int(item.get("key_version"), "key_version")
        return b64(plaintext), _optional_b64(item, "context"), _optional_b64(item, "associated_data"), version

    items = [body] if batch is None else batch
    for item in items:  # a missing plaintext fails the whole request, as in Vault
        if item.get("plaintext") is None:
            raise ApiError(400, "missing plaintext to encrypt")
    parsed = _parse(body, batch, parse)
    _upsert(req, full, body)
    results = _run(lambda: vt.encrypt(req.vault, full, parsed, batch=batch is not None))
    if batch is None:
        version, ciphertext = _single(results)
        return respond({"ciphertext": ciphertext, "key_version": version}, ignored(body, _ENCRYPT))
    out = _batch_results(batch, results, lambda r: {"ciphertext": r[1], "key_version": r[0]}, {})
    _batch_status(req, body, results)
    return respond({"batch_results": out}, ignored(body, _ENCRYPT))


def _upsert(req, full: str, body: dict) -> None:
    """Vault creates a missing key on encrypt when the caller may create it: here, a token that
    also allows key.rotate on the name (the key's type from `type`, aes256-gcm96 by default)."""
    from kms_cli.vault import tokens

    if req.token is None or not tokens.allows(req.token, "key.rotate", full) or vt.key_exists(req.vault, full):
        return
    type_ = to_str(body.get("type"), "type") or "aes256-gcm96"
    if to_bool(body.get("convergent_encryption"), "convergent_encryption"):
        raise ApiError(400, "convergent encryption is not supported by kms-cli")
    vt.create_key(req.vault, full, type_, None)


def _message(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, KmsError):
        return exc.message.splitlines()[0] if exc.message else "error"
    return "internal error"


_DECRYPT = ("ciphertext", "context", "nonce", "batch_input", "associated_data", "partial_failure_response_code")


def decrypt(req):
    full = name_of(req)
    req.authorize("decrypt", full)
    body = body_of(req)
    batch = _batch(body)
    items = [body] if batch is None else batch
    for item in items:
        if item.get("ciphertext") is None:
            raise ApiError(400, "missing ciphertext to decrypt")

    def parse(item):
        return (to_str(item.get("ciphertext"), "ciphertext"), _optional_b64(item, "context"),
                _optional_b64(item, "associated_data"))

    parsed = _parse(body, batch, parse)
    results = _run(lambda: vt.decrypt(req.vault, full, parsed, batch=batch is not None))
    if batch is None:
        _, plaintext = _single(results)
        return respond({"plaintext": base64.b64encode(plaintext).decode()}, ignored(body, _DECRYPT))
    out = _batch_results(batch, results, lambda r: {"plaintext": base64.b64encode(r[1]).decode()},
                         {"plaintext": ""})
    _batch_status(req, body, results)
    return respond({"batch_results": out}, ignored(body, _DECRYPT))


_REWRAP = ("ciphertext", "context", "key_version", "nonce", "batch_input", "associated_data")


def rewrap(req):
    full = name_of(req)
    req.authorize("rewrap", full)
    body = body_of(req)
    batch = _batch(body)
    if batch is None and body.get("ciphertext") is None:
        raise ApiError(400, "missing ciphertext to decrypt")

    def parse(item):
        text = to_str(item.get("ciphertext"), "ciphertext")
        if text is None:
            raise vt.TransitError("missing ciphertext to decrypt")
        return (text, _optional_b64(item, "context"), _optional_b64(item, "associated_data"),
                to_int(item.get("key_version"), "key_version"))

    parsed = _parse(body, batch, parse)
    results = _run(lambda: vt.rewrap(req.vault, full, parsed, batch=batch is not None))
    if batch is None:
        version, ciphertext = _single(results)
        return respond({"ciphertext": ciphertext, "key_version": version}, ignored(body, _REWRAP))
    out = _batch_results(batch, results, lambda r: {"ciphertext": r[1], "key_version": r[0]}, {})
    return respond({"batch_results": out}, ignored(body, _REWRAP))


_DATAKEY = ("context", "nonce", "bits", "key_version", "associated_data")


def datakey(req):
    full = name_of(req)
    req.authorize("datakey", full)
    kind = req.params.get("kind")
    if kind not in ("plaintext", "wrapped"):
        raise ApiError(400, "Invalid path, must be 'plaintext' or 'wrapped'")
    body = body_of(req)
    bits = to_int(body.get("bits"), "bits", 256)
    if bits not in vt.DATAKEY_BITS:
        raise ApiError(400, "invalid bit length")
    context, aad = _optional_b64(body, "context"), _optional_b64(body, "associated_data")
    version, key, ciphertext = _run(lambda: vt.datakey(req.vault, full, bits, context, aad))
    data = {"ciphertext": ciphertext, "key_version": version}
    if kind == "plaintext":
        data["plaintext"] = base64.b64encode(key).decode()
    return respond(data, ignored(body, _DATAKEY))


# -- sign, verify ----------------------------------------------------------------------------------

_SIGN = ("input", "key_version", "hash_algorithm", "algorithm", "context", "prehashed", "signature_algorithm",
         "marshaling_algorithm", "salt_length", "batch_input", "name")
_VERIFY = (*_SIGN, "signature", "hmac", "cmac")


def _split_hash(req) -> tuple[str, str | None]:
    """sign/app/k/sha2-256: the key app/k and the hash algorithm from the path."""
    name = req.params.get("name") or ""
    head, _, last = name.rpartition("/")
    if head and last in vt.HASHES:
        req.params = {**req.params, "name": head}
        return name_of(req), last
    return name_of(req), None


def _options(body: dict, path_hash: str | None) -> vt.SignOptions:
    hash_algorithm = path_hash or to_str(body.get("hash_algorithm"), "hash_algorithm") or \
        to_str(body.get("algorithm"), "algorithm")
    return vt.SignOptions(hash_algorithm=hash_algorithm,
                          marshaling=to_str(body.get("marshaling_algorithm"), "marshaling_algorithm"),
                          prehashed=to_bool(body.get("prehashed"), "prehashed"),
                          signature_algorithm=to_str(body.get("signature_algorithm"), "signature_algorithm"),
                          salt_length=body.get("salt_length"))


def _input(item: dict) -> bytes:
    value = to_str(item.get("input"), "input")
    return b64(value, "unable to decode input as base64: ") if value else b""


def sign(req):
    full, path_hash = _split_hash(req)
    req.authorize("sign", full)
    body = body_of(req)
    batch = _batch(body)
    options = _options(body, path_hash)
    parsed = _parse(body, batch, lambda item: (_input(item), to_int(item.get("key_version", body.get("key_version")),
                                                                    "key_version")))
    results = _run(lambda: vt.sign(req.vault, full, parsed, options, batch=batch is not None))
    if batch is None:
        version, signature = _single(results)
        return respond({"key_version": version, "signature": signature}, ignored(body, _SIGN))
    out = _batch_results(batch, results, lambda r: {"signature": r[1], "key_version": r[0]}, {"key_version": 0})
    return respond({"batch_results": out}, ignored(body, _SIGN))


def verify(req):
    full, path_hash = _split_hash(req)
    req.authorize("verify", full)
    body = body_of(req)
    batch = _batch(body)
    options = _options(body, path_hash)
    if batch is None:
        if body.get("hmac") is not None or body.get("cmac") is not None:
            raise ApiError(400, "kms-cli keys make no HMAC: verify a signature")
        if body.get("signature") is None:
            raise ApiError(400, "neither a 'signature' nor an 'hmac' were given to verify")
    def parse(item):
        signature = to_str(item.get("signature"), "signature")
        if signature is None:
            raise vt.TransitError("missing signature to validate")
        return _input(item), signature

    parsed = _parse(body, batch, parse)
    results = _run(lambda: vt.verify(req.vault, full, parsed, options, batch=batch is not None))
    if batch is None:
        _, valid = _single(results)
        return respond({"valid": valid}, ignored(body, _VERIFY))
    out = _batch_results(batch, results, lambda r: {"valid": r[1]}, {"valid": False})
    return respond({"batch_results": out}, ignored(body, _VERIFY))


# -- keys ------------------------------------------------------------------------------------------

def rfc3339_nano(ts: float) -> str:
    import time

    whole = int(ts)
    frac = f"{ts - whole:.9f}"[2:].rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (f".{frac}" if frac else "") + "Z"


def key_shape(d: dict) -> dict:
    """Vault's read-key `data` for a vault-layer key description."""
    keys = {}
    for v in d["versions"]:
        if d["symmetric"]:
            keys[str(v["version"])] = int(v["created"])
        else:
            keys[str(v["version"])] = {"certificate_chain": "", "creation_time": rfc3339_nano(v["created"]),
                                       "name": d["curve"], "public_key": v["public_key"] or ""}
    encrypts = d["purpose"] == "encrypt"
    return {
        "allow_plaintext_backup": False,
        "auto_rotate_period": d["rotate_every"],
        "deletion_allowed": False,
        "derived": False,
        "exportable": False,
        "imported_key": False,
        "keys": keys,
        "latest_version": d["latest_version"],
        "min_available_version": 0,
        "min_decryption_version": d["min_decryption_version"],
        "min_encryption_version": 0,
        "name": d["name"],
        "soft_deleted": False,
        "supports_decryption": encrypts,
        "supports_derivation": False,
        "supports_encryption": encrypts,
        "supports_signing": not encrypts,
        "type": d["type"],
    }


def read_key(req):
    full = name_of(req)
    req.authorize("key.read", full)
    try:
        return respond(key_shape(vt.read_key(req.vault, full)))
    except NotFoundError as exc:
        raise ApiError(404, exc.message) from None


def list_keys(req):
    """LIST transit/keys: the keys the token may see (inside its namespace)."""
    req.authorize("key.read", None)
    ns = req.token.row["namespace"] if req.token is not None else ""
    found = vt.list_keys(req.vault, ns)
    if not found:
        raise ApiError(404, "no keys")
    return respond({"keys": found})


_CREATE = ("type", "derived", "convergent_encryption", "exportable", "allow_plaintext_backup", "auto_rotate_period",
           "key_size", "managed_key_name", "managed_key_id", "context")


def _period(value) -> int | None:
    """auto_rotate_period: seconds or a Go duration ("24h", "30m", "0s"); 0 is none."""
    from kms_cli import durations

    if value is None or value == "" or value == 0 or value == "0":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value)
    elif isinstance(value, str):
        text = value.strip()
        m = re.fullmatch(r"((?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|ns))+)", text)
        if text.isdigit():
            seconds = int(text)
        elif m:
            seconds = 0
            scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
            for n, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|ns|m|s)", text):
                seconds += float(n) * scale[unit]
            seconds = int(seconds)
        else:
            try:
                seconds = durations.parse_duration(text)
            except UsageError:
                raise ApiError(400, f"invalid auto_rotate_period {text[:40]!r}") from None
    else:
        raise ApiError(400, "invalid auto_rotate_period")
    if seconds == 0:
        return None
    if seconds < 3600:
        raise ApiError(400, "auto rotate period must be 0 to disable or at least an hour")
    return seconds


def create_key(req):
    full = name_of(req)
    req.authorize("key.rotate", full)
    body = body_of(req)
    for flag, why in (("derived", "key derivation"), ("convergent_encryption", "convergent encryption"),
                      ("exportable", "exportable keys"), ("allow_plaintext_backup", "plaintext backups")):
        if to_bool(body.get(flag), flag):
            raise ApiError(400, f"{why} is not supported by kms-cli")
    type_ = to_str(body.get("type"), "type") or "aes256-gcm96"
    try:
        vt.algorithm_for(type_)
    except UsageError as exc:
        raise ApiError(400, exc.message) from None
    period = _period(body.get("auto_rotate_period"))
    _, described = vt.create_key(req.vault, full, type_, period)
    return respond(key_shape(described), ignored(body, _CREATE))


def rotate_key(req):
    full = name_of(req)
    req.authorize("key.rotate", full)
    try:
        return respond(key_shape(vt.rotate_key(req.vault, full)))
    except NotFoundError:
        raise ApiError(400, "key not found") from None


_CONFIG = ("min_decryption_version", "min_encryption_version", "deletion_allowed", "exportable",
           "allow_plaintext_backup", "auto_rotate_period")


def config_key(req):
    """keys/NAME/config (Terraform sends it after a create): accepted when it asks for what the key
    already is; kms-cli has no minimum versions (revoke a version instead), deletion or export."""
    full = name_of(req)
    req.authorize("key.rotate", full)
    body = body_of(req)
    try:
        shape = key_shape(vt.read_key(req.vault, full))
    except NotFoundError:
        raise ApiError(400, "no existing key named " + full + " could be found") from None
    for flag in ("deletion_allowed", "exportable", "allow_plaintext_backup"):
        if to_bool(body.get(flag), flag):
            raise ApiError(400, f"{flag} is not supported by kms-cli")
    mind = to_int(body.get("min_decryption_version"), "min_decryption_version")
    if mind not in (None, 0, shape["min_decryption_version"]) and not (mind == 1 and shape["min_decryption_version"] == 1):
        raise ApiError(400, "min_decryption_version cannot be changed in kms-cli: revoke old versions "
                            "with `kms-cli key revoke NAME --version N`")
    mine = to_int(body.get("min_encryption_version"), "min_encryption_version")
    if mine not in (None, 0, shape["latest_version"]):
        raise ApiError(400, "min_encryption_version cannot be changed in kms-cli: only the latest version encrypts")
    if "auto_rotate_period" in body and (_period(body.get("auto_rotate_period")) or 0) != shape["auto_rotate_period"]:
        raise ApiError(400, "auto_rotate_period cannot be changed through the API: use "
                            "`kms-cli policy set` or create the key with it")
    return respond(shape, ignored(body, _CONFIG))


def _r(methods, pattern: str, handler, writes: bool = True) -> Route:
    return Route(tuple(methods), re.compile(pattern), handler, needs_token=True, writes=writes)


_NAME = r"(?P<name>[^?#]+?)"
ROUTES = [
    _r(("POST", "PUT"), rf"/v1/transit/encrypt/{_NAME}", encrypt),
    _r(("POST", "PUT"), rf"/v1/transit/decrypt/{_NAME}", decrypt),
    _r(("POST", "PUT"), rf"/v1/transit/rewrap/{_NAME}", rewrap),
    _r(("POST", "PUT"), rf"/v1/transit/datakey/(?P<kind>[^/]+)/{_NAME}", datakey),
    _r(("POST", "PUT"), rf"/v1/transit/sign/{_NAME}", sign),
    _r(("POST", "PUT"), rf"/v1/transit/verify/{_NAME}", verify),
    _r(("POST", "PUT"), rf"/v1/transit/keys/{_NAME}/rotate", rotate_key),
    _r(("POST", "PUT"), rf"/v1/transit/keys/{_NAME}/config", config_key),
    _r(("POST", "PUT"), rf"/v1/transit/keys/{_NAME}", create_key),
    _r(("GET",), rf"/v1/transit/keys/{_NAME}", read_key, writes=False),
    _r(("LIST",), r"/v1/transit/keys(?:/)?", list_keys, writes=False),
]

