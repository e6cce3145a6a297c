"""The vault: creation, unlocking, the key hierarchy, and the audited operation frame.

Root key (random, 256 bits) is sealed in one slot per master key source. From it,
HKDF-SHA-256 (salt = vault id) derives one subkey per purpose; no key serves two.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from typing import Iterator

from kms_cli import actor, durations
from kms_cli.audit import AuditLog, result_of
from kms_cli.crypto import wrap
from kms_cli.crypto.primitives import equal, hkdf_sha256, hmac_sha256, random_bytes
from kms_cli.errors import AlreadyExistsError, IntegrityError, KmsError, NotFoundError, UnavailableError, UnlockError
from kms_cli.names import Namespace
from kms_cli.providers import from_uri, scheme_of
from kms_cli.providers.base import SourceOptions
from kms_cli.store import Store

CONTEXT_KEY = "kms-cli:vault"
PURPOSES = ("key-material", "secret-value", "audit-mac", "slot-mac", "row-mac")


def bind(kind: str, *parts) -> bytes:
    """Associated data: a label, then every part length-prefixed (unambiguous)."""
    out = [b"kms-cli/v1/" + kind.encode() + b"\x00"]
    for p in parts:
        if isinstance(p, int):
            p = str(p)
        if isinstance(p, str):
            p = p.encode()
        out.append(struct.pack(">I", len(p)) + p)
    return b"".join(out)


class Subkeys:
    """One key per purpose, derived from the root key; never printed."""

    __slots__ = ("material", "secret", "audit", "slot", "row")

    def __init__(self, material: bytes, secret: bytes, audit: bytes, slot: bytes, row: bytes):
        self.material, self.secret, self.audit, self.slot, self.row = material, secret, audit, slot, row

    @classmethod
    def derive(cls, root: bytes, vault_id: bytes) -> "Subkeys":
        k = {p: hkdf_sha256(root, salt=vault_id, info=b"kms-cli/v1/subkey/" + p.encode()) for p in PURPOSES}
        return cls(k["key-material"], k["secret-value"], k["audit-mac"], k["slot-mac"], k["row-mac"])

    def __repr__(self) -> str:
        return "Subkeys(***)"


class OpRecord:
    """What an operation tells its audit entry (never values)."""

    __slots__ = ("op", "target", "version", "extra")

    def __init__(self, op: str, target: str | None = None, version: int | None = None):
        self.op, self.target, self.version = op, target, version
        self.extra: dict = {}


class Options:
    """How to reach and unlock a vault: from flags, environment and config."""

    __slots__ = ("path", "namespace", "unlock", "source")

    def __init__(self, path: str, namespace: Namespace | None = None, unlock: str | None = None,
                 source: SourceOptions | None = None):
        self.path = path
        self.namespace = namespace or Namespace()
        self.unlock = unlock
        self.source = source or SourceOptions()

    def __repr__(self) -> str:
        return f"Options(path={self.path!r}, namespace={self.namespace.prefix!r}, unlock={self.unlock!r})"


def slot_tag(slot_key: bytes, vault_id: bytes, slot_id: int, uri: str, blob: bytes) -> bytes:
    """Authenticates a slot row to its vault (so a slot copied from another vault fails)."""
    return hmac_sha256(slot_key, bind("slot", vault_id, slot_id, uri, blob))


class Vault:
    def __init__(self, store: Store, vault_id: bytes, root: bytes, options: Options, slot_id: int | None):
        self.store = store
        self.vault_id = vault_id
        self._root = root
        self.subkeys = Subkeys.derive(root, vault_id)
        self.options = options
        self.ns = options.namespace
        self.slot_id = slot_id
        self.audit = AuditLog(store, self.subkeys.audit, actor.current(options.source.environ or None))

    def __repr__(self) -> str:
        return f"Vault({self.store.path!r})"

    @property
    def context(self) -> dict[str, str]:
        return {CONTEXT_KEY: self.vault_id.hex()}

    # -- creation and unlocking --------------------------------------------
    @classmethod
    def create(cls, options: Options, source_uri: str, *, force: bool = False) -> "Vault":
        if os.path.exists(options.path) and not force:  # before any provider call (or key creation)
            raise AlreadyExistsError(f"a vault already exists at {options.path}", hint="pass --force to replace it")
        source = from_uri(source_uri, options.source)  # validate before touching the file
        vault_id = random_bytes(16)
        root = random_bytes(32)
        blob = source.wrap(root, {CONTEXT_KEY: vault_id.hex()})
        store = Store.create(options.path, force=force)
        vault = cls(store, vault_id, root, options, slot_id=1)
        with store.write():
            store.set_meta("vault_id", vault_id.hex())
            store.set_meta("created", str(durations.now()))
            vault._add_slot_row(1, source.uri, blob)
            vault.audit.append("vault.init", None, None, extra={"source": source.masked_uri()})
        return vault

    def _add_slot_row(self, slot_id: int, uri: str, blob: bytes) -> None:
        tag = slot_tag(self.subkeys.slot, self.vault_id, slot_id, uri, blob)
        self.store.insert_slot(slot_id, uri, blob, tag, durations.now())

    @classmethod
    def open(cls, options: Options) -> "Vault":
        store = Store.open(options.path)
        raw_id = store.get_meta("vault_id")
        if not raw_id:
            raise IntegrityError(f"the vault file {options.path} has no vault id")
        vault_id = bytes.fromhex(raw_id)
        slots = store.slots()
        if not slots:
            raise IntegrityError("the vault has no slots")
        wanted = options.unlock
        if wanted and wanted.isdigit():
            chosen = [s for s in slots if s["id"] == int(wanted)]
            if not chosen:
                raise NotFoundError(f"no slot {wanted}", hint="see `kms-cli master list`")
        elif wanted:
            scheme_of(wanted)
            chosen = [s for s in slots if s["uri"] == wanted or _canonical(wanted, options) == s["uri"]]
            if not chosen:
                raise NotFoundError(f"no slot with source {wanted}", hint="see `kms-cli master list`")
        else:
            chosen = slots
        failures: list[tuple[int, str, KmsError]] = []
        context = {CONTEXT_KEY: vault_id.hex()}
        for slot in chosen:
            try:
                source = from_uri(slot["uri"], options.source)
                if not wanted and not source.is_configured():
                    failures.append((slot["id"], slot["uri"], None))
                    continue
                root = source.unwrap(slot["blob"], context)
                sub = Subkeys.derive(root, vault_id)
                tag = slot_tag(sub.slot, vault_id, slot["id"], slot["uri"], slot["blob"])
                if not equal(tag, slot["tag"]):
                    raise UnlockError("the slot does not belong to this vault")
            except KmsError as exc:
                failures.append((slot["id"], slot["uri"], exc))
                continue
            vault = cls(store, vault_id, root, options, slot_id=slot["id"])
            vault._slot_last_used = slot["last_used"]
            if _restore_leftovers(options.path):  # a restore keeps the old vault until a successful unlock
                from kms_cli.vault.backup import cleanup_after_restore

                cleanup_after_restore(options.path)
            return vault
        _record_unlock_failure(store, failures)
        raise _unlock_error(failures)

    # -- the audited operation frame ----------------------------------------
    @contextmanager
    def operation(self, op: str, target: str | None = None, version: int | None = None,
                  *, write: bool = True) -> Iterator[OpRecord]:
        """Run an operation and its audit entry.

        write=True: the operation's writes and its entry land in one transaction.
        write=False (reads and streamed data): the body runs without holding the
        write lock, then the entry is appended; callers release results (print a
        value, rename an output file) only after this returns, so a failed entry
        fails the operation closed. On a refusal the entry (denied/error) is
        committed on its own and the error propagates.
        """
        rec = OpRecord(op, target, version)
        if not write and self._housekeeping_due():
            with self.store.write():
                self._housekeeping()
        try:
            if write:
                with self.store.write():
                    self._housekeeping()
                    yield rec
                    self.audit.append(rec.op, rec.target, rec.version, extra=rec.extra or None)
            else:
                yield rec
        except KmsError as exc:
            result, code = result_of(exc)
            with self.store.write():
                self._housekeeping()
                self.audit.append(rec.op, rec.target, rec.version, result, code)
            raise
        if not write:
            with self.store.write():
                self._housekeeping()
                self.audit.append(rec.op, rec.target, rec.version, extra=rec.extra or None)

    def _housekeeping_due(self) -> bool:
        return bool(self.store.one(
            "SELECT EXISTS (SELECT 1 FROM unlock_failures) "
            "OR EXISTS (SELECT 1 FROM keys WHERE state = 'destroy-scheduled' AND destroy_at <= ?)",
            (durations.now(),))[0])

    def _housekeeping(self) -> None:
        """Work due whenever the vault is opened for writing: failed unlocks, destroy windows."""
        row = self.store.one("SELECT count, first, last, slots FROM unlock_failures WHERE id = 1")
        if row:
            self.audit.append(
                "unlock.failed", None, None, "denied", "unlock_failed",
                extra={"count": row["count"], "first": durations.rfc3339(row["first"]),
                       "last": durations.rfc3339(row["last"]), "slots": json.loads(row["slots"])},
            )
            self.store.run("DELETE FROM unlock_failures WHERE id = 1")
        if self.slot_id is not None and getattr(self, "_touched", False) is False:
            self._touched = True
            last = getattr(self, "_slot_last_used", None)
            now = durations.now()
            if last is None or now - last > 60:
                self.store.touch_slot(self.slot_id, now)
        if self.store.one("SELECT 1 FROM keys WHERE state = 'destroy-scheduled' AND destroy_at <= ? LIMIT 1",
                          (durations.now(),)):
            from kms_cli.vault import keys as _keys

            _keys.purge_due(self)

    # -- wraps under the root's subkeys (`keys` overrides them during `master rotate`) --
    def seal_material(self, name: str, version: int, algorithm: str, material: bytes, kind: str = "key",
                      keys: Subkeys | None = None) -> bytes:
        return wrap.seal("aes-256-gcm", (keys or self.subkeys).material, material,
                         bind(kind, self.vault_id, name, version, algorithm))

    def open_material(self, name: str, version: int, algorithm: str, blob: bytes, kind: str = "key") -> bytes:
        try:
            return wrap.open("aes-256-gcm", self.subkeys.material, blob,
                             bind(kind, self.vault_id, name, version, algorithm))
        except IntegrityError:
            raise IntegrityError(f"key material of {self.ns.relative(name)} version {version} failed authentication") from None

    def seal_secret(self, name: str, version: int, value: bytes, expires: float | None,
                    keys: Subkeys | None = None) -> bytes:
        """A secret version's value, bound to vault, name, version and its expiry (a TTL cannot be
        stretched by editing the row)."""
        return wrap.seal("aes-256-gcm", (keys or self.subkeys).secret, value,
                         bind("secret", self.vault_id, name, version, _expiry(expires)))

    def open_secret(self, name: str, version: int, blob: bytes, expires: float | None) -> bytes:
        try:
            return wrap.open("aes-256-gcm", self.subkeys.secret, blob,
                             bind("secret", self.vault_id, name, version, _expiry(expires)))
        except IntegrityError:
            raise IntegrityError(f"secret {self.ns.relative(name)} version {version} failed authentication") from None

    def secret_env_vars(self) -> list[str]:
        """Variables holding any slot's secrets (removed from `exec` children)."""
        out = []
        for row in self.store.slots():
            try:
                out += from_uri(row["uri"], self.options.source).secret_env_vars()
            except KmsError:
                continue
        return out

    def close(self) -> None:
        self.store.close()


def _restore_leftovers(path: str) -> bool:
    prefix = os.path.basename(path) + ".bak-"
    try:
        return any(n.startswith(prefix) for n in os.listdir(os.path.dirname(os.path.abspath(path)) or "."))
    except OSError:
        return False


def _expiry(expires: float | None) -> str:
    return "" if expires is None else repr(float(expires))


def _canonical(uri: str, options: Options) -> str:
    try:
        return from_uri(uri, options.source).uri
    except KmsError:
        return uri


def _record_unlock_failure(store: Store, failures) -> None:
    """Count failed unlocks outside the chain; folded into one entry at the next unlock."""
    if not any(isinstance(e, UnlockError) for _, _, e in failures):
        return
    now = durations.now()
    slots = sorted({sid for sid, _, e in failures if isinstance(e, UnlockError)})
    try:
        with store.write():
            row = store.one("SELECT count, first, slots FROM unlock_failures WHERE id = 1")
            if row:
                merged = sorted(set(json.loads(row["slots"])) | set(slots))
                store.run("UPDATE unlock_failures SET count = count + 1, last = ?, slots = ? WHERE id = 1",
                          (now, json.dumps(merged)))
            else:
                store.run("INSERT INTO unlock_failures (id, count, first, last, slots) VALUES (1, 1, ?, ?, ?)",
                          (now, now, json.dumps(slots)))
    except KmsError:
        pass  # a read-only vault file still reports the unlock failure itself


def _unlock_error(failures) -> KmsError:
    parts = []
    for sid, uri, exc in failures:
        parts.append(f"slot {sid} ({uri}): " + ("not configured here" if exc is None else str(exc)))
    attempted = [e for _, _, e in failures if e is not None]
    msg = "could not unlock the vault: " + "; ".join(parts)
    if not attempted:
        return UnlockError(msg, hint="set KMS_CLI_MASTER_KEY (create one with `kms-cli master generate`), "
                                     "KMS_CLI_PASSPHRASE, or pick a slot with --unlock")
    if all(isinstance(e, UnavailableError) for e in attempted):
        return UnavailableError(msg)
    hint = None
    if any(isinstance(e, NotFoundError) and uri.startswith("env:") for _, uri, e in failures):
        hint = "create a master key with `kms-cli master generate`"
    err = UnlockError(msg, hint=hint)
    return err
