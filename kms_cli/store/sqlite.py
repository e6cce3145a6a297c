"""The SQLite engine of the storage interface (`store/base.py`): schema, migrations, transactions.

Every command's writes happen in one `BEGIN IMMEDIATE` transaction, so a crash at
any instant leaves the vault as it was before or after. WAL mode lets readers run
beside one writer; the busy timeout makes concurrent writers queue, not fail.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Iterator

from kms_cli.errors import AlreadyExistsError, IntegrityError, KmsError, NotFoundError, UnavailableError
from kms_cli.store.base import SCHEMA_VERSION, BadText
from kms_cli.store.sql import SQLStore

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
    # 5: a label per slot (who or what holds it: `master add --label`), covered by the slot-set MAC.
    """
    ALTER TABLE slots ADD COLUMN label TEXT;
    """,
    # 6: API tokens for `serve` (a keyed hash of each, never the token), authenticated like key state.
    """
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        ops TEXT NOT NULL,
        namespace TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL,
        revoked REAL,
        last_used REAL,
        seq INTEGER,
        mac BLOB
    );
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


class SQLiteStore(SQLStore):
    """One vault file. Use `write()` for a transaction that changes rows, `read()` for a snapshot."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = self.location = path
        self.conn = conn
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

    # -- transactions (the frame is SQLStore's) ------------------------------------
    def _begin_write(self) -> None:
        self._exec_txn("BEGIN IMMEDIATE")

    def _begin_read(self) -> None:
        self._exec_txn("BEGIN")

    def _commit(self) -> None:
        try:
            self._exec_txn("COMMIT")
        except BaseException as exc:
            self._rollback(exc)  # a failed COMMIT (disk full) leaves the transaction open: end it, change nothing
            raise

    def _exec_txn(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            raise vault_error(exc, self.path, UnavailableError(f"cannot use the vault {self.path}: {exc}")) from exc

    def _rollback(self, exc: BaseException | None = None) -> None:
        """Roll back the open transaction unless SQLite already has (it may, on a full disk)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error being raised is the one to report; closing the connection rolls back

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

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
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

    def exists(self) -> bool:
        return self.schema_version() > 0

    def destroy(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass

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
