"""The PostgreSQL engine of the storage interface: a team's or a fleet's vault in one schema.

`--vault postgresql://[user@]host[:port]/dbname[?vault=NAME&...]` (or `postgres://`): the vault's
tables live in schema NAME (default `kms`), so one database holds several vaults. The URI is read
as libpq reads it (psycopg's `conninfo_to_dict`): every parameter but `vault`, and the `PG*`
variables, go to libpq (`sslmode=verify-full&sslrootcert=...` for TLS). A password in the URI is
refused (it would sit in argv and shell history): PGPASSWORD, ~/.pgpass or PGPASSFILE bring it.

Transactions keep SQLite's meaning. `write()` takes a transaction-scoped advisory lock on the
vault (one key per schema) before anything else, so writers from any number of machines run one
after the other, exactly as `BEGIN IMMEDIATE` makes them on a file: the audit chain stays one
chain, version numbers never collide, and no write is lost. Writers that would conflict wait for
the lock instead of failing, so there is no serialization failure to retry (the lock wait is
bounded like SQLite's busy timeout). `read()` is one REPEATABLE READ snapshot. A statement is
bounded by KMS_CLI_TIMEOUT, the connection attempt too; a server that stops or restarts during a
command ends it with exit 7, and the server rolls the open transaction back: nothing half-written.

psycopg is imported with this module, and this module only when such a URI is used.
"""

from __future__ import annotations

import re
import zlib
from time import monotonic
from typing import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg
from psycopg.conninfo import conninfo_to_dict

from kms_cli.locations import canonical
from kms_cli.errors import (AlreadyExistsError, IntegrityError, KmsError, NotFoundError, StandbyError,
                            UnavailableError, UsageError)
from kms_cli.store.base import SCHEMA_VERSION
from kms_cli.store.sql import SQLStore

SCHEMES = ("postgresql://", "postgres://")
DEFAULT_SCHEMA = "kms"
LOCK_WAIT_S = 60  # a writer waits this long for the vault's lock (SQLite's busy timeout is the same)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_USERINFO_WITH_PASSWORD = re.compile(r"[a-z]+://[^/@]*:[^/@]*@")

# The whole schema at version 5 (SQLite reaches it through store/sqlite.py's migrations 1-5):
# the same tables and columns, PostgreSQL's types (REAL is SQLite's 8-byte float: double precision).
SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE slots (
    id BIGINT PRIMARY KEY, uri TEXT NOT NULL, blob BYTEA NOT NULL, tag BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL, last_used DOUBLE PRECISION, label TEXT
);
CREATE TABLE keys (
    name TEXT PRIMARY KEY, algorithm TEXT NOT NULL, state TEXT NOT NULL, state_before TEXT, description TEXT,
    labels TEXT NOT NULL DEFAULT '{}', rotate_every BIGINT, next_rotation DOUBLE PRECISION,
    primary_version BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
    destroy_at DOUBLE PRECISION, mac BYTEA, seq BIGINT
);
CREATE TABLE key_versions (
    name TEXT NOT NULL, version BIGINT NOT NULL, state TEXT NOT NULL, material BYTEA, public BYTEA,
    fingerprint TEXT, created DOUBLE PRECISION NOT NULL, superseded DOUBLE PRECISION,
    grace_until DOUBLE PRECISION, revoked DOUBLE PRECISION, revoke_reason TEXT, destroyed DOUBLE PRECISION,
    mac BYTEA, seq BIGINT, PRIMARY KEY (name, version)
);
CREATE INDEX key_versions_fp ON key_versions (fingerprint);
CREATE TABLE secrets (
    name TEXT PRIMARY KEY, last_version BIGINT NOT NULL, deleted BIGINT NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, seq BIGINT, mac BYTEA, rotation TEXT
);
CREATE TABLE secret_versions (
    name TEXT NOT NULL, version BIGINT NOT NULL, value BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION, tags TEXT NOT NULL DEFAULT '{}', seq BIGINT, mac BYTEA, PRIMARY KEY (name, version)
);
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY, time TEXT NOT NULL, entry TEXT NOT NULL, op TEXT NOT NULL, target TEXT,
    mac TEXT NOT NULL
);
CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_target ON audit (target, seq);
CREATE INDEX audit_target_op ON audit (target, op, seq);
CREATE TABLE audit_head (id BIGINT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, mac TEXT NOT NULL,
                         seal TEXT NOT NULL);
CREATE TABLE unlock_failures (id BIGINT PRIMARY KEY CHECK (id = 1), count BIGINT NOT NULL,
                              first DOUBLE PRECISION NOT NULL, last DOUBLE PRECISION NOT NULL, slots TEXT NOT NULL);
CREATE TABLE policies (
    namespace TEXT PRIMARY KEY, rotate_every TEXT NOT NULL, grace BIGINT, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL, seq BIGINT, mac BYTEA
);
CREATE TABLE schema_version (version BIGINT NOT NULL);
"""
# MIGRATIONS[n] brings a PostgreSQL vault from version n to n+1, for n >= 5 (SCHEMA is version 5;
# `create` runs SCHEMA and then every migration, so a new vault and an upgraded one are the same).
MIGRATIONS: dict[int, str] = {
    5: """
    CREATE TABLE tokens (
        name TEXT PRIMARY KEY, hash BYTEA NOT NULL UNIQUE, ops TEXT NOT NULL, namespace TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, revoked DOUBLE PRECISION,
        last_used DOUBLE PRECISION, seq BIGINT, mac BYTEA
    );
    """,
}
SCHEMA_BASE = 5


def is_uri(location: str) -> bool:
    return location.startswith(SCHEMES)


class Location:
    """A vault URI taken apart: libpq's connection string (no `vault`), the schema, and the form
    shown to people (no credential, ever)."""

    __slots__ = ("conninfo", "schema", "shown", "params")

    def __init__(self, uri: str):
        # any "x:y@" before the path, however the rest parses (`postgresql://?:pw@/` hides it from
        # urlsplit), and the password parameters: a password in the URI, refused without echoing it
        if _USERINFO_WITH_PASSWORD.match(uri):
            raise _password_refused()
        try:
            parts = urlsplit(uri)
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise UsageError("invalid PostgreSQL vault URI", hint=_URI_FORM) from None
        if "#" in uri:  # a fragment: never meant (a '#' in a user name or password must be %23)
            raise UsageError("invalid PostgreSQL vault URI: '#' is not allowed (percent-encode it as %23)",
                             hint=_URI_FORM)
        if "@" in parts.path or "@" in parts.query:  # `//u/:pw@/`: a password slid into the path or query
            raise UsageError("invalid PostgreSQL vault URI: '@' after the host (percent-encode it as %40)",
                             hint=_URI_FORM)
        if parts.password is not None or any(k in ("password", "sslpassword") for k, _ in query):
            raise _password_refused()
        schemas = [v for k, v in query if k == "vault"]
        self.schema = schemas[-1] if schemas else DEFAULT_SCHEMA
        if not _SCHEMA_NAME.match(self.schema):
            raise UsageError(f"invalid vault name {self.schema[:63]!r} in the URI: lowercase letters, digits and _, "
                             "at most 63", hint="postgresql://host/db?vault=team_a")
        rest = [(k, v) for k, v in query if k != "vault"]
        libpq_uri = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), ""))
        try:
            self.params = conninfo_to_dict(libpq_uri)
        except psycopg.Error as exc:
            raise UsageError(f"invalid PostgreSQL vault URI: {_quoted_names_only(_first_line(exc))}",
                             hint=_URI_FORM) from None
        self.conninfo = libpq_uri
        self.shown = canonical(uri)

    def __repr__(self) -> str:
        return f"Location({self.shown!r})"


def _quoted_names_only(message: str) -> str:
    """libpq's parse error with each quoted part kept only when it is a parameter's name: it quotes
    pieces of the URI, and a malformed one can hold a password in a place no parser calls one."""
    return re.sub(r'"([^"]*)"', lambda m: m.group(0) if re.fullmatch(r"[A-Za-z_]{1,40}", m.group(1)) else '"…"',
                  message)


def _password_refused() -> UsageError:
    return UsageError("a password inside the vault URI is refused: it would sit in argv and shell history",
                      hint="put it in ~/.pgpass or the file PGPASSFILE names (or PGPASSWORD), and drop it from the URI")


_URI_FORM = "postgresql://[user@]host[:port]/dbname[?vault=NAME&sslmode=verify-full...]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _lock_key(schema: str) -> int:
    """The advisory lock of one vault (a signed 64-bit key from the schema name)."""
    return zlib.crc32(b"kms-cli vault " + schema.encode()) - (1 << 31)


class _NoAnswer(psycopg.OperationalError):
    """Nothing came back from the server within the client's own bound (see _Connection)."""


class _Connection(psycopg.Connection):
    """psycopg's connection, each wait for the server also bounded here (`bound` seconds, above
    the server's statement_timeout, which normally fires first): a server that stops answering in
    the middle of a command (hung, or cut off without a reset: its kernel still acknowledges every
    packet) ends the command with exit 7 instead of holding it forever. The connection is closed
    then (its protocol state is unknown); the server rolls back the open transaction."""

    bound: float | None = None

    def wait(self, gen, *args, **kwargs):
        if self.bound is None:
            return super().wait(gen, *args, **kwargs)
        try:
            return super().wait(_until(gen, monotonic() + self.bound), *args, **kwargs)
        except _NoAnswer:
            self.pgconn.finish()
            raise


def _until(gen, deadline: float):
    """psycopg's generator `gen`, given up at `deadline` (psycopg's wait loop resumes it with
    Ready.NONE every 0.1 s while nothing arrives, so the clock is read even when nothing does)."""
    try:
        state = next(gen)
        while True:
            ready = yield state
            if not ready and monotonic() > deadline:
                raise _NoAnswer("no answer from the server")
            state = gen.send(ready)
    except StopIteration as stop:
        return stop.value


def _bound(timeout: float) -> float:
    """The client's wait for one answer: the server's statement_timeout (`timeout`), then time for
    the server's own cancellation to arrive."""
    return timeout * 1.5 + 1


def _error(exc: psycopg.Error, shown: str, primary: str = "") -> KmsError:
    """The kms_cli error for a driver error: what happened to the server, or damage. `primary`:
    where a standby's primary is (" (host:port)"), when the standby lets us see it."""
    if isinstance(exc, _NoAnswer):
        return UnavailableError(f"the PostgreSQL vault {shown} stopped answering in the middle of the command",
                                hint="check the server and the network to it (raise KMS_CLI_TIMEOUT if it is only "
                                     "slow); the server rolls back what was not committed")
    if isinstance(exc, pg.QueryCanceled):
        return UnavailableError(f"the PostgreSQL vault {shown} did not answer in time (statement timeout)",
                                hint="raise KMS_CLI_TIMEOUT, or check the server's load; nothing was changed")
    if isinstance(exc, pg.LockNotAvailable):
        return UnavailableError(f"the vault {shown} is busy: another client held its lock too long",
                                hint="retry when the other kms-cli command has finished")
    if isinstance(exc, pg.ReadOnlySqlTransaction) or "during recovery" in str(exc).lower():
        return StandbyError(f"the vault {shown} is read-only here: the server is a standby",
                            hint=f"write through the primary server{primary}; reads work here")
    if isinstance(exc, pg.InsufficientPrivilege):
        return UnavailableError(f"permission denied on the PostgreSQL vault {shown}: {_first_line(exc)}",
                                hint="grant the role USAGE and CREATE on the database, or all on the vault's schema")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return UnavailableError(f"cannot use the PostgreSQL vault {shown}: {_first_line(exc)}",
                                hint="check that the server runs and answers; nothing was changed")
    return IntegrityError(f"the PostgreSQL vault {shown} is damaged or was edited outside kms-cli "
                          f"({_first_line(exc)})")


class _Row(dict):
    """A row as SQLite's Row behaves: by column name, by position, and dict(row)."""

    __slots__ = ("_values",)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._values[key]
        return dict.__getitem__(self, key)

    def __iter__(self):  # tuple(row) is the values, as with sqlite3.Row (dict(row) still uses keys())
        return iter(self._values)


def _row_factory(cursor):
    names = [c.name for c in cursor.description or ()]

    def make(values):
        row = _Row(zip(names, values))
        row._values = values
        return row

    return make


def _glob_regex(pattern: str) -> str:
    """SQLite's GLOB (`*`, `?`, `[...]`, `[^...]`) as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("^"):
                    body = "^" + body[1:].replace("\\", "\\\\")
                else:
                    body = body.replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


_SQL_CACHE: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    """The shared queries' `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = _SQL_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class PostgresStore(SQLStore):
    """One vault in one schema of a PostgreSQL database."""

    GREATEST = "GREATEST"
    BYTES = ' COLLATE "C"'  # names sort by their bytes, as on a file, whatever the database's collation

    def __init__(self, location: Location, conn: psycopg.Connection, timeout: float):
        self.where = location
        self.location = location.shown
        self.path = None
        self.conn = conn
        self.timeout = timeout
        self.on_begin = None
        self._lost: KmsError | None = None  # why the connection was lost: said again by the next attempt

    # -- opening -------------------------------------------------------------
    @classmethod
    def connect(cls, uri: str, timeout: float = 10.0) -> "PostgresStore":
        location = Location(uri)
        ms = max(1, int(timeout * 1000))
        extra = location.params.get("options", "")
        options = (f"{extra} -c search_path={location.schema} -c statement_timeout={ms} "
                   f"-c idle_in_transaction_session_timeout={max(ms, LOCK_WAIT_S * 1000) * 2}").strip()
        try:
            conn = _Connection.connect(location.conninfo, autocommit=True, connect_timeout=max(1, round(timeout)),
                                       application_name="kms-cli", options=options, row_factory=_row_factory)
        except psycopg.Error as exc:
            raise UnavailableError(f"cannot connect to the PostgreSQL vault {location.shown}: {_first_line(exc)}",
                                   hint="check the host, port and database, and that PGPASSFILE or ~/.pgpass "
                                        "holds the role's password; nothing was changed") from None
        conn.bound = _bound(timeout)
        return cls(location, conn, timeout)

    @classmethod
    def open(cls, uri: str, timeout: float = 10.0) -> "PostgresStore":
        store = cls.connect(uri, timeout)
        try:
            version, store.read_only = store._probe()
            if version == 0:
                raise NotFoundError(f"no vault at {store.location}", hint="create one with `kms-cli init`")
            if version > SCHEMA_VERSION:
                raise KmsError(f"the vault was written by a newer kms-cli (schema {version})", hint="upgrade kms-cli")
            if version < SCHEMA_VERSION:
                store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def create(cls, uri: str, *, force: bool = False, timeout: float = 10.0) -> "PostgresStore":
        store = cls.connect(uri, timeout)
        schema = store.where.schema
        try:
            with store.write():
                if store.schema_version() and not force:
                    raise AlreadyExistsError(f"a vault already exists at {store.location}",
                                             hint="pass --force to replace it")
                store.run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                store.run(f'CREATE SCHEMA "{schema}"')
                store._run_script(SCHEMA)
                for n in range(SCHEMA_BASE, SCHEMA_VERSION):
                    store._run_script(MIGRATIONS[n])
                store.run("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        except BaseException:
            store.close()
            raise
        return store

    def exists(self) -> bool:
        return self.schema_version() > 0

    def destroy(self) -> None:
        try:
            if self._depth == 0:
                with self.write():
                    self.run(f'DROP SCHEMA IF EXISTS "{self.where.schema}" CASCADE')
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass

    def _probe(self) -> tuple[int, bool]:
        """(schema version, standby?) in one round trip, outside any transaction (0: no vault)."""
        try:
            row = self.conn.execute("SELECT max(version), pg_is_in_recovery() FROM schema_version").fetchone()
        except (pg.UndefinedTable, pg.InvalidSchemaName):
            return 0, False
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None
        return int(row[0] or 0), bool(row[1])

    def schema_version(self) -> int:
        found = self.one("SELECT to_regclass(?) IS NOT NULL", (f"{self.where.schema}.schema_version",))
        if not found or not found[0]:
            return 0
        row = self.one("SELECT max(version) FROM schema_version")
        return int(row[0] or 0) if row else 0

    def migrate(self) -> None:
        with self.write():
            version = self.schema_version()
            for n in range(version, SCHEMA_VERSION):
                self._run_script(MIGRATIONS[n])
            self.run("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def _run_script(self, script: str) -> None:
        for stmt in script.split(";"):
            if stmt.strip():
                self.run(stmt)

    # -- transactions (the frame is SQLStore's) ------------------------------------
    def _begin_write(self) -> None:
        """Begin, then wait for the vault's lock (up to LOCK_WAIT_S), then the usual bound: one round trip."""
        ms = max(1, int(self.timeout * 1000))
        bound = getattr(self.conn, "bound", None)
        if bound is not None:
            self.conn.bound = _bound(max(self.timeout, LOCK_WAIT_S))
        try:
            self._exec_txn(f"BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE; "
                           f"SET LOCAL lock_timeout = {LOCK_WAIT_S * 1000}; "
                           f"SET LOCAL statement_timeout = {max(ms, LOCK_WAIT_S * 1000)}; "
                           f"SELECT pg_advisory_xact_lock({_lock_key(self.where.schema)}); "
                           f"SET LOCAL statement_timeout = {ms}")
        finally:
            if bound is not None:
                self.conn.bound = bound

    def _begin_read(self) -> None:
        """REPEATABLE READ, read only: a standby serves it too."""
        self._exec_txn("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _commit(self) -> None:
        try:
            self._exec_txn("COMMIT")
        except UnavailableError as exc:
            self._rollback(exc)
            if not self.conn.closed:
                raise
            # the connection went during COMMIT: the server may have committed before it went
            raise UnavailableError(f"{exc.message} (during the commit)",
                                   hint="the change may or may not have landed: `kms-cli audit log --since 10m` "
                                        "shows it once the server answers") from None
        except BaseException as exc:
            self._rollback(exc)
            raise

    def _exec_txn(self, sql: str) -> None:
        if self._lost is not None and self.conn.closed:
            # e.g. the failed command's audit entry: the cause, not psycopg's "the connection is closed"
            raise self._lost
        try:
            self.conn.execute(sql)
        except psycopg.Error as exc:
            err = _error(exc, self.location)
            if isinstance(err, StandbyError):
                err = _error(exc, self.location, self._primary())
            raise err from None

    def _primary(self) -> str:
        """ " (host:port)" of the primary this standby streams from, when the role may see it."""
        try:
            row = self.conn.execute("SELECT sender_host, sender_port FROM pg_stat_wal_receiver").fetchone()
        except psycopg.Error:
            return ""
        return f" ({row[0]}:{row[1]})" if row and row[0] else ""

    def _rollback(self, exc: BaseException | None = None) -> None:
        if self.conn.closed:
            if isinstance(exc, UnavailableError):
                self._lost = exc
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # the connection is gone: the server rolled the transaction back itself


    # -- SQL -----------------------------------------------------------------
    def one(self, sql: str, params: tuple = ()):
        try:
            return self.conn.execute(_pg_sql(sql), params).fetchone()
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None

    def all(self, sql: str, params: tuple = ()):
        try:
            return self.conn.execute(_pg_sql(sql), params).fetchall()
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None

    def run(self, sql: str, params: tuple = ()):
        try:
            return self.conn.execute(_pg_sql(sql), params)
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None

    def _batches(self, sql: str, params: tuple = (), size: int = 1000, text_errors: bool = False) -> Iterator[list]:
        """Plain tuples, `size` at a time; inside a transaction from a server-side cursor, so a
        long log or a large vault streams in bounded memory."""
        try:
            if self._depth:
                with self.conn.cursor(name="kms_batches", row_factory=psycopg.rows.tuple_row) as cur:
                    cur.itersize = size
                    cur.execute(_pg_sql(sql), params)
                    while True:
                        rows = cur.fetchmany(size)
                        if not rows:
                            return
                        yield rows
            else:
                with self.conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                    cur.execute(_pg_sql(sql), params)
                    while True:
                        rows = cur.fetchmany(size)
                        if not rows:
                            return
                        yield rows
        except psycopg.Error as exc:
            raise _error(exc, self.location) from None

    # -- dialect -------------------------------------------------------------
    def _contains(self, expr: str) -> str:
        return f"strpos({expr}, ?) > 0"

    def _glob(self, column: str) -> str:
        return f"{column} ~ ?"

    def _glob_param(self, pattern: str) -> str:
        return _glob_regex(pattern)

    def _bytes(self, column: str) -> str:
        return f"convert_to({column}, 'UTF8')"

    # -- whole-vault operations ------------------------------------------------
    def integrity_problems(self) -> list[str]:
        """PostgreSQL checks its own pages; what is left is that every table of the schema is there."""
        tables = ("meta", "slots", "keys", "key_versions", "secrets", "secret_versions", "audit", "audit_head",
                  "unlock_failures", "policies", "tokens", "schema_version")
        missing = [t for t in tables
                   if not self.one("SELECT to_regclass(?) IS NOT NULL", (f"{self.where.schema}.{t}",))[0]]
        return [f"table {t} is missing" for t in missing]

    def backup_to(self, path: str) -> int:
        """A vault file from one REPEATABLE READ snapshot of this vault (rows copied as they are)."""
        from kms_cli.store.copy import copy_rows
        from kms_cli.store.sqlite import SQLiteStore

        dst = SQLiteStore.create(path, force=True)
        try:
            with self.read():
                copy_rows(self, dst)
                head = self.audit_head()
        finally:
            dst.close()
        return head[0] if head else 0

    def seal_for_move(self) -> None:
        """Nothing to fold: a PostgreSQL vault is never moved as a file."""

    # -- the server ------------------------------------------------------------
    def server_status(self) -> dict:
        """For `health`: the server's version, whether it is a standby, and its replication lag."""
        row = self.one("SELECT current_setting('server_version'), pg_is_in_recovery(), "
                       "CASE WHEN pg_is_in_recovery() THEN "
                       "EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())) END")
        return {"server_version": row[0], "standby": bool(row[1]),
                "replication_lag_s": None if row[2] is None else float(row[2])}


def peek_vault_id(uri: str, timeout: float = 5.0) -> str | None:
    """The vault id stored at `uri`, read without unlocking (None when unreachable or not a vault)."""
    try:
        store = PostgresStore.connect(uri, timeout)
    except KmsError:
        return None
    try:
        return store.get_meta("vault_id") if store.schema_version() else None
    except KmsError:
        return None
    finally:
        store.close()
