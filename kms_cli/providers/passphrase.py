"""`passphrase`: the root key sealed under an Argon2id key derived from a passphrase.

Blob (version 1), all integers big-endian:

    0x01 | m_kib (u32) | t (u32) | p (u32) | salt (16 bytes) | chunked.seal(...)

The sealed part is chunked.seal(Argon2id(passphrase, salt, m, t, p), root_key,
LABEL + header + encode_context(context)): the Argon2 parameters, the salt and
the vault id are all authenticated. `from_uri` always derives new slots with at
least m=64 MiB, t=3, p=4; unwrap uses the parameters stored in the slot (within
sane upper bounds, so a corrupted slot cannot make us allocate gigabytes).

The passphrase comes from, in order: `--passphrase-file` (options.passphrase_file,
trailing newlines stripped), `KMS_CLI_PASSPHRASE`, then the interactive prompt
(options.prompt, asked twice when sealing a new slot). Explicit sources win
over the prompt so scripts behave the same on a terminal. Text is NFC-normalised
and UTF-8 encoded before derivation.

A passphrase being set (`wrap`: `init`, `master add`, `master rotate`) must be strong, however
it arrives: at least MIN_LENGTH characters and a zxcvbn score of at least MIN_SCORE (zxcvbn
imported only then), unless options.allow_weak_passphrase (`--allow-weak-passphrase`). Opening a
slot never judges the passphrase. Refusals never repeat it, nor its length.
"""

from __future__ import annotations

import os
import struct
import unicodedata
from dataclasses import dataclass, field

from kms_cli.crypto import chunked
from kms_cli.crypto.passphrase import SALT_LEN, Argon2Params, derive_key
from kms_cli.errors import IntegrityError, UnlockError, UsageError
from kms_cli.providers.base import SourceOptions, encode_context

ENV_VAR = "KMS_CLI_PASSPHRASE"
VERSION = 1
_LABEL = b"kms-cli/slot/passphrase/v1\x00"
_HEADER = struct.Struct(">BIII")
FLOOR = Argon2Params()  # m=64 MiB, t=3, p=4
MIN_LENGTH = 12  # characters, after NFC normalisation
MIN_SCORE = 3  # zxcvbn: 0 (too guessable) .. 4 (very unguessable); 3 = "safely unguessable"
_ZXCVBN_MAX = 72  # zxcvbn's own limit: a longer passphrase is judged by its first 72 characters
_WEAK_HINT = ("choose a longer one (four or more random words make a good passphrase), "
              "or pass --allow-weak-passphrase to use it anyway")
# Upper bounds accepted when opening a slot: 4 GiB, 64 passes, 64 lanes.
_MAX_M, _MAX_T, _MAX_P = 4 * 1024 * 1024, 64, 64


@dataclass
class PassphraseSource:
    """Construct directly only in tests (to lower `params`); use `from_uri` otherwise."""

    options: SourceOptions = field(repr=False)  # environ may hold the passphrase
    params: Argon2Params = field(default_factory=Argon2Params)
    scheme = "passphrase"
    uri = "passphrase"

    @property
    def _environ(self) -> dict:
        return self.options.environ or dict(os.environ)

    def _passphrase(self, *, confirm: bool) -> bytes:
        text = self._read(confirm=confirm)
        if not text:
            raise UsageError("the passphrase is empty")
        text = unicodedata.normalize("NFC", text)
        if confirm and not self.options.allow_weak_passphrase:  # a new passphrase, never an unlock
            check_strength(text)
        return text.encode("utf-8")

    def _read(self, *, confirm: bool) -> str:
        path = self.options.passphrase_file
        if path:
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise UsageError(f"cannot read passphrase file {path}: {exc.strerror or exc}") from exc
            try:
                return raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise UsageError(f"passphrase file {path} is not UTF-8 text") from exc
        value = self._environ.get(ENV_VAR)
        if value:
            return value
        if self.options.prompt is not None:
            label = "new passphrase" if confirm else "passphrase"
            return self.options.prompt(label, confirm)
        raise UsageError(
            "no passphrase given",
            hint=f"type it on a terminal, set {ENV_VAR} or pass --passphrase-file FILE",
        )

    def wrap(self, key: bytes, context: dict[str, str]) -> bytes:
        passphrase = self._passphrase(confirm=True)
        salt = os.urandom(SALT_LEN)
        header = _HEADER.pack(VERSION, self.params.memory_kib, self.params.time_cost, self.params.parallelism) + salt
        derived = derive_key(passphrase, salt, self.params)
        return header + chunked.seal(derived, key, _LABEL + header + encode_context(context))

    def unwrap(self, blob: bytes, context: dict[str, str]) -> bytes:
        header_len = _HEADER.size + SALT_LEN
        if len(blob) <= header_len:
            raise UnlockError("this passphrase slot is malformed")
        version, m, t, p = _HEADER.unpack_from(blob)
        if version != VERSION:
            raise UnlockError(f"unsupported passphrase slot version {version}")
        if not (8 <= m <= _MAX_M and 1 <= t <= _MAX_T and 1 <= p <= _MAX_P and m >= 8 * p):
            raise UnlockError("this passphrase slot has implausible argon2 parameters")
        header, sealed = blob[:header_len], blob[header_len:]
        params = Argon2Params(memory_kib=m, time_cost=t, parallelism=p)
        derived = derive_key(self._passphrase(confirm=False), header[_HEADER.size:], params)
        try:
            return chunked.open(derived, sealed, _LABEL + header + encode_context(context))
        except IntegrityError:
            raise UnlockError("wrong passphrase") from None

    def is_configured(self) -> bool:
        return bool(self.options.passphrase_file or self._environ.get(ENV_VAR) or self.options.prompt)


    def secret_env_vars(self) -> list[str]:
        return [ENV_VAR]


def check_strength(text: str) -> None:
    """Refuse a weak new passphrase (UsageError, exit 2, with a hint naming the flag that allows it)."""
    if len(text) < MIN_LENGTH:
        raise UsageError(f"the new passphrase is shorter than {MIN_LENGTH} characters", hint=_WEAK_HINT)
    try:
        from zxcvbn import zxcvbn
    except ImportError:  # pragma: no cover - a declared dependency; without it only the length rule applies
        return
    verdict = zxcvbn(text[:_ZXCVBN_MAX], user_inputs=["kms-cli", "kms", "cli", "vault", "passphrase"])
    if verdict["score"] < MIN_SCORE:
        # zxcvbn's warnings are fixed sentences ('This is a very common password.'): never the passphrase
        warning = (verdict.get("feedback") or {}).get("warning") or ""
        why = f" ({warning[:1].lower()}{warning[1:].rstrip('.')})" if warning else ""
        raise UsageError(f"the new passphrase is too easy to guess{why}", hint=_WEAK_HINT)


def from_uri(uri: str, options: SourceOptions) -> PassphraseSource:
    if uri not in ("passphrase", "passphrase:"):
        raise UsageError(f"invalid passphrase source {uri!r}", hint="write it as `passphrase`")
    return PassphraseSource(options=options, params=FLOOR)
