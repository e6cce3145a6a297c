"""The SQLite engine of the storage interface (`store/base.py`): schema, migrations, transactions.

Every command's writes happen in one `BEGIN IMMEDIATE` transaction, so a crash at
any instant leaves the vault as it was before or after. WAL mode lets readers run
beside one writer; the busy timeout makes concurrent writers queue, not fail.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterator

from kms_cli.errors import AlreadyExistsError, IntegrityError, KmsError, NotFoundError, UnavailableError
from kms_cli.store.base import SCHEMA_VERSION, BadText, Store, like_prefix

BUSY_TIMEOUT_MS = 60_000
MAGIC = b"SQLite format 3\x00"

# Forward migrations: MIGRATIONS[n] brings a database from version n to n+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE slots (
        id INTEGER PRIMARY KEY,
        uri TEXT NOT NULL,
        blob BLOB NOT NULL,
        tag BLOB NOT NULL,
        created REAL NOT NULL,
        last_used REAL
    );
    CREATE TABLE keys (
        name TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL,
        state TEXT NOT NULL,
        state_before TEXT,
        description TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        rotate_every INTEGER,
        next_rotation REAL,
        primary_version INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        destroy_at REAL,
        mac BLOB
    );
    CREATE TABLE key_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        material BLOB,
        public BLOB,
        fingerprint TEXT,
        created REAL NOT NULL,
        superseded REAL,
        grace_until REAL,
        revoked REAL,
        revoke_reason TEXT,
        destroyed REAL,
        mac BLOB,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX key_versions_fp ON key_versions (fingerprint);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        last_version INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE secret_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        value BLOB NOT NULL,
        created REAL NOT NULL,
        expires REAL,
        tags TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (name, version)
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        entry TEXT NOT NULL,
        op TEXT NOT NULL,
        target TEXT,
        mac TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit (time);
    CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, mac TEXT NOT NULL, seal TEXT NOT NULL);
    CREATE TABLE unlock_failures (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL, first REAL NOT NULL, last REAL NOT NULL, slots TEXT NOT NULL);
    """,
    # 2: every state row records the audit seq of the operation that last wrote it (its MAC covers
    # it), so a log shorter than any row is detected; secret heads and versions get MACs.
    """
    ALTER TABLE keys ADD COLUMN seq INTEGER;
    ALTER TABLE key_versions ADD COLUMN seq INTEGER;
    ALTER TABLE secrets ADD COLUMN seq INTEGER;
    ALTER TABLE secrets ADD COLUMN mac BLOB;
    ALTER TABLE secret_versions ADD COLUMN seq INTEGER;
    ALTER TABLE secret_versions ADD COLUMN mac BLOB;
    CREATE INDEX audit_target ON audit (target, seq);
    """,
    # 3: "was this row changed after its seq" (rows._check_newest, on every read) looks up only the
    # ops that write, not every read of that name since (which grew with each `secret get`).
    """
    CREATE INDEX audit_target_op ON audit (target, op, seq);
    """,
    # 4: rotation policies per namespace (authenticated like key state); a secret's rotation
    # (schedule, generator, outside program) as one JSON text covered by its head's MAC.
    """
    CREATE TABLE policies (
        namespace TEXT PRIMARY KEY,
        rotate_every TEXT NOT NULL,
        grace INTEGER,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        seq INTEGER,
        mac BLOB
    );
    ALTER TABLE secrets ADD COLUMN rotation TEXT;
    """,
]


def _secure_create(path: str) -> None:
    """Create an empty file readable by its owner only, failing if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def vault_error(exc: sqlite3.Error, path: str | None, default: KmsError | None = None) -> KmsError | None:
    """The error to report for SQLite's `exc` on the vault at `path`: what really happened.

    Only SQLite's own verdict that the file is not a database or is corrupt is an integrity
    failure (exit 5). A full disk, a read-only file or file system, a file that cannot be
    opened, an I/O error or a lock held too long are exit 7: the vault is intact, the machine
    cannot serve it now. SQLite's error name says which (its extended code, Python 3.11+;
    before, its message); where it only says "I/O error" or "cannot open", the file system
    is asked (read-only mount, no free space, no write permission). Else `default`.
    """
    name = getattr(exc, "sqlite_errorname", None) or _errorname_from_message(str(exc))
    where = path or "the vault"
    if name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT"):
        return _damaged(where)
    if name == "SQLITE_FULL":
        return _no_space(where)
    if name.startswith("SQLITE_READONLY"):
        return _cause_on_disk(path) or _read_only(where, "it cannot be written")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return UnavailableError(f"the vault {where} is busy: another process held its lock too long",
                                hint="retry when the other kms-cli command has finished")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_NOMEM", "SQLITE_NOLFS")):
        cause = _cause_on_disk(path)
        if cause is not None:
            return cause
        if name.startswith("SQLITE_CANTOPEN"):
            return UnavailableError(f"cannot open the vault {where} (or the -wal and -shm files beside it)")
        if name.startswith("SQLITE_NOMEM"):
            return UnavailableError(f"out of memory while using the vault {where}")
        return UnavailableError(f"input/output error on the vault {where} ({name.lower()})",
                                hint="check the disk and its file system; the vault was not changed")
    return default


def _errorname_from_message(message: str) -> str:
    """SQLite's error name from its message, for Pythons before 3.11 (no sqlite_errorname)."""
    m = message.lower()
    for needle, name in (("not a database", "SQLITE_NOTADB"), ("malformed", "SQLITE_CORRUPT"),
                         ("disk is full", "SQLITE_FULL"), ("readonly", "SQLITE_READONLY"),
                         ("locked", "SQLITE_BUSY"), ("unable to open", "SQLITE_CANTOPEN"),
                         ("disk i/o error", "SQLITE_IOERR"), ("out of memory", "SQLITE_NOMEM")):
        if needle in m:
            return name
    return "SQLITE_ERROR"


_LOW_SPACE = 1 << 20  # with less free space than this, an I/O error that SQLite does not explain is the full disk


def _damaged(where: str) -> IntegrityError:
    return IntegrityError(f"the vault file {where} is not a kms-cli vault or is damaged")


def _no_space(where: str) -> UnavailableError:
    return UnavailableError(f"no space left on device for the vault {where}",
                            hint="free some space and retry; the vault was not changed")


def _read_only(where: str, why: str) -> UnavailableError:
    return UnavailableError(f"the vault is read-only: {where} ({why})",
                            hint="kms-cli writes the vault file and the -wal and -shm files beside it, even to read")


def _cause_on_disk(path: str | None) -> UnavailableError | None:
    """A read-only file system, no free space or no write permission where the vault lives, if so."""
    if not path:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fs = os.statvfs(directory)
    except OSError:
        fs = None
    if fs is not None:
        if fs.f_flag & os.ST_RDONLY:
            return _read_only(path, "its file system is mounted read-only")
        free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize
        if free < _LOW_SPACE:
            return _no_space(path)
    if not os.access(directory, os.W_OK):
        return _read_only(path, f"no permission to write in {directory}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return _read_only(path, "no permission to write the file")
    return None


def _connect(path: str) -> sqlite3.Connection:
    old = os.umask(0o077)  # -wal and -shm are created 0600 as well
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise vault_error(exc, path, _damaged(path)) from exc
    finally:
        os.umask(old)
    conn.row_factory = sqlite3.Row
    return conn


def _fail(exc: sqlite3.Error, path: str | None) -> KmsError:
    """The kms_cli error for a SQLite error no narrower handler took: what happened to the file, or
    damage (a table or column edited away, a constraint a vault written by kms-cli never breaks)."""
    err = vault_error(exc, path)
    if err is not None:
        return err
    return IntegrityError(f"the vault {path or ''} is damaged or was edited outside kms-cli ({exc})".replace("  ", " "))


class SQLiteStore(Store):
    """One vault file. Use `write()` for a transaction that changes rows, `read()` for a snapshot."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = self.location = path
        self.conn = conn
        self._depth = 0
        self._writing = False
        # Called at the start of every outermost transaction, inside it: the vault checks there
        # that the root key it holds is still the vault's (`master rotate` may have committed).
        self.on_begin = None

    # -- opening -------------------------------------------------------------
    @classmethod
    def create(cls, path: str, *, force: bool = False) -> "SQLiteStore":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if os.path.exists(path):
            if not force:
                raise AlreadyExistsError(f"a vault already exists at {path}", hint="pass --force to replace it")
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except FileNotFoundError:
                    pass
        _secure_create(path)
        try:
            store = cls(path, _connect(path))
            store.migrate()
        except BaseException:  # a full disk or a read-only directory: leave no empty vault behind
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(path + suffix)
                except OSError:
                    pass
            raise
        return store

    @classmethod
    def open(cls, path: str) -> "SQLiteStore":
        if not os.path.exists(path):
            raise NotFoundError(f"no vault at {path}", hint="create one with `kms-cli init`")
        if not os.access(path, os.R_OK):
            raise UnavailableError(f"the vault file {path} is not readable")
        store = cls(path, _connect(path))
        try:
            version = store.schema_version()
        except KmsError:
            store.close()
            raise
        if version == 0:
            raise IntegrityError(f"{path} is not a kms-cli vault")
        if version > SCHEMA_VERSION:
            raise KmsError(f"the vault was written by a newer kms-cli (schema {version})", hint="upgrade kms-cli")
        if version < SCHEMA_VERSION:
            store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        return self.one("PRAGMA user_version")[0]

    def migrate(self) -> None:
        with self.write():
            version = self.schema_version()
            for n in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[n].split(";"):
                    if stmt.strip():
                        self.run(stmt)
            self.run(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- transactions --------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator["SQLiteStore"]:
        """One write transaction (nested calls join the outer one; never inside a read snapshot)."""
        if self._depth:
            if not self._writing:
                raise RuntimeError("a write inside a read snapshot (take the write transaction first)")
            with self._joined():
                yield self
            return
        self._exec_txn("BEGIN IMMEDIATE")
        self._depth, self._writing = 1, True
        try:
            if self.on_begin is not None:
                self.on_begin()
            yield self
        except BaseException:
            self._depth, self._writing = 0, False
            self._rollback()
            raise
        self._depth, self._writing = 0, False
        try:
            self._exec_txn("COMMIT")
        except BaseException:
            self._rollback()  # a failed COMMIT (disk full) leaves the transaction open: end it, change nothing
            raise

    @contextmanager
    def read(self) -> Iterator["SQLiteStore"]:
        """A consistent snapshot: every read inside sees the vault as of one commit."""
        if self._depth:
            with self._joined():
                yield self
            return
        self._exec_txn("BEGIN")
        self._depth = 1
        try:
            if self.on_begin is not None:
                self.on_begin()
            yield self
        finally:
            self._depth = 0
            self._exec_txn("COMMIT")

    @contextmanager
    def _joined(self) -> Iterator["SQLiteStore"]:
        """A nested transaction: it joins the outer one (which alone commits or rolls back)."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1

    def _exec_txn(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            raise vault_error(exc, self.path, UnavailableError(f"cannot use the vault {self.path}: {exc}")) from exc

    def _rollback(self) -> None:
        """Roll back the open transaction unless SQLite already has (it may, on a full disk)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error being raised is the one to report; closing the connection rolls back

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # -- SQL (private to this engine: every driver error leaves as a kms_cli error) --
    def one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        try:
            return self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _fail(exc, self.path) from exc

    def all(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _fail(exc, self.path) from exc

    def run(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:  # a write that fails for a full disk or a read-only vault: exit 7, say so
            raise _fail(exc, self.path) from exc

    def _batches(self, sql: str, params: tuple = (), size: int = 1000, text_errors: bool = False) -> Iterator[list]:
        """Plain tuples, `size` at a time (no sqlite3.Row per row: audit logs are long)."""
        try:
            cur = self.conn.execute(sql, params)
            cur.row_factory = None
            while True:
                rows = cur.fetchmany(size)
                if not rows:
                    return
                yield rows
        except sqlite3.OperationalError as exc:
            if text_errors and "decode" in str(exc).lower():
                raise BadText("a text column is not valid UTF-8") from None
            raise _fail(exc, self.path) from exc
        except sqlite3.Error as exc:
            raise _fail(exc, self.path) from exc

    # -- meta ----------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        row = self.one("SELECT v FROM meta WHERE k = ?", (k,))
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        self.run("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (k, v))

    # -- slots ---------------------------------------------------------------
    def slots(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM slots ORDER BY id")

    def next_slot_id(self) -> int:
        return (self.one("SELECT COALESCE(MAX(id), 0) FROM slots")[0] or 0) + 1

    def insert_slot(self, slot_id: int, uri: str, blob: bytes, tag: bytes, created: float) -> None:
        self.run("INSERT INTO slots (id, uri, blob, tag, created) VALUES (?, ?, ?, ?, ?)", (slot_id, uri, blob, tag, created))

    def update_slot(self, slot_id: int, blob: bytes, tag: bytes) -> None:
        self.run("UPDATE slots SET blob = ?, tag = ? WHERE id = ?", (blob, tag, slot_id))

    def slot(self, slot_id: int) -> sqlite3.Row | None:
        return self.one("SELECT * FROM slots WHERE id = ?", (slot_id,))

    def slot_blob(self, slot_id: int) -> bytes | None:
        row = self.one("SELECT blob FROM slots WHERE id = ?", (slot_id,))
        return None if row is None else row[0]

    def touch_slot(self, slot_id: int, when: float) -> None:
        self.run("UPDATE slots SET last_used = ? WHERE id = ?", (when, slot_id))

    def remove_slot(self, slot_id: int) -> None:
        self.run("DELETE FROM slots WHERE id = ?", (slot_id,))

    # -- keys ----------------------------------------------------------------
    def key(self, name: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM keys WHERE name = ?", (name,))

    def keys(self, under: str = "") -> list[sqlite3.Row]:
        return self.all("SELECT * FROM keys WHERE name LIKE ? ESCAPE '\\' ORDER BY name", (like_prefix(under),))

    def insert_key(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO keys ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update_key(self, name: str, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE keys SET {sets} WHERE name = ?", (*changes.values(), name))

    def key_version(self, name: str, version: int) -> sqlite3.Row | None:
        return self.one("SELECT * FROM key_versions WHERE name = ? AND version = ?", (name, version))

    def key_versions(self, name: str) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM key_versions WHERE name = ? ORDER BY version", (name,))

    def key_versions_by_fingerprint(self, fingerprint: str) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM key_versions WHERE fingerprint = ? ORDER BY name, version", (fingerprint,))

    def insert_key_version(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO key_versions ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update_key_version(self, name: str, version: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE key_versions SET {sets} WHERE name = ? AND version = ?", (*changes.values(), name, version))

    def all_key_versions(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM key_versions ORDER BY name, version")

    # -- secrets -------------------------------------------------------------
    def secret(self, name: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM secrets WHERE name = ?", (name,))

    def secrets(self, under: str = "") -> list[sqlite3.Row]:
        return self.all(
            "SELECT * FROM secrets WHERE deleted = 0 AND name LIKE ? ESCAPE '\\' ORDER BY name", (like_prefix(under),)
        )

    def put_secret_head(self, name: str, last_version: int, deleted: bool, created: float, updated: float,
                        seq: int, mac: bytes, rotation: str | None = None) -> None:
        self.run(
            "INSERT INTO secrets (name, last_version, deleted, created, updated, seq, mac, rotation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version, deleted = excluded.deleted, "
            "updated = excluded.updated, seq = excluded.seq, mac = excluded.mac, rotation = excluded.rotation",
            (name, last_version, int(deleted), created, updated, seq, mac, rotation),
        )

    # -- policies ------------------------------------------------------------
    def policy(self, namespace: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM policies WHERE namespace = ?", (namespace,))

    def policies(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM policies ORDER BY namespace")

    def put_policy(self, namespace: str, rotate_every: str, grace: int | None, created: float, updated: float,
                   seq: int, mac: bytes) -> None:
        self.run("INSERT INTO policies (namespace, rotate_every, grace, created, updated, seq, mac) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET rotate_every = "
                 "excluded.rotate_every, grace = excluded.grace, updated = excluded.updated, seq = excluded.seq, "
                 "mac = excluded.mac", (namespace, rotate_every, grace, created, updated, seq, mac))

    def delete_policy(self, namespace: str) -> None:
        self.run("DELETE FROM policies WHERE namespace = ?", (namespace,))

    def all_secrets(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM secrets ORDER BY name")

    def insert_secret_version(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO secret_versions ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def secret_version(self, name: str, version: int) -> sqlite3.Row | None:
        return self.one("SELECT * FROM secret_versions WHERE name = ? AND version = ?", (name, version))

    def secret_versions(self, name: str) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM secret_versions WHERE name = ? ORDER BY version", (name,))

    def all_secret_versions(self) -> list[sqlite3.Row]:
        return self.all("SELECT * FROM secret_versions ORDER BY name, version")

    def update_secret_version(self, name: str, version: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE secret_versions SET {sets} WHERE name = ? AND version = ?", (*changes.values(), name, version))

    def delete_secret_versions(self, name: str) -> None:
        """Remove every version of a secret (its head stays as a tombstone: version numbers never repeat)."""
        self.run("DELETE FROM secret_versions WHERE name = ?", (name,))

    def max_secret_version(self, name: str) -> int:
        return self.one("SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE name = ?", (name,))[0]

    # -- failed unlocks (outside the chain until the next unlock) -----------
    def unlock_failures(self) -> sqlite3.Row | None:
        return self.one("SELECT count, first, last, slots FROM unlock_failures WHERE id = 1")

    def add_unlock_failure(self, when: float, slots: list[int]) -> None:
        import json

        row = self.one("SELECT slots FROM unlock_failures WHERE id = 1")
        if row:
            merged = sorted(set(json.loads(row["slots"])) | set(slots))
            self.run("UPDATE unlock_failures SET count = count + 1, last = ?, slots = ? WHERE id = 1",
                     (when, json.dumps(merged)))
        else:
            self.run("INSERT INTO unlock_failures (id, count, first, last, slots) VALUES (1, 1, ?, ?, ?)",
                     (when, when, json.dumps(slots)))

    def clear_unlock_failures(self) -> None:
        self.run("DELETE FROM unlock_failures WHERE id = 1")

    def housekeeping_due(self, now: float) -> bool:
        return bool(self.one(
            "SELECT EXISTS (SELECT 1 FROM unlock_failures) "
            "OR EXISTS (SELECT 1 FROM keys WHERE state = 'destroy-scheduled' AND destroy_at <= ?)", (now,))[0])

    # -- state binding -------------------------------------------------------
    def max_row_seq(self) -> int:
        """The highest audit seq any state row records (0 when none does)."""
        return self.one(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM keys), 0), COALESCE((SELECT MAX(seq) FROM key_versions), 0), "
            "COALESCE((SELECT MAX(seq) FROM secrets), 0), COALESCE((SELECT MAX(seq) FROM secret_versions), 0), "
            "COALESCE((SELECT MAX(seq) FROM policies), 0), "
            "COALESCE((SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'slots_seq'), 0))")[0]

    def written_since(self, target: str, seq: int, ops: tuple[str, ...]) -> int | None:
        """The first successful entry after `seq` that changed `target` (one of `ops`), if any."""
        # MIN over (target, op, seq): one range per op in audit_target_op, not every entry of the name
        row = self.one(f"SELECT MIN(seq) FROM audit WHERE target = ? AND op IN ({', '.join('?' * len(ops))}) "
                       "AND seq > ? AND instr(entry, '\"result\":\"ok\"') > 0", (target, *ops, seq))
        return None if row is None else row[0]

    def keys_due_for_destruction(self, now: float) -> list[str]:
        return [r[0] for r in self.all("SELECT name FROM keys WHERE state = 'destroy-scheduled' AND destroy_at <= ?",
                                       (now,))]

    # -- the audit log ---------------------------------------------------------
    def audit_head(self) -> tuple[Any, bytes, bytes] | None:
        row = self.one("SELECT seq, CAST(mac AS BLOB), CAST(seal AS BLOB) FROM audit_head WHERE id = 1")
        return None if row is None else (row[0], row[1], row[2])

    def put_audit_head(self, seq: int, mac: str, seal: str) -> None:
        self.run("INSERT INTO audit_head (id, seq, mac, seal) VALUES (1, ?, ?, ?) "
                 "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, seal = excluded.seal",
                 (seq, mac, seal))

    def max_audit_seq(self) -> int:
        return self.one("SELECT COALESCE(MAX(seq), 0) FROM audit")[0]

    def audit_count(self) -> int:
        return self.one("SELECT COUNT(*) FROM audit")[0]

    def insert_audit(self, seq: int, time: str, entry: str, op: str, target: str | None, mac: str) -> None:
        self.run("INSERT INTO audit (seq, time, entry, op, target, mac) VALUES (?, ?, ?, ?, ?, ?)",
                 (seq, time, entry, op, target, mac))

    def audit_batches(self, raw: bool = False, size: int = 20_000) -> Iterator[list[tuple]]:
        if not raw:
            yield from self._batches("SELECT seq, entry, mac, op, target, time FROM audit ORDER BY seq", (), size,
                                     text_errors=True)
            return
        for rows in self._batches("SELECT seq, CAST(entry AS BLOB), CAST(mac AS BLOB), CAST(op AS BLOB), "
                                  "CAST(target AS BLOB), CAST(time AS BLOB) FROM audit ORDER BY seq", (), size):
            yield [(r[0], *(None if v is None else bytes(v).decode("utf-8", "replace") for v in r[1:]))
                   for r in rows]

    def audit_rows_containing(self, needle: str) -> list[tuple[int, str, str]]:
        return [tuple(r) for r in self.all("SELECT seq, entry, mac FROM audit WHERE instr(entry, ?) > 0", (needle,))]

    def audit_query(self, *, after: int = 0, upto: int | None = None, since: str | None = None,
                    op: str | None = None, target: str | None = None) -> Iterator[tuple[int, str, str, Any]]:
        sql = "SELECT seq, entry, mac, target FROM audit WHERE seq > ?"
        params: list = [after]
        if upto is not None:
            sql += " AND seq <= ?"
            params.append(upto)
        if since:
            sql += " AND time >= ?"
            params.append(since)
        if op:
            sql += " AND op GLOB ?"
            params.append(op)
        if target:
            sql += " AND (target = ? OR instr(',' || target || ',', ',' || ? || ',') > 0)"
            params += [target, target]
        for rows in self._batches(sql + " ORDER BY seq", tuple(params)):
            yield from rows

    def audit_prunable(self, before: str, keep_op: str) -> tuple[int, int, int, str] | None:
        last = self.one("SELECT MAX(seq) FROM audit WHERE time < ? AND op != ?", (before, keep_op))[0]
        if last is None:
            return None
        count, first = self.one("SELECT COUNT(*), MIN(seq) FROM audit WHERE seq <= ? AND op != ?", (last, keep_op))
        mac = self.one("SELECT mac FROM audit WHERE seq = ?", (last,))[0]
        return last, count, first, mac

    def delete_audit_upto(self, seq: int) -> None:
        self.run("DELETE FROM audit WHERE seq <= ?", (seq,))

    def rewrite_audit(self, updates: list[tuple[str, str, int]]) -> None:
        try:
            self.conn.executemany("UPDATE audit SET entry = ?, mac = ? WHERE seq = ?", updates)
        except sqlite3.Error as exc:
            raise _fail(exc, self.path) from exc

    # -- whole-vault operations --------------------------------------------------
    def integrity_problems(self) -> list[str]:
        problems = [r[0] for r in self.all("PRAGMA integrity_check(20)")]
        return [] if problems == ["ok"] else problems

    def backup_to(self, path: str) -> int:
        """SQLite's online backup API in one step: one read snapshot, consistent beside writers."""
        try:
            dst = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise UnavailableError(f"the backup could not be written: {exc}") from exc
        try:
            try:
                self.conn.backup(dst)
                row = dst.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
            except sqlite3.Error as exc:
                raise UnavailableError(f"the backup could not be written: {exc}") from exc
        finally:
            dst.close()
        try:
            os.unlink(path + "-journal")
        except FileNotFoundError:
            pass
        return row[0] if row else 0

    def seal_for_move(self) -> None:
        busy = self.one("PRAGMA wal_checkpoint(TRUNCATE)")[0]
        if busy:
            raise UnavailableError("could not fold the vault's write-ahead log into it (another process has it open)")



def checkpoint_file(path: str) -> bool | None:
    """Fold the WAL of the vault file at `path` into it: True when done, False when another
    process keeps it open, None when the file is not a readable database (moved as it is)."""
    try:
        conn = sqlite3.connect(path, timeout=2, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return not busy


def peek_vault_id(path: str) -> str | None:
    """The vault id stored in the file at `path`, read without unlocking (None if unreadable)."""
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            row = conn.execute("SELECT v FROM meta WHERE k = 'vault_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


class Probe:
    """What a vault file is, found without unlocking it (for `health`)."""

    __slots__ = ("size", "mode", "is_database", "version", "error", "problems")

    def __init__(self):
        self.size = self.mode = self.version = self.error = None
        self.is_database = False
        self.problems: list[str] = []


def probe(path: str) -> Probe:
    """Size and mode, whether it is a SQLite database, its schema version (or the error reading it:
    `error`, exit 7 for an unusable file, 5 for damage) and SQLite's integrity_check findings.
    Raises OSError when the file cannot be stat'ed or read."""
    p = Probe()
    st = os.stat(path)
    with open(path, "rb") as f:
        header = f.read(16)
    p.size, p.mode = st.st_size, st.st_mode & 0o777
    if header != MAGIC:
        return p
    p.is_database = True
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        p.error = IntegrityError(f"cannot open the database: {exc}")
        return p
    try:
        try:
            p.version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            err = vault_error(exc, path)
            p.error = err if err is not None and err.exit_code != 5 else IntegrityError(
                f"not a readable database: {exc}")
            return p
        if p.version and p.version <= SCHEMA_VERSION:
            try:
                problems = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
            except sqlite3.DatabaseError as exc:
                problems = [str(exc)]
            p.problems = [] if problems == ["ok"] else problems
        return p
    finally:
        conn.close()
