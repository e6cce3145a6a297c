"""The SQL both engines share: every row method of the storage interface, written once.

`SQLStore` holds the queries over the common schema (`store/base.py`); an engine subclass gives
the connection (`one`, `all`, `run`, `run_many`, `_batches`, with `?` placeholders and every driver
error turned into a kms_cli error), its transactions and migrations, and the few spellings where
the dialects differ (`_contains`, `_glob`, `_bytes`, `GREATEST`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kms_cli.store.base import COLUMNS, ORDER_BY, Row, Store


class SQLStore(Store):
    """The shared queries; see the module docstring for what an engine supplies."""

    GREATEST = "MAX"  # the scalar maximum of several values (SQLite's MAX(a, b), PostgreSQL's GREATEST)
    # after a text column in ORDER BY: its bytes decide, as SQLite's BINARY collation does on every
    # text (PostgreSQL's ' COLLATE "C"': a database's own collation, en_US say, sorts otherwise)
    BYTES = ""

    # -- transactions: the frame both engines share --------------------------------------------
    # An engine gives _begin_write (serializing writers), _begin_read (one snapshot), _commit, and
    # _rollback(exc) (which must not raise: the error being raised is the one to report).
    _depth = 0
    _writing = False

    @contextmanager
    def write(self) -> Iterator["SQLStore"]:
        """One write transaction (nested calls join the outer one; never inside a read snapshot)."""
        if self._depth:
            if not self._writing:
                raise RuntimeError("a write inside a read snapshot (take the write transaction first)")
            with self._joined():
                yield self
            return
        self._begin_write()
        self._depth, self._writing = 1, True
        try:
            if self.on_begin is not None:
                self.on_begin()
            yield self
        except BaseException as exc:
            self._depth, self._writing = 0, False
            self._rollback(exc)
            raise
        self._depth, self._writing = 0, False
        self._commit()

    @contextmanager
    def read(self) -> Iterator["SQLStore"]:
        """A consistent snapshot: every read inside sees the vault as of one commit."""
        if self._depth:
            with self._joined():
                yield self
            return
        self._begin_read()
        self._depth = 1
        try:
            if self.on_begin is not None:
                self.on_begin()
            yield self
        except BaseException as exc:
            self._depth = 0
            self._rollback(exc)
            raise
        self._depth = 0
        self._commit()

    @contextmanager
    def _joined(self) -> Iterator["SQLStore"]:
        """A nested transaction: it joins the outer one (which alone commits or rolls back)."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def _begin_write(self) -> None:
        raise NotImplementedError

    def _begin_read(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self, exc: BaseException | None = None) -> None:
        raise NotImplementedError

    # -- the engine's part ------------------------------------------------------------------
    def one(self, sql: str, params: tuple = ()) -> Row | None:
        raise NotImplementedError

    def all(self, sql: str, params: tuple = ()) -> list[Row]:
        raise NotImplementedError

    def run(self, sql: str, params: tuple = ()) -> Any:
        raise NotImplementedError

    def run_many(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _batches(self, sql: str, params: tuple = (), size: int = 1000, text_errors: bool = False) -> Iterator[list]:
        raise NotImplementedError

    _savepoints = 0

    @contextmanager
    def savepoint(self) -> Iterator["SQLStore"]:
        if not self.in_transaction:
            raise RuntimeError("a savepoint outside a write transaction")
        self._savepoints += 1
        name = f"kms_sp{self._savepoints}"
        self.run(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            try:
                self.run(f"ROLLBACK TO SAVEPOINT {name}")
                self.run(f"RELEASE SAVEPOINT {name}")
            except Exception:  # noqa: BLE001 - the connection is gone: the error being raised says so
                pass
            raise
        self.run(f"RELEASE SAVEPOINT {name}")

    def _contains(self, expr: str) -> str:
        """A condition: the text `expr` contains the next parameter."""
        return f"instr({expr}, ?) > 0"

    def _glob(self, column: str) -> str:
        """A condition: `column` matches the next parameter, a glob (`*`, `?`, `[...]`)."""
        return f"{column} GLOB ?"

    def _glob_param(self, pattern: str) -> str:
        return pattern

    @staticmethod
    def _under(under: str) -> tuple[str, tuple]:
        """A condition and its parameters: `name` is inside the namespace `under` ("" = every name).
        Its bytes compared as they are: SQLite's LIKE ignores ASCII case, and `app` is not `APP`."""
        if not under:
            return "1 = 1", ()
        prefix = under + "/"
        return "substr(name, 1, length(?)) = ?", (prefix, prefix)

    def _bytes(self, column: str) -> str:
        """A text column's stored bytes, whatever they are (verification names damage)."""
        return f"CAST({column} AS BLOB)"

    # -- meta ----------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        row = self.one("SELECT v FROM meta WHERE k = ?", (k,))
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        self.run("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (k, v))

    # -- slots ---------------------------------------------------------------
    def slots(self) -> list[Row]:
        return self.all("SELECT * FROM slots ORDER BY id")

    def next_slot_id(self) -> int:
        return (self.one("SELECT COALESCE(MAX(id), 0) FROM slots")[0] or 0) + 1

    def insert_slot(self, slot_id: int, uri: str, blob: bytes, tag: bytes, created: float,
                    label: str | None = None) -> None:
        self.run("INSERT INTO slots (id, uri, blob, tag, created, label) VALUES (?, ?, ?, ?, ?, ?)",
                 (slot_id, uri, blob, tag, created, label))

    def update_slot(self, slot_id: int, blob: bytes, tag: bytes) -> None:
        self.run("UPDATE slots SET blob = ?, tag = ? WHERE id = ?", (blob, tag, slot_id))

    def slot(self, slot_id: int) -> Row | None:
        return self.one("SELECT * FROM slots WHERE id = ?", (slot_id,))

    def slot_blob(self, slot_id: int) -> bytes | None:
        row = self.one("SELECT blob FROM slots WHERE id = ?", (slot_id,))
        return None if row is None else row[0]

    def touch_slot(self, slot_id: int, when: float) -> None:
        self.run("UPDATE slots SET last_used = ? WHERE id = ?", (when, slot_id))

    def remove_slot(self, slot_id: int) -> None:
        self.run("DELETE FROM slots WHERE id = ?", (slot_id,))

    # -- keys ----------------------------------------------------------------
    def key(self, name: str) -> Row | None:
        return self.one("SELECT * FROM keys WHERE name = ?", (name,))

    def keys(self, under: str = "") -> list[Row]:
        cond, params = self._under(under)
        return self.all(f"SELECT * FROM keys WHERE {cond} ORDER BY name{self.BYTES}", params)

    def insert_key(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO keys ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update_key(self, name: str, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE keys SET {sets} WHERE name = ?", (*changes.values(), name))

    def key_version(self, name: str, version: int) -> Row | None:
        return self.one("SELECT * FROM key_versions WHERE name = ? AND version = ?", (name, version))

    def key_versions(self, name: str) -> list[Row]:
        return self.all("SELECT * FROM key_versions WHERE name = ? ORDER BY version", (name,))

    def key_versions_by_fingerprint(self, fingerprint: str) -> list[Row]:
        return self.all(f"SELECT * FROM key_versions WHERE fingerprint = ? ORDER BY name{self.BYTES}, version",
                        (fingerprint,))

    def insert_key_version(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO key_versions ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update_key_version(self, name: str, version: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE key_versions SET {sets} WHERE name = ? AND version = ?", (*changes.values(), name, version))

    def all_key_versions(self) -> list[Row]:
        return self.all(f"SELECT * FROM key_versions ORDER BY name{self.BYTES}, version")

    # -- secrets -------------------------------------------------------------
    def secret(self, name: str) -> Row | None:
        return self.one("SELECT * FROM secrets WHERE name = ?", (name,))

    def secrets(self, under: str = "") -> list[Row]:
        cond, params = self._under(under)
        return self.all(f"SELECT * FROM secrets WHERE deleted = 0 AND {cond} ORDER BY name{self.BYTES}", params)

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
    def policy(self, namespace: str) -> Row | None:
        return self.one("SELECT * FROM policies WHERE namespace = ?", (namespace,))

    def policies(self) -> list[Row]:
        return self.all(f"SELECT * FROM policies ORDER BY namespace{self.BYTES}")

    def put_policy(self, namespace: str, rotate_every: str, grace: int | None, created: float, updated: float,
                   seq: int, mac: bytes) -> None:
        self.run("INSERT INTO policies (namespace, rotate_every, grace, created, updated, seq, mac) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET rotate_every = "
                 "excluded.rotate_every, grace = excluded.grace, updated = excluded.updated, seq = excluded.seq, "
                 "mac = excluded.mac", (namespace, rotate_every, grace, created, updated, seq, mac))

    def delete_policy(self, namespace: str) -> None:
        self.run("DELETE FROM policies WHERE namespace = ?", (namespace,))

    def all_secrets(self) -> list[Row]:
        return self.all(f"SELECT * FROM secrets ORDER BY name{self.BYTES}")

    def insert_secret_version(self, **row: Any) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO secret_versions ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def secret_version(self, name: str, version: int) -> Row | None:
        return self.one("SELECT * FROM secret_versions WHERE name = ? AND version = ?", (name, version))

    def secret_versions(self, name: str) -> list[Row]:
        return self.all("SELECT * FROM secret_versions WHERE name = ? ORDER BY version", (name,))

    def all_secret_versions(self) -> list[Row]:
        return self.all(f"SELECT * FROM secret_versions ORDER BY name{self.BYTES}, version")

    def update_secret_version(self, name: str, version: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        self.run(f"UPDATE secret_versions SET {sets} WHERE name = ? AND version = ?", (*changes.values(), name, version))

    def delete_secret_versions(self, name: str) -> None:
        """Remove every version of a secret (its head stays as a tombstone: version numbers never repeat)."""
        self.run("DELETE FROM secret_versions WHERE name = ?", (name,))

    def max_secret_version(self, name: str) -> int:
        return self.one("SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE name = ?", (name,))[0]

    # -- API tokens ----------------------------------------------------------
    def token(self, name: str) -> Row | None:
        return self.one("SELECT * FROM tokens WHERE name = ?", (name,))

    def token_by_hash(self, digest: bytes) -> Row | None:
        return self.one("SELECT * FROM tokens WHERE hash = ?", (digest,))

    def tokens(self) -> list[Row]:
        return self.all(f"SELECT * FROM tokens ORDER BY name{self.BYTES}")

    def put_token(self, **row: Any) -> None:
        cols = ("name", "hash", "ops", "namespace", "created", "expires", "revoked", "seq", "mac")
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        self.run(f"INSERT INTO tokens ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                 f"ON CONFLICT (name) DO UPDATE SET {updates}", tuple(row[c] for c in cols))

    def touch_token(self, name: str, when: float) -> None:
        self.run("UPDATE tokens SET last_used = ? WHERE name = ?", (when, name))

    # -- failed unlocks (outside the chain until the next unlock) -----------
    def unlock_failures(self) -> Row | None:
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
            f"SELECT {self.GREATEST}(COALESCE((SELECT MAX(seq) FROM keys), 0), COALESCE((SELECT MAX(seq) FROM key_versions), 0), "
            "COALESCE((SELECT MAX(seq) FROM secrets), 0), COALESCE((SELECT MAX(seq) FROM secret_versions), 0), "
            "COALESCE((SELECT MAX(seq) FROM policies), 0), COALESCE((SELECT MAX(seq) FROM tokens), 0), "
            "COALESCE((SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'slots_seq'), 0))")[0]

    def written_since(self, target: str, seq: int, ops: tuple[str, ...]) -> int | None:
        """The first successful entry after `seq` that changed `target` (one of `ops`), if any."""
        # MIN over (target, op, seq): one range per op in audit_target_op, not every entry of the name
        row = self.one(f"SELECT MIN(seq) FROM audit WHERE target = ? AND op IN ({', '.join('?' * len(ops))}) "
                       f"AND seq > ? AND {self._contains('entry')}", (target, *ops, seq, '"result":"ok"'))
        return None if row is None else row[0]

    def keys_due_for_destruction(self, now: float) -> list[str]:
        return [r[0] for r in self.all("SELECT name FROM keys WHERE state = 'destroy-scheduled' AND destroy_at <= ?",
                                       (now,))]

    # -- the audit log ---------------------------------------------------------
    def audit_head(self) -> tuple[Any, bytes, bytes] | None:
        row = self.one(f"SELECT seq, {self._bytes('mac')}, {self._bytes('seal')} FROM audit_head WHERE id = 1")
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
        cols = ", ".join(self._bytes(c) for c in ("entry", "mac", "op", "target", "time"))
        for rows in self._batches(f"SELECT seq, {cols} FROM audit ORDER BY seq", (), size):
            yield [(r[0], *(None if v is None else bytes(v).decode("utf-8", "replace") for v in r[1:]))
                   for r in rows]

    def audit_rows_containing(self, needle: str) -> list[tuple[int, str, str]]:
        return [tuple(r) for r in self.all(f"SELECT seq, entry, mac FROM audit WHERE {self._contains('entry')}",
                                           (needle,))]

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
            sql += f" AND {self._glob('op')}"
            params.append(self._glob_param(op))
        if target:
            listed = self._contains("',' || target || ','")  # target names it in a comma list
            sql += f" AND (target = ? OR {listed})"
            params += [target, f",{target},"]
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
        self.run_many("UPDATE audit SET entry = ?, mac = ? WHERE seq = ?", updates)

    # -- whole-vault copies ------------------------------------------------------------------
    def export_rows(self, table: str, size: int = 1000) -> Iterator[list[tuple]]:
        cols = ", ".join(COLUMNS[table])
        yield from self._batches(f"SELECT {cols} FROM {table} ORDER BY {ORDER_BY[table]}", (), size)

    def import_rows(self, table: str, rows: list[tuple]) -> None:
        cols = COLUMNS[table]
        self.run_many(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      [tuple(r) for r in rows])
