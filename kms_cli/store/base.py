"""The storage interface: what the vault layer may ask of a storage engine, and nothing else.

A store knows rows, not keys: it never sees a plaintext key or value, never computes a MAC,
and never decides what a row means. The vault layer (`kms_cli.vault`, `kms_cli.audit`) talks
to a `Store` only through the methods below; SQL, the driver and its exceptions stay inside the
engine (`store/sqlite.py` today; a PostgreSQL engine is a second subclass). Engines keep the same
tables and columns (`SCHEMA_VERSION`), with the types each needs.

The contract every engine keeps (checked by `tests/unit/test_store.py` for each engine):

- Transactions: `write()` is one atomic transaction that serializes writers (a crash at any
  instant leaves the vault as before or after); `read()` is one consistent snapshot. Nested
  `write()`/`read()` join the outer one; a `write()` inside a `read()` snapshot is refused
  (`RuntimeError`: a bug). `on_begin`, when set, is called inside every outermost transaction
  before anything else (the vault checks there that its root key is still current).
- Errors: only `kms_cli.errors` leave a store. Storage that is full, read-only, locked too long
  or unreachable is `UnavailableError` (exit 7, nothing changed); a file or database that is not
  a vault or is damaged is `IntegrityError` (exit 5). A column whose bytes are not the text
  kms-cli writes raises `BadText` where the method says so (audit verification reads it raw).
- Rows are mappings: `row["column"]`, `dict(row)`; blobs come back as `bytes`, numbers as
  `int`/`float`, text as `str` (or whatever a tampered row holds: callers verify).
- Audit rows come back as plain tuples, in seq order, in batches: a log has millions of rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

SCHEMA_VERSION = 6


class BadText(ValueError):
    """A text column holds bytes that are not valid UTF-8 (the row was edited outside kms-cli)."""


Row = Mapping[str, Any]

# Every table a vault holds and its columns, in the order a copy writes them (`export_rows`,
# `import_rows`; `store/copy.py`): the schema both engines keep at SCHEMA_VERSION.
COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("k", "v"),
    "slots": ("id", "uri", "blob", "tag", "created", "last_used", "label"),
    "keys": ("name", "algorithm", "state", "state_before", "description", "labels", "rotate_every", "next_rotation",
             "primary_version", "created", "updated", "destroy_at", "mac", "seq"),
    "key_versions": ("name", "version", "state", "material", "public", "fingerprint", "created", "superseded",
                     "grace_until", "revoked", "revoke_reason", "destroyed", "mac", "seq"),
    "secrets": ("name", "last_version", "deleted", "created", "updated", "seq", "mac", "rotation"),
    "secret_versions": ("name", "version", "value", "created", "expires", "tags", "seq", "mac"),
    "policies": ("namespace", "rotate_every", "grace", "created", "updated", "seq", "mac"),
    "audit": ("seq", "time", "entry", "op", "target", "mac"),
    "audit_head": ("id", "seq", "mac", "seal"),
    "unlock_failures": ("id", "count", "first", "last", "slots"),
    "tokens": ("name", "hash", "ops", "namespace", "created", "expires", "revoked", "last_used", "seq", "mac"),
}
ORDER_BY = {"meta": "k", "slots": "id", "keys": "name", "key_versions": "name, version", "secrets": "name",
            "secret_versions": "name, version", "policies": "namespace", "audit": "seq", "audit_head": "id",
            "unlock_failures": "id", "tokens": "name"}


class Store:
    """One vault's storage. Subclasses implement every method; the docstrings are the contract."""

    location: str  # a path or a URI without credentials: shown in messages
    on_begin = None
    # True on a PostgreSQL hot standby: reads work, a write is StandbyError (exit 7). Reads there
    # cannot be recorded in the vault's log (the vault layer says so on stderr).
    read_only = False

    # -- lifetime ------------------------------------------------------------
    def close(self) -> None:
        raise NotImplementedError

    def schema_version(self) -> int:
        raise NotImplementedError

    # -- transactions --------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator["Store"]:
        raise NotImplementedError
        yield self  # pragma: no cover

    @contextmanager
    def read(self) -> Iterator["Store"]:
        raise NotImplementedError
        yield self  # pragma: no cover

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    @contextmanager
    def savepoint(self) -> Iterator["Store"]:
        """Inside a write transaction: the body's writes are undone if it raises, and only they
        (`serve` runs several requests in one transaction and one commit: group commit)."""
        raise NotImplementedError
        yield self  # pragma: no cover

    # -- meta ----------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        raise NotImplementedError

    def set_meta(self, k: str, v: str) -> None:
        raise NotImplementedError

    # -- slots ---------------------------------------------------------------
    def slots(self) -> list[Row]:
        """Every slot row (id, uri, blob, tag, created, last_used, label) in id order."""
        raise NotImplementedError

    def slot(self, slot_id: int) -> Row | None:
        raise NotImplementedError

    def slot_blob(self, slot_id: int) -> bytes | None:
        raise NotImplementedError

    def next_slot_id(self) -> int:
        raise NotImplementedError

    def insert_slot(self, slot_id: int, uri: str, blob: bytes, tag: bytes, created: float,
                    label: str | None = None) -> None:
        raise NotImplementedError

    def update_slot(self, slot_id: int, blob: bytes, tag: bytes) -> None:
        raise NotImplementedError

    def touch_slot(self, slot_id: int, when: float) -> None:
        raise NotImplementedError

    def remove_slot(self, slot_id: int) -> None:
        raise NotImplementedError

    # -- keys ----------------------------------------------------------------
    def key(self, name: str) -> Row | None:
        raise NotImplementedError

    def keys(self, under: str = "") -> list[Row]:
        """Key rows whose name lies inside the namespace `under` ("" = every key), by name."""
        raise NotImplementedError

    def insert_key(self, **row: Any) -> None:
        raise NotImplementedError

    def update_key(self, name: str, **changes: Any) -> None:
        raise NotImplementedError

    def key_version(self, name: str, version: int) -> Row | None:
        raise NotImplementedError

    def key_versions(self, name: str) -> list[Row]:
        raise NotImplementedError

    def key_versions_by_fingerprint(self, fingerprint: str) -> list[Row]:
        raise NotImplementedError

    def insert_key_version(self, **row: Any) -> None:
        raise NotImplementedError

    def update_key_version(self, name: str, version: int, **changes: Any) -> None:
        raise NotImplementedError

    def all_key_versions(self) -> list[Row]:
        raise NotImplementedError

    def keys_due_for_destruction(self, now: float) -> list[str]:
        raise NotImplementedError

    # -- secrets -------------------------------------------------------------
    def secret(self, name: str) -> Row | None:
        raise NotImplementedError

    def secrets(self, under: str = "") -> list[Row]:
        """Live (not deleted) secret heads inside the namespace `under` ("" = all), by name."""
        raise NotImplementedError

    def all_secrets(self) -> list[Row]:
        """Every secret head, deleted ones (tombstones) included."""
        raise NotImplementedError

    def put_secret_head(self, name: str, last_version: int, deleted: bool, created: float, updated: float,
                        seq: int, mac: bytes, rotation: str | None = None) -> None:
        raise NotImplementedError

    def secret_version(self, name: str, version: int) -> Row | None:
        raise NotImplementedError

    def secret_versions(self, name: str) -> list[Row]:
        raise NotImplementedError

    def all_secret_versions(self) -> list[Row]:
        raise NotImplementedError

    def insert_secret_version(self, **row: Any) -> None:
        raise NotImplementedError

    def update_secret_version(self, name: str, version: int, **changes: Any) -> None:
        raise NotImplementedError

    def delete_secret_versions(self, name: str) -> None:
        """Remove every version of a secret (its head stays as a tombstone: numbers never repeat)."""
        raise NotImplementedError

    def max_secret_version(self, name: str) -> int:
        raise NotImplementedError

    # -- policies --------------------------------------------------------------
    def policy(self, namespace: str) -> Row | None:
        raise NotImplementedError

    def policies(self) -> list[Row]:
        """Every policy row, by namespace."""
        raise NotImplementedError

    def put_policy(self, namespace: str, rotate_every: str, grace: int | None, created: float, updated: float,
                   seq: int, mac: bytes) -> None:
        raise NotImplementedError

    def delete_policy(self, namespace: str) -> None:
        raise NotImplementedError

    # -- API tokens (serve) ------------------------------------------------------
    def token(self, name: str) -> Row | None:
        raise NotImplementedError

    def token_by_hash(self, digest: bytes) -> Row | None:
        raise NotImplementedError

    def tokens(self) -> list[Row]:
        """Every token row, by name."""
        raise NotImplementedError

    def put_token(self, **row: Any) -> None:
        """Insert or replace a token row (every column of COLUMNS["tokens"] but last_used)."""
        raise NotImplementedError

    def touch_token(self, name: str, when: float) -> None:
        """Its last use (shown by `token list`; not part of the row's MAC)."""
        raise NotImplementedError

    # -- failed unlocks (outside the chain until the next unlock) -----------
    def unlock_failures(self) -> Row | None:
        raise NotImplementedError

    def add_unlock_failure(self, when: float, slots: list[int]) -> None:
        raise NotImplementedError

    def clear_unlock_failures(self) -> None:
        raise NotImplementedError

    def housekeeping_due(self, now: float) -> bool:
        """Failed unlocks to record, or keys whose scheduled destruction is due."""
        raise NotImplementedError

    # -- state bound to the log ------------------------------------------------
    def max_row_seq(self) -> int:
        """The highest audit seq any state row (or the slot set) records; 0 when none does."""
        raise NotImplementedError

    def written_since(self, target: str, seq: int, ops: tuple[str, ...]) -> int | None:
        """The first successful audit entry after `seq` for `target` whose op is one of `ops`."""
        raise NotImplementedError

    # -- the audit log ---------------------------------------------------------
    def audit_head(self) -> tuple[Any, bytes, bytes] | None:
        """The head row as (seq, mac, seal), mac and seal as raw bytes; None when there is none."""
        raise NotImplementedError

    def put_audit_head(self, seq: int, mac: str, seal: str) -> None:
        raise NotImplementedError

    def max_audit_seq(self) -> int:
        raise NotImplementedError

    def audit_count(self) -> int:
        raise NotImplementedError

    def insert_audit(self, seq: int, time: str, entry: str, op: str, target: str | None, mac: str) -> None:
        raise NotImplementedError

    def audit_batches(self, raw: bool = False, size: int = 20_000) -> Iterator[list[tuple]]:
        """Every entry as (seq, entry, mac, op, target, time), in seq order, `size` at a time.

        Text columns that are not valid UTF-8 raise `BadText` unless `raw`, which decodes every
        text column with replacement characters (so verification can name the damage)."""
        raise NotImplementedError

    def audit_rows_containing(self, needle: str) -> list[tuple[int, str, str]]:
        """(seq, entry, mac) of the entries whose text contains `needle`."""
        raise NotImplementedError

    def audit_query(self, *, after: int = 0, upto: int | None = None, since: str | None = None,
                    op: str | None = None, target: str | None = None) -> Iterator[tuple[int, str, str, Any]]:
        """(seq, entry, mac, target) in seq order: seq in (after, upto], time >= since, op matching
        the glob `op` (`*`, `?`, `[...]`), target equal to `target` or naming it in a comma list."""
        raise NotImplementedError

    def audit_prunable(self, before: str, keep_op: str) -> tuple[int, int, int, str] | None:
        """For entries older than `before` (RFC 3339) other than `keep_op`: (last seq, count, first
        seq, mac of the last), or None when there is none."""
        raise NotImplementedError

    def delete_audit_upto(self, seq: int) -> None:
        raise NotImplementedError

    def rewrite_audit(self, updates: list[tuple[str, str, int]]) -> None:
        """Replace (entry, mac) of the entries at each seq: (entry, mac, seq) triples."""
        raise NotImplementedError

    # -- whole-vault operations --------------------------------------------------
    def integrity_problems(self) -> list[str]:
        """The engine's own consistency check: [] when it finds nothing wrong."""
        raise NotImplementedError

    def backup_to(self, path: str) -> int:
        """Write a consistent copy (one snapshot) of this vault to the new vault file `path`;
        returns the audit head seq the copy holds. The caller owns `path` (0600, fsync, rename)."""
        raise NotImplementedError

    def export_rows(self, table: str, size: int = 1000) -> Iterator[list[tuple]]:
        """Every row of `table` as tuples in `COLUMNS[table]` order, `size` at a time (bounded memory)."""
        raise NotImplementedError

    def import_rows(self, table: str, rows: list[tuple]) -> None:
        """Insert rows as `export_rows` gives them (inside a write transaction)."""
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether this location already holds a vault (its schema)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the vault this store created (a copy that failed its checks); closes the store."""
        raise NotImplementedError

    def seal_for_move(self) -> None:
        """Make the stored file self-contained before it is moved or renamed (SQLite: fold the
        WAL into the file). UnavailableError when another process keeps that from happening."""
        raise NotImplementedError
