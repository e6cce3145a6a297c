"""`keyring:SERVICE`: the root key sealed under a key-encryption key kept in the OS keyring.

Design: the keyring item (service SERVICE, default `kms-cli`; account = the
vault id) holds a random 32-byte key-encryption key (KEK), text
`kms-cli-kek:v1:<base64>`. The slot blob is `0x01 | chunked.seal(KEK, root_key,
LABEL + encode_context(context))`, so the vault id is bound as associated data,
and neither the keyring item nor the slot alone opens the vault.

The KEK is created on the first wrap for a vault and reused afterwards: a
`master rotate` reseals the new root key under the same KEK, so an interrupted
rotation never destroys the item the old slot still needs. Removing the slot
leaves the item in the keyring (delete it with your keyring's tools).

Backends: a backend named by `PYTHON_KEYRING_BACKEND` or keyringrc.cfg is used
as named. Otherwise the best viable backend is chosen, and refused when its
priority is below 1 (keyrings.alt's plaintext file, the null backend), instead
of silently storing the key in a plaintext file.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass, field

from kms_cli.crypto import chunked
from kms_cli.crypto.primitives import sha256
from kms_cli.errors import (
    IntegrityError,
    KmsError,
    NotFoundError,
    StateError,
    UnavailableError,
    UnlockError,
    UsageError,
)
from kms_cli.providers import remote
from kms_cli.providers.base import SourceOptions, encode_context

DEFAULT_SERVICE = "kms-cli"
VAULT_KEY = "kms-cli:vault"
_LABEL = b"kms-cli/slot/keyring/v1\x00"
_PREFIX = "kms-cli-kek:v1:"
_VERSION = b"\x01"
_INSTALL_HINT = "install the keyring extra: pip install 'kms-cli[keyring]'"


def account_for(context: dict[str, str]) -> str:
    """The keyring account of a vault: its id, or a digest of the context without one."""
    vault = context.get(VAULT_KEY)
    if vault:
        return vault
    return "ctx-" + sha256(encode_context(context)).hex()[:32]


@dataclass
class KeyringSource:
    service: str
    environ: dict = field(repr=False)  # may hold secrets
    timeout: float = 10.0  # KMS_CLI_TIMEOUT: bounds each keyring call
    scheme = "keyring"

    @property
    def uri(self) -> str:
        return f"keyring:{self.service}"

    # -- backend selection -------------------------------------------------
    def _backend(self):
        try:
            import keyring.backend
            import keyring.core
            import keyring.errors  # noqa: F401
        except ImportError as exc:
            raise UnavailableError("the keyring package is not installed", hint=_INSTALL_HINT) from exc

        name = self.environ.get("PYTHON_KEYRING_BACKEND")
        try:
            if name:
                return keyring.core.load_keyring(name)
            configured = keyring.core.load_config()
        except (ImportError, AttributeError, ValueError) as exc:
            raise UsageError(
                f"cannot load keyring backend {name or '(from keyringrc.cfg)'}",
                hint="name a backend class such as keyring.backends.SecretService.Keyring",
            ) from exc
        except RuntimeError as exc:  # a named backend that is not viable here
            raise UnavailableError(f"keyring backend {name} is not usable here: {exc}") from exc
        if configured is not None:
            return configured

        from keyring.backends.chainer import ChainerBackend

        keyring.backend.get_all_keyring()  # loads third-party backend plug-ins once
        best, best_priority = None, None
        for cls in keyring.backend.KeyringBackend.get_viable_backends():
            if issubclass(cls, ChainerBackend):
                continue
            try:
                priority = cls.priority
            except Exception:  # noqa: BLE001 - not viable right now
                continue
            if best is None or priority > best_priority:
                best, best_priority = cls, priority
        if best is None or best_priority <= 0:
            raise UnavailableError(
                "no OS keyring is available",
                hint="start a Secret Service (gnome-keyring, KWallet) or macOS/Windows keychain session",
            )
        if best_priority < 1:
            raise UnavailableError(
                f"the only keyring backend available, {best.__module__}.{best.__name__}, is not a secure store",
                hint="start an OS keyring, or set PYTHON_KEYRING_BACKEND to that backend to use it anyway",
            )
        return best()

    # -- the key-encryption key --------------------------------------------
    def _get(self, backend, account: str) -> str | None:
        return self._guard(lambda: backend.get_password(self.service, account))

    def _guard(self, fn):
        """Run a keyring call, bounded by KMS_CLI_TIMEOUT (a hung Secret Service daemon would
        otherwise block forever), translating its errors. Not retried: a keyring is local."""
        return remote.call(lambda _left: fn(), self._translate,
                           policy=remote.Policy(timeout=self.timeout, retries=0), what="the keyring")

    def _translate(self, exc: BaseException) -> remote.Failure:
        return remote.Failure(self._error(exc))

    def _error(self, exc: BaseException) -> KmsError:
        import keyring.errors as kerr

        if isinstance(exc, KmsError):
            return exc
        if isinstance(exc, kerr.KeyringLocked):
            return UnlockError(
                f"the keyring holding service {self.service!r} is locked",
                hint="unlock it (log in to the desktop session or unlock the collection), then retry",
            )
        if isinstance(exc, kerr.NoKeyringError):
            return UnavailableError(
                "no OS keyring is available",
                hint="start a Secret Service or set PYTHON_KEYRING_BACKEND to a working backend",
            )
        if isinstance(exc, kerr.InitError):
            text = str(exc).lower()
            if "dismiss" in text or "prompt" in text:
                return UnlockError(
                    "the keyring could not be unlocked: the unlock prompt was dismissed",
                    hint="unlock the default keyring collection (e.g. gnome-keyring-daemon --unlock), then retry",
                )
            return UnavailableError(f"the keyring could not be opened: {_short(exc)}")
        if isinstance(exc, kerr.KeyringError):
            return UnavailableError(f"the keyring failed: {type(exc).__name__}")
        # D-Bus and backend specific errors
        return UnavailableError(f"the keyring failed: {type(exc).__name__}: {_short(exc)}")

    @staticmethod
    def _decode(value: str) -> bytes | None:
        if not value.startswith(_PREFIX):
            return None
        try:
            kek = base64.b64decode(value[len(_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            return None
        return kek if len(kek) == 32 else None

    def _kek_for_wrap(self, account: str) -> bytes:
        backend = self._backend()
        existing = self._get(backend, account)
        if existing is not None:
            kek = self._decode(existing)
            if kek is None:
                raise StateError(
                    f"keyring item {self.service!r}/{account} exists but does not hold a kms-cli key",
                    hint="delete that item or use another service name (keyring:OTHER)",
                )
            return kek
        kek = secrets.token_bytes(32)
        value = _PREFIX + base64.b64encode(kek).decode()
        self._guard(lambda: backend.set_password(self.service, account, value))
        if self._get(backend, account) != value:
            raise UnavailableError(
                f"the keyring backend {type(backend).__name__} did not keep the key",
                hint="use a persistent keyring backend",
            )
        return kek

    # -- MasterKeySource ---------------------------------------------------
    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        kek = self._kek_for_wrap(account_for(context))
        return _VERSION + chunked.seal(kek, key, _LABEL + encode_context(context))

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        account = account_for(context)
        backend = self._backend()
        value = self._get(backend, account)
        if value is None:
            raise NotFoundError(
                f"the keyring has no key for this vault under service {self.service!r}",
                hint="was the slot created on another machine or by another user?",
            )
        kek = self._decode(value)
        if kek is None or not blob.startswith(_VERSION):
            raise UnlockError(f"the keyring key of service {self.service!r} does not open this slot")
        try:
            return chunked.open(kek, blob[1:], _LABEL + encode_context(context))
        except IntegrityError:
            raise UnlockError(f"the keyring key of service {self.service!r} does not open this slot") from None

    def is_configured(self) -> bool:
        try:
            self._backend()
        except KmsError:
            return False
        return True


    def secret_env_vars(self) -> list[str]:
        return []


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def from_uri(uri: str, options: SourceOptions) -> KeyringSource:
    service = uri.partition(":")[2] or DEFAULT_SERVICE
    if not service.isprintable():  # no line breaks, NUL or other control or separator characters
        raise UsageError(f"invalid keyring service name in source {uri!r}")
    return KeyringSource(service=service, environ=options.environ or dict(os.environ),
                         timeout=remote.Policy.from_options(options).timeout)
