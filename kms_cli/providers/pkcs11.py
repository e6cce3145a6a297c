"""`pkcs11:` (RFC 7512): the root key sealed with AES-256-GCM by a key object on a token.

URI: `pkcs11:token=T;object=O?module-path=/lib.so&pin-source=env:VAR`
(path attributes `token`, `serial`, `object`, `id`, `type=secret-key`; query
attributes `module-path` and `pin-source=env:VAR|file:PATH`). `pin-value` is
refused: the URI is stored in the slot and shown by `master list`.

The key is a persistent AES-256 secret key, non-extractable and sensitive,
created by `init --create-key` (options.create_key) when absent. Blob (v1):
`0x01 | IV (12 bytes) | AES-GCM ciphertext || 16-byte tag`, with AAD =
LABEL + encode_context(context) (the vault id). The IV is random: NIST SP
800-38D allows 2**32 random-IV encryptions under one key; kms-cli encrypts once
per `init`, `master add` or `master rotate` with this key (a handful per vault,
even across many vaults), far below that bound.

PKCS#11 calls are local (a shared library), so they are not retried.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from urllib.parse import unquote

from kms_cli.errors import KmsError, NotFoundError, UnavailableError, UnlockError, UsageError
from kms_cli.names import is_env_name
from kms_cli.providers.base import SourceOptions, encode_context

_LABEL = b"kms-cli/slot/pkcs11/v1\x00"
_VERSION = b"\x01"
_IV_LEN = 12
_TAG_BITS = 128
_PATH_ATTRS = {"token", "serial", "object", "id", "type", "manufacturer", "model"}
_QUERY_ATTRS = {"module-path", "pin-source"}
_INSTALL_HINT = "install the hsm extra: pip install 'kms-cli[hsm]'"


@dataclass
class Pkcs11Uri:
    path: dict[str, str]
    query: dict[str, str]
    raw: str

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def key_id(self) -> bytes | None:
        return self.path["id"].encode("latin-1") if "id" in self.path else None


def _split(text: str, sep: str, what: str, allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split(sep):
        name, eq, value = part.partition("=")
        if not eq or not name:
            raise UsageError(f"invalid pkcs11 uri {what} attribute {part!r}")
        if name == "pin-value":
            raise UsageError(
                "pin-value is not allowed in a pkcs11 source: the uri is stored in the vault",
                hint="use pin-source=env:VAR or pin-source=file:PATH",
            )
        if name not in allowed:
            raise UsageError(f"unsupported pkcs11 uri attribute {name!r}")
        if name in out:
            raise UsageError(f"pkcs11 uri attribute {name!r} given twice")
        # `id` is binary: percent-decode to raw bytes (held as latin-1 text); RFC 7512 spells
        # every other byte %XX, so a character beyond latin-1 cannot be one
        out[name] = unquote(value, encoding="latin-1") if name == "id" else unquote(value)
        if name == "id" and any(ord(c) > 0xFF for c in out[name]):
            raise UsageError(f"invalid pkcs11 uri id {value!r}", hint="write the id's bytes as %XX (RFC 7512)")
        if name != "id" and not out[name].isprintable():  # line breaks, NUL, other control characters
            raise UsageError(f"invalid pkcs11 uri {what} attribute {name!r}: control characters or line breaks")
    return out


def parse_uri(uri: str) -> Pkcs11Uri:
    if not uri.startswith("pkcs11:"):
        raise UsageError(f"not a pkcs11 uri: {uri!r}")
    body = uri[len("pkcs11:"):]
    path_text, _, query_text = body.partition("?")
    parsed = Pkcs11Uri(
        path=_split(path_text, ";", "path", _PATH_ATTRS),
        query=_split(query_text, "&", "query", _QUERY_ATTRS),
        raw=uri,
    )
    if not parsed.token and "serial" not in parsed.path:
        raise UsageError("a pkcs11 source needs token=LABEL (or serial=) in its uri")
    if not parsed.object and "id" not in parsed.path:
        raise UsageError("a pkcs11 source needs object=LABEL (or id=) in its uri")
    if parsed.path.get("type", "secret-key") != "secret-key":
        raise UsageError("a pkcs11 source needs a secret-key object (type=secret-key)")
    if "module-path" not in parsed.query:
        raise UsageError(
            "a pkcs11 source needs module-path=/path/to/module.so in its uri",
            hint="for SoftHSM2: module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
    pin = parsed.query.get("pin-source")
    if pin is not None and not ((pin.startswith("env:") and is_env_name(pin[4:]))
                                or (pin.startswith("file:") and len(pin) > 5)):
        raise UsageError("pin-source must be env:VAR or file:PATH")
    return parsed


@dataclass
class Pkcs11Source:
    parsed: Pkcs11Uri
    create_key: bool = False
    environ: dict = field(default_factory=dict, repr=False)  # may hold secrets
    scheme = "pkcs11"

    @property
    def uri(self) -> str:
        return self.parsed.raw

    @property
    def _where(self) -> str:
        return f"token {self.parsed.token or self.parsed.path.get('serial')!r}"

    @property
    def _what(self) -> str:
        return f"key {self.parsed.object or self.parsed.path.get('id', '').encode('latin-1').hex()!r}"

    def _pin(self) -> str | None:
        source = self.parsed.query.get("pin-source")
        if source is None:
            return None
        kind, _, ref = source.partition(":")
        if kind == "env":
            value = self.environ.get(ref)
            if not value:
                raise UsageError(f"the pkcs11 pin variable {ref} is not set")
            return value
        path = ref[len("//"):] if ref.startswith("//") else ref
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read the pkcs11 pin file {path}: {exc.strerror or exc}") from exc

    def _session(self, *, rw: bool):
        try:
            import pkcs11
        except ImportError as exc:
            raise UnavailableError("python-pkcs11 is not installed", hint=_INSTALL_HINT) from exc
        module = self.parsed.query["module-path"]
        if not os.path.exists(module):
            raise UnavailableError(f"pkcs11 module {module} does not exist")
        lib = pkcs11.lib(module)
        kwargs = {}
        if self.parsed.token:
            kwargs["token_label"] = self.parsed.token
        if "serial" in self.parsed.path:
            kwargs["token_serial"] = self.parsed.path["serial"].encode()
        token = lib.get_token(**kwargs)
        return token.open(user_pin=self._pin(), rw=rw)

    def _find_key(self, session, *, create: bool):
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        query = {"object_class": ObjectClass.SECRET_KEY, "key_type": KeyType.AES}
        if self.parsed.object:
            query["label"] = self.parsed.object
        if self.parsed.key_id is not None:
            query["id"] = self.parsed.key_id
        try:
            key = session.get_key(**query)
        except pkcs11.exceptions.NoSuchKey:
            if not create:
                raise
            template = {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            }
            if self.parsed.key_id is not None:
                template[Attribute.ID] = self.parsed.key_id
            return session.generate_key(
                KeyType.AES, 256, label=self.parsed.object, store=True, template=template
            )
        if key.key_length not in (None, 256):
            raise UsageError(f"{self._what} on {self._where} is AES-{key.key_length}, not AES-256")
        return key

    def _gcm(self, iv: bytes, context: dict[str, str]):
        from pkcs11.mechanisms import GCMParams

        return GCMParams(iv, _LABEL + encode_context(context), _TAG_BITS)

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        try:
            with self._session(rw=self.create_key) as session:
                aes = self._find_key(session, create=self.create_key)
                from pkcs11 import Mechanism

                iv = secrets.token_bytes(_IV_LEN)
                sealed = aes.encrypt(key, mechanism=Mechanism.AES_GCM, mechanism_param=self._gcm(iv, context))
        except KmsError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, "wrap") from exc
        return _VERSION + iv + bytes(sealed)

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        if len(blob) < 1 + _IV_LEN + _TAG_BITS // 8 or not blob.startswith(_VERSION):
            raise UnlockError("this pkcs11 slot is malformed")
        iv, sealed = blob[1 : 1 + _IV_LEN], blob[1 + _IV_LEN :]
        phase = "open"
        try:
            with self._session(rw=False) as session:
                aes = self._find_key(session, create=False)
                from pkcs11 import Mechanism

                phase = "decrypt"
                return bytes(aes.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=self._gcm(iv, context)))
        except KmsError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, phase) from exc

    def _translate(self, exc: BaseException, phase: str) -> KmsError:
        if isinstance(exc, KmsError):
            return exc
        try:
            from pkcs11 import exceptions as e
        except ImportError:  # pragma: no cover - _session reported it already
            return UnavailableError(f"pkcs11 failed: {type(exc).__name__}")
        name = type(exc).__name__
        if isinstance(exc, (e.NoSuchToken, e.TokenNotPresent, e.TokenNotRecognised)):
            return NotFoundError(f"no pkcs11 {self._where} in module {self.parsed.query['module-path']}")
        if isinstance(exc, e.NoSuchKey):
            return NotFoundError(
                f"no AES {self._what} on pkcs11 {self._where}",
                hint="create it with `kms-cli init --create-key` or your token's tools",
            )
        if isinstance(exc, (e.MultipleObjectsReturned, e.MultipleTokensReturned)):
            return UsageError(f"more than one pkcs11 object matches {self.uri!r}", hint="add id= or serial= to the uri")
        if isinstance(exc, (e.PinIncorrect, e.PinInvalid, e.PinLenRange)):
            return UnlockError(f"the pin for pkcs11 {self._where} is incorrect")
        if isinstance(exc, (e.PinLocked, e.PinExpired, e.UserPinNotInitialized)):
            return UnlockError(f"the pin for pkcs11 {self._where} is locked, expired or not set ({name})")
        if phase == "decrypt" and isinstance(
            exc, (e.GeneralError, e.EncryptedDataInvalid, e.EncryptedDataLenRange, e.DataLenRange, e.FunctionFailed)
        ):
            # SoftHSM reports a GCM tag mismatch as a bare CKR_GENERAL_ERROR
            return UnlockError(
                f"the pkcs11 {self._what} on {self._where} does not open this slot",
                hint="the slot was sealed by another key or vault, or it was modified",
            )
        if isinstance(exc, e.MechanismInvalid):
            return UnavailableError(f"pkcs11 {self._where} does not support AES-GCM")
        if isinstance(exc, e.GeneralError):
            return UnavailableError(
                f"the pkcs11 module failed during {phase} (general error)",
                hint="check the module's configuration (for SoftHSM2: SOFTHSM2_CONF and its token directory)",
            )
        if isinstance(exc, e.PKCS11Error):
            text = str(exc).splitlines()[0][:200] if str(exc) else name
            return UnavailableError(f"pkcs11 failed during {phase}: {name}: {text}")
        return UnavailableError(f"pkcs11 failed during {phase}: {name}")

    def is_configured(self) -> bool:
        if not os.path.exists(self.parsed.query["module-path"]):
            return False
        source = self.parsed.query.get("pin-source")
        if source is None:
            return True
        kind, _, ref = source.partition(":")
        if kind == "env":
            return bool(self.environ.get(ref))
        return os.path.exists(ref[2:] if ref.startswith("//") else ref)


    def secret_env_vars(self) -> list[str]:
        source = self.parsed.query.get("pin-source", "")
        return [source[4:]] if source.startswith("env:") else []


def from_uri(uri: str, options: SourceOptions) -> Pkcs11Source:
    return Pkcs11Source(
        parsed=parse_uri(uri.strip()),
        create_key=options.create_key,
        environ=options.environ or dict(os.environ),
    )
