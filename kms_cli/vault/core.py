"""The vault: creation, unlocking, the key hierarchy, and the audited operation frame.

Root key (random, 256 bits) is sealed in one slot per master key source. From it,
HKDF-SHA-256 (salt = vault id) derives one subkey per purpose; no key serves two.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from kms_cli import actor, durations
from kms_cli.audit import AuditLog, result_of
from kms_cli.binding import bind
from kms_cli.crypto import wrap
from kms_cli.crypto.primitives import equal, random_bytes
from kms_cli.errors import (AlreadyExistsError, IntegrityError, KmsError, NoIdentityError, NotFoundError,
                            UnavailableError, UnlockError, UsageError)
from kms_cli.names import Namespace
from kms_cli.providers import from_uri, scheme_of
from kms_cli.providers.base import SourceOptions
from kms_cli.locations import canonical, is_uri
from kms_cli.store import Store, check_location, create_store, open_store, vault_exists
from kms_cli.store.swap import cleanup_after_restore, restore_leftovers
from kms_cli.vault import rows
from kms_cli.vault.hierarchy import CONTEXT_KEY, PURPOSES, Subkeys, slot_tag  # noqa: F401 - re-exported

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


# Set in a process the agent forked to run a command: (vault_id, slots) -> (root, slot) when the
# agent holds that vault (its root key instead of an unlock), else None. See kms_cli/agent/child.py.
HELD = None


class Vault:
    def __init__(self, store: Store, vault_id: bytes, root: bytes, options: Options, slot_id: int | None,
                 slot_blob: bytes | None = None):
        self.store = store
        self.vault_id = vault_id
        self._root = root
        self.subkeys = Subkeys.derive(root, vault_id)
        self.options = options
        self.ns = options.namespace
        self.slot_id = slot_id
        self._slot_blob = slot_blob  # the sealed root key this process opened (see _check_current)
        self.audit = AuditLog(store, self.subkeys.audit, actor.current(options.source.environ or None))
        store.on_begin = self._check_current

    def __repr__(self) -> str:
        return f"Vault({self.store.location!r})"

    @property
    def context(self) -> dict[str, str]:
        return {CONTEXT_KEY: self.vault_id.hex()}

    # -- creation and unlocking --------------------------------------------
    @classmethod
    def create(cls, options: Options, source_uri: str, *, force: bool = False) -> "Vault":
        timeout = _timeout(options)
        check_location(options.path)
        if not force and vault_exists(options.path, timeout):  # before any provider call (or key creation)
            raise AlreadyExistsError(f"a vault already exists at {canonical_shown(options.path)}",
                                     hint="pass --force to replace it")
        source = from_uri(source_uri, options.source)  # validate before touching the file
        vault_id = random_bytes(16)
        root = random_bytes(32)
        blob = source.wrap(root, {CONTEXT_KEY: vault_id.hex()})
        store = create_store(options.path, force=force, timeout=timeout)
        vault = cls(store, vault_id, root, options, slot_id=1, slot_blob=blob)
        store.on_begin = None  # no slot yet to check against: this transaction writes it
        with store.write():
            store.set_meta("vault_id", vault_id.hex())
            store.set_meta("created", str(durations.now()))
            store.set_meta("auth", rows.AUTH_VERSION)
            vault._add_slot_row(1, source.uri, blob)
            rows.seal_slot_set(vault)
            vault.audit.append("vault.init", None, None, extra={"source": source.uri})
        store.on_begin = vault._check_current
        return vault

    def _add_slot_row(self, slot_id: int, uri: str, blob: bytes, label: str | None = None) -> None:
        tag = slot_tag(self.subkeys.slot, self.vault_id, slot_id, uri, blob)
        self.store.insert_slot(slot_id, uri, blob, tag, durations.now(), label)

    @classmethod
    def open(cls, options: Options) -> "Vault":
        store = open_store(options.path, _timeout(options))
        with store.read():  # one snapshot: a `master rotate` committing meanwhile is seen whole or not at all
            vault_id = _vault_id(store, store.location)
            slots = [dict(r) for r in store.slots()]
            legacy = store.get_meta("auth") != rows.AUTH_VERSION
            # the slot set's MAC from the same snapshot: checked below against these very slots (on a
            # database server, a second snapshot just to re-read them was ~6 round trips a command)
            slot_set = (store.get_meta("slots_seq"), store.get_meta("slots_mac"))
        if not slots:
            raise IntegrityError("the vault has no slots", hint="the vault file was edited outside kms-cli")
        held = _held(vault_id, slots) if HELD is not None else None
        root, slot = held if held is not None else _unlock(store, vault_id, slots, options)
        vault = cls(store, vault_id, root, options, slot_id=slot["id"], slot_blob=slot["blob"])
        vault._slot_last_used = slot["last_used"]
        if legacy:
            rows.upgrade(vault)
        else:
            rows.verify_slot_set(store, vault_id, vault.subkeys.slot, read=(slots, *slot_set))
        if not is_uri(options.path) and restore_leftovers(options.path):
            cleanup_after_restore(options.path)  # a restore keeps the old vault until a successful unlock
        return vault

    def _check_current(self) -> None:
        """At the start of every transaction: is the sealed root key this process opened still
        the vault's? After a `master rotate` committed by another process it is not, and every
        subkey is re-derived (unlocking again) before anything is read or written, so a command
        runs wholly under one root key, never writes rows or audit entries under a retired one."""
        if self._slot_blob is not None and self.store.slot_blob(self.slot_id) == self._slot_blob:
            return
        root, slot = _unlock(self.store, self.vault_id, [dict(r) for r in self.store.slots()], self.options,
                             record=False)
        self._root, self.subkeys = root, Subkeys.derive(root, self.vault_id)
        self.slot_id, self._slot_blob = slot["id"], slot["blob"]
        self.audit.set_key(self.subkeys.audit)
        rows.verify_slot_set(self.store, self.vault_id, self.subkeys.slot)

    # -- the audited operation frame ----------------------------------------
    @contextmanager
    def operation(self, op: str, target: str | None = None, version: int | None = None,
                  *, write: bool = True, housekeeping: bool = True) -> Iterator[OpRecord]:
        """Run an operation and its audit entry.

        write=True: the operation's writes and its entry land in one transaction.
        write=False (reads): the body runs in one read snapshot, then the entry is appended;
        callers release results (print a value, rename an output file, stream plaintext) only
        after this returns, so a failed entry fails the operation closed. On a refusal the
        entry (denied/error) is committed on its own and the error propagates.
        housekeeping=False (a --dry-run): work that is due (destructions, folded unlock failures)
        waits for the next operation, so this one changes nothing but the log.
        """
        rec = OpRecord(op, target, version)
        if not write and self.store.read_only:  # a PostgreSQL standby: it can serve reads, not log them
            with self.store.read():
                yield rec
            self._unrecorded(rec)
            return
        if not write and housekeeping and self._housekeeping_due():
            with self.store.write():
                self._housekeeping()
        try:
            if write:
                with self.store.write():
                    self._housekeeping()
                    yield rec
                    self.audit.append(rec.op, rec.target, rec.version, extra=rec.extra or None)
            else:
                with self.store.read():
                    yield rec
        except KmsError as exc:
            if not self.store.read_only:  # a standby cannot log the refusal either: the error says why
                self.record(rec, exc, housekeeping=housekeeping)
            raise
        if not write:
            self.record(rec, housekeeping=housekeeping)

    def _unrecorded(self, rec: OpRecord) -> None:
        """A read served by a standby: say on stderr that the vault's log does not hold it."""
        if not getattr(self, "_warned_unrecorded", False) and self.options.source.warn is not None:
            self._warned_unrecorded = True
            self.options.source.warn(f"{rec.op} was served by a standby and is not in the vault's audit log "
                                     "(only the primary can write it)")

    def record(self, rec: OpRecord, exc: KmsError | None = None, *, housekeeping: bool = True) -> None:
        """Append `rec`'s entry in its own transaction: ok, or what `exc` made of it (an operation
        whose output already went out and then failed, a stream that did not authenticate, records
        the failure as a second entry: what the user saw)."""
        result, code = result_of(exc)
        with self.store.write():
            if housekeeping:
                self._housekeeping()
            if exc is None:
                self.audit.append(rec.op, rec.target, rec.version, extra=rec.extra or None)
            else:
                self.audit.append(rec.op, rec.target, rec.version, result, code)

    def _housekeeping_due(self) -> bool:
        return self.store.housekeeping_due(durations.now())

    def _housekeeping(self) -> None:
        """Work due whenever the vault is opened for writing: failed unlocks, destroy windows."""
        row = self.store.unlock_failures()
        if row:
            self.audit.append(
                "unlock.failed", None, None, "denied", "unlock_failed",
                extra={"count": row["count"], "first": durations.rfc3339(row["first"]),
                       "last": durations.rfc3339(row["last"]), "slots": json.loads(row["slots"])},
            )
            self.store.clear_unlock_failures()
        if self.slot_id is not None and getattr(self, "_touched", False) is False:
            self._touched = True
            last = getattr(self, "_slot_last_used", None)
            now = durations.now()
            if last is None or now - last > 60:
                self.store.touch_slot(self.slot_id, now)
        if self.store.keys_due_for_destruction(durations.now()):
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



def _expiry(expires: float | None) -> str:
    return "" if expires is None else repr(float(expires))


def _canonical(uri: str, options: Options) -> str:
    try:
        return from_uri(uri, options.source).uri
    except KmsError:
        return uri


def _timeout(options: Options) -> float:
    """KMS_CLI_TIMEOUT bounds a database server's connect and statements as it bounds providers."""
    return options.source.timeout if options.source is not None else 10.0


def canonical_shown(location: str) -> str:
    return canonical(location) if is_uri(location) else location


def _vault_id(store: Store, path: str) -> bytes:
    raw = store.get_meta("vault_id")
    if not raw:
        raise IntegrityError(f"the vault {path} has no vault id", hint="the vault file was edited outside kms-cli")
    try:
        vault_id = bytes.fromhex(raw) if isinstance(raw, str) else b""
    except ValueError:
        vault_id = b""
    if len(vault_id) != 16:
        raise IntegrityError(f"the vault id in {path} is damaged", hint="the vault file was edited outside kms-cli")
    return vault_id


def _held(vault_id: bytes, slots: list[dict]):
    """The agent's root key for this vault, when it opens this file's slot as `_unlock` would
    check it (the slot's tag under that key): a vault copy made by this very command (restore's
    checked copy) opens with it too, a file of another vault or of other slots never does."""
    held = HELD(vault_id, slots)
    if held is None:
        return None
    root, slot = held
    sub = Subkeys.derive(root, vault_id)
    if not equal(slot_tag(sub.slot, vault_id, slot["id"], slot["uri"], slot["blob"]), slot["tag"]):
        return None
    return root, slot


def _unlock(store: Store, vault_id: bytes, slots: list[dict], options: Options, *, record: bool = True):
    """Unseal the root key with the slot `options` names, or the first that opens: (root, slot)."""
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
    failures: list[tuple[int, str, KmsError | None]] = []
    context = {CONTEXT_KEY: vault_id.hex()}
    for slot in chosen:
        try:
            source = from_uri(slot["uri"], options.source)
            if not wanted and not source.is_configured():
                failures.append((slot["id"], slot["uri"], None))
                continue
            root = source.unwrap(slot["blob"], context)
            sub = Subkeys.derive(root, vault_id)
            if not equal(slot_tag(sub.slot, vault_id, slot["id"], slot["uri"], slot["blob"]), slot["tag"]):
                # the source opened it, so the key is right and the row was edited
                raise IntegrityError(f"slot {slot['id']} failed authentication (edited outside kms-cli)")
        except UsageError:
            raise  # the invocation's own input (an identity file that is a directory, malformed): exit 2 now
        except KmsError as exc:
            failures.append((slot["id"], slot["uri"], exc))
            continue
        return root, slot
    if record:
        _record_unlock_failure(store, failures)
    raise _unlock_error(failures, options.source.identities if options.source is not None else ())


def _record_unlock_failure(store: Store, failures) -> None:
    """Count failed unlocks outside the chain; folded into one entry at the next unlock."""
    if not any(isinstance(e, UnlockError) for _, _, e in failures):
        return
    slots = sorted({sid for sid, _, e in failures if isinstance(e, UnlockError)})
    try:
        with store.write():
            store.add_unlock_failure(durations.now(), slots)
    except KmsError:
        pass  # a read-only vault file still reports the unlock failure itself


def short_recipient(uri: str) -> str:
    """A recipient as an error message names it: `age1ql3z7hj…mcac8p`, `ssh-ed25519 AAAAC3Nz…Qx9Y alice`."""
    if uri.startswith("ssh-"):
        kind, _, rest = uri.partition(" ")
        key, _, comment = rest.partition(" ")
        short = key if len(key) <= 20 else f"{key[:8]}…{key[-6:]}"
        return " ".join(p for p in (kind, short, comment[:40]) if p)
    return uri if len(uri) <= 24 else f"{uri[:12]}…{uri[-6:]}"


def _is_recipient(uri: str) -> bool:
    return uri.startswith(("age1", "ssh-"))


RECIPIENTS_NAMED = 5  # at most this many recipients are listed in an unlock error; the rest counted


def _unlock_error(failures, identities=()) -> KmsError:
    parts = []
    # recipient slots that no identity opened: one clause for all of them, recipients shortened
    missed = [(sid, uri) for sid, uri, exc in failures
              if _is_recipient(uri) and (exc is None or isinstance(exc, NoIdentityError))]
    for sid, uri, exc in failures:
        if (sid, uri) in missed:
            continue
        parts.append(f"slot {sid} ({short_recipient(uri) if _is_recipient(uri) else uri}): "
                     + ("not configured here" if exc is None else str(exc)))
    if missed:
        named = ", ".join(f"slot {sid} {short_recipient(uri)}" for sid, uri in missed[:RECIPIENTS_NAMED])
        more = len(missed) - RECIPIENTS_NAMED
        tried = named + (f" and {more} more" if more > 0 else "")
        if identities:
            what = "the recipient" if len(missed) == 1 else f"any of the {len(missed)} recipients"
            clause = f"the identities offered ({', '.join(identities)}) open none of {what} tried: {tried}"
            if len(identities) == 1:
                clause = f"the identity offered ({identities[0]}) opens none of {what} tried: {tried}"
        else:
            clause = f"no identity given for {'the recipient slot' if len(missed) == 1 else 'the recipient slots'}: {tried}"
        parts.insert(0, clause)
    attempted = [e for _, _, e in failures if e is not None]
    msg = "could not unlock the vault: " + "; ".join(parts)
    if any(isinstance(e, IntegrityError) for e in attempted):
        return IntegrityError(msg, hint="the vault file was edited outside kms-cli; restore a backup")
    if missed and not identities:
        return UnlockError(msg, hint="give your identity with --identity FILE or KMS_CLI_IDENTITY"
                                     + ("" if len(missed) == len(failures) else ", or another slot's source"))
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
