"""The storage contract (`kms_cli/store/base.py`), once for every engine.

Like keyring's backend tests: `StoreContract` says what any store must do; an engine's test class
only says how to make an empty one. A second engine (PostgreSQL) subclasses it and gets every test.
"""

from __future__ import annotations

import inspect
import threading

import pytest

from kms_cli.errors import IntegrityError
from kms_cli.store import SCHEMA_VERSION, BadText, Store
from kms_cli.store.sqlite import SQLiteStore

KEY_ROW = dict(name="app/k", algorithm="aes-256-gcm", state="enabled", labels="{}", primary_version=1,
               created=1.0, updated=1.0, seq=1, mac=b"m")
KEY_VERSION = dict(name="app/k", version=1, state="enabled", material=b"sealed", public=None, fingerprint="fp1",
                   created=1.0, seq=1, mac=b"m")


class StoreContract:
    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError

    # -- the interface is complete ---------------------------------------------------
    def test_implements_every_method(self, store):
        for name, member in inspect.getmembers(Store):
            if name.startswith("_") or not callable(member):
                continue
            assert getattr(type(store), name) is not member, f"{type(store).__name__} does not implement {name}"

    def test_schema_is_current(self, store):
        assert store.schema_version() == SCHEMA_VERSION

    # -- transactions ------------------------------------------------------------------
    def test_write_commits_or_rolls_back_whole(self, store):
        with pytest.raises(RuntimeError):
            with store.write():
                store.set_meta("a", "1")
                store.insert_key(**KEY_ROW)
                raise RuntimeError("crash")
        assert store.get_meta("a") is None and store.key("app/k") is None
        with store.write():
            with store.write():  # nested joins the outer one
                store.set_meta("a", "2")
        assert store.get_meta("a") == "2"

    def test_write_inside_read_is_refused(self, store):
        with store.read():
            with pytest.raises(RuntimeError):
                with store.write():
                    pass

    def test_on_begin_runs_once_per_outermost_transaction(self, store):
        calls = []
        store.on_begin = lambda: calls.append(store.in_transaction)
        with store.write():
            with store.write():
                pass
        with store.read():
            with store.read():
                pass
        assert calls == [True, True]

    def test_on_begin_failure_rolls_back(self, store):
        def refuse():
            raise IntegrityError("root key changed")

        store.on_begin = refuse
        with pytest.raises(IntegrityError):
            with store.write():
                store.set_meta("x", "1")
        store.on_begin = None
        assert store.get_meta("x") is None

    # -- rows --------------------------------------------------------------------------
    def test_slots(self, store):
        with store.write():
            assert store.next_slot_id() == 1
            store.insert_slot(1, "env:A", b"blob", b"tag", 5.0)
            store.insert_slot(2, "env:B", b"blob2", b"tag2", 6.0)
            store.update_slot(2, b"blob3", b"tag3")
            store.touch_slot(1, 9.0)
            store.remove_slot(1)
        assert [dict(r)["id"] for r in store.slots()] == [2]
        assert store.slot_blob(2) == b"blob3" and store.slot_blob(1) is None
        assert dict(store.slot(2))["tag"] == b"tag3" and store.next_slot_id() == 3

    def test_keys_by_namespace_with_wildcards_taken_literally(self, store):
        with store.write():
            for name in ("a_b/k", "axb/k", "a_b", "other/k", "a%/k"):
                store.insert_key(**{**KEY_ROW, "name": name})
        assert [r["name"] for r in store.keys("a_b")] == ["a_b/k"]
        assert [r["name"] for r in store.keys("a%")] == ["a%/k"]
        assert len(store.keys()) == 5

    def test_namespaces_by_exact_bytes_and_lists_in_byte_order(self, store):
        """`app` is not `APP` (SQLite's LIKE ignores ASCII case), and every list sorts by bytes,
        whatever the database's collation (the PostgreSQL test database's is ICU en-US)."""
        names = ["b", "APP/x", "a_b", "Z", "app/y", "a-b", "aB", "A"]
        with store.write():
            for name in names:
                store.insert_key(**{**KEY_ROW, "name": name})
                store.put_secret_head(name, 1, False, 0.0, 0.0, 1, b"mac")
                store.put_policy(name, "{}", None, 0.0, 0.0, 1, b"mac")
        assert [r["name"] for r in store.keys("app")] == ["app/y"]
        assert [r["name"] for r in store.secrets("APP")] == ["APP/x"]
        want = sorted(names)  # code points: the bytes of UTF-8
        assert [r["name"] for r in store.keys()] == want == [r["name"] for r in store.secrets()]
        assert [r["name"] for r in store.all_secrets()] == want
        assert [r["namespace"] for r in store.policies()] == want

    def test_key_versions(self, store):
        with store.write():
            store.insert_key(**KEY_ROW)
            store.insert_key_version(**KEY_VERSION)
            store.insert_key_version(**{**KEY_VERSION, "version": 2, "fingerprint": "fp2"})
            store.update_key_version("app/k", 1, state="revoked", revoked=3.0)
            store.update_key("app/k", primary_version=2, state="destroy-scheduled", destroy_at=4.0)
        assert [v["version"] for v in store.key_versions("app/k")] == [1, 2]
        assert store.key_version("app/k", 1)["state"] == "revoked"
        assert bytes(store.key_version("app/k", 2)["material"]) == b"sealed"
        assert [v["version"] for v in store.key_versions_by_fingerprint("fp2")] == [2]
        assert len(store.all_key_versions()) == 2
        assert store.keys_due_for_destruction(3.9) == [] and store.keys_due_for_destruction(4.0) == ["app/k"]
        assert store.housekeeping_due(4.0) and not store.housekeeping_due(3.0)

    def test_secrets_tombstones_keep_their_numbers(self, store):
        with store.write():
            store.insert_secret_version(name="s", version=1, value=b"x", created=0.0, tags="{}", seq=1, mac=b"m")
            store.insert_secret_version(name="s", version=2, value=b"y", created=0.0, tags="{}", seq=2, mac=b"m")
            store.put_secret_head("s", 2, False, 0.0, 0.0, 2, b"mac")
            store.update_secret_version("s", 2, expires=7.0)
        assert store.secret_version("s", 2)["expires"] == 7.0 and store.max_secret_version("s") == 2
        assert [r["name"] for r in store.secrets()] == ["s"]
        with store.write():
            store.delete_secret_versions("s")
            store.put_secret_head("s", 2, True, 0.0, 1.0, 3, b"mac")
        assert store.secrets() == [] and store.secret_versions("s") == []
        assert store.secret("s")["last_version"] == 2 and len(store.all_secrets()) == 1

    def test_unlock_failures(self, store):
        with store.write():
            store.add_unlock_failure(1.0, [1])
            store.add_unlock_failure(2.0, [2, 1])
        row = store.unlock_failures()
        assert (row["count"], row["first"], row["last"]) == (2, 1.0, 2.0)
        assert store.housekeeping_due(0.0)
        with store.write():
            store.clear_unlock_failures()
        assert store.unlock_failures() is None

    # -- the audit log -----------------------------------------------------------------
    def _append(self, store, n: int, op: str = "secret.put", target: str | None = "s", time: str = "2026-01-01"):
        with store.write():
            start = store.max_audit_seq()
            for seq in range(start + 1, start + n + 1):
                store.insert_audit(seq, time, f'{{"seq":{seq},"result":"ok"}}', op, target, f"mac{seq}")
                store.put_audit_head(seq, f"mac{seq}", f"seal{seq}")

    def test_audit_append_head_and_batches(self, store):
        assert store.audit_head() is None and store.max_audit_seq() == 0
        self._append(store, 45)
        seq, mac, seal = store.audit_head()
        assert (seq, bytes(mac), bytes(seal)) == (45, b"mac45", b"seal45")
        batches = list(store.audit_batches(size=20))
        assert [len(b) for b in batches] == [20, 20, 5]
        assert batches[0][0] == (1, '{"seq":1,"result":"ok"}', "mac1", "secret.put", "s", "2026-01-01")
        assert store.audit_count() == 45
        assert [r[0] for r in store.audit_rows_containing('"seq":7,')] == [7]

    def test_audit_query_filters(self, store):
        self._append(store, 3, op="key.create", target="k", time="2026-01-01")
        self._append(store, 3, op="exec", target="a,b,k", time="2026-02-01")
        self._append(store, 3, op="secret.get", target="kk", time="2026-03-01")
        assert [r[0] for r in store.audit_query(op="key.*")] == [1, 2, 3]
        assert [r[0] for r in store.audit_query(target="k")] == [1, 2, 3, 4, 5, 6]
        assert [r[0] for r in store.audit_query(since="2026-02-01", upto=7, after=4)] == [5, 6, 7]

    def test_audit_prune_and_rewrite(self, store):
        self._append(store, 5, time="2026-01-01")
        self._append(store, 2, time="2026-06-01")
        assert store.audit_prunable("2025-01-01", "audit.checkpoint") is None
        last, count, first, mac = store.audit_prunable("2026-03-01", "audit.checkpoint")
        assert (last, count, first, mac) == (5, 5, 1, "mac5")
        with store.write():
            store.delete_audit_upto(5)
            store.rewrite_audit([('{"seq":6}', "new6", 6)])
        assert [r[:3] for b in store.audit_batches() for r in b] == [(6, '{"seq":6}', "new6"),
                                                                      (7, '{"seq":7,"result":"ok"}', "mac7")]

    def test_written_since_and_max_row_seq(self, store):
        self._append(store, 3, op="secret.put", target="s")
        with store.write():
            store.insert_key(**{**KEY_ROW, "seq": 9})
        assert store.max_row_seq() == 9
        assert store.written_since("s", 1, ("secret.put",)) == 2
        assert store.written_since("s", 3, ("secret.put",)) is None
        assert store.written_since("s", 0, ("secret.delete",)) is None

    # -- whole vault ---------------------------------------------------------------------
    def test_integrity_and_backup(self, store, tmp_path):
        self._append(store, 4)
        assert store.integrity_problems() == []
        head = store.backup_to(str(tmp_path / "copy.db"))
        assert head == 4
        store.seal_for_move()

    def test_concurrent_writers_serialize(self, store, second_store):
        """Two connections appending at once: every entry lands, no seq twice (the chain stays one)."""
        errors = []

        def writer(s):
            try:
                for _ in range(20):
                    self._append(s, 1)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s,)) for s in (store, second_store)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [r[0] for b in store.audit_batches() for r in b] == list(range(1, 41))

    def test_savepoints_undo_only_their_body(self, store):
        """serve's group commit: several requests in one transaction, a failed one undone alone."""
        with store.write():
            store.set_meta("kept", "1")
            with pytest.raises(RuntimeError):
                with store.savepoint():
                    store.set_meta("undone", "1")
                    raise RuntimeError("this request failed")
            with store.savepoint():
                store.set_meta("also", "1")
        assert (store.get_meta("kept"), store.get_meta("undone"), store.get_meta("also")) == ("1", None, "1")
        with pytest.raises(RuntimeError):
            with store.savepoint():
                pass


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def path(self, tmp_path):
        return str(tmp_path / "v.db")

    @pytest.fixture
    def store(self, path):
        s = SQLiteStore.create(path)
        yield s
        s.close()

    @pytest.fixture
    def second_store(self, store, path):
        s = SQLiteStore.open(path)
        yield s
        s.close()

    def test_driver_errors_leave_as_kms_errors(self, store):
        store.conn.execute("DROP TABLE keys")  # a table edited away outside kms-cli
        with pytest.raises(IntegrityError, match="damaged or was edited"):
            store.key("x")

    def test_text_that_is_not_utf8_is_bad_text(self, store):
        self._append(store, 1)
        store.conn.execute("UPDATE audit SET entry = CAST(X'FF00' AS TEXT) WHERE seq = 1")
        with pytest.raises(BadText):
            list(store.audit_batches())
        raw = [r for b in store.audit_batches(raw=True) for r in b]
        assert raw[0][1] == "\ufffd\x00"

    def test_written_since_looks_up_only_writes(self, store):
        """Every read checks whether its row was written since: a range per writing op in
        audit_target_op, not a walk over every read of that name (which grew with each `secret get`)."""
        plan = store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(seq) FROM audit WHERE target = ? AND op IN (?, ?) AND seq > ? "
            "AND instr(entry, '\"result\":\"ok\"') > 0", ("s", "secret.put", "secret.rm", 1)).fetchall()
        assert any("audit_target_op" in row[-1] for row in plan)
        self._append(store, 50, op="secret.get", target="s")
        self._append(store, 1, op="secret.put", target="s")
        assert store.written_since("s", 10, ("secret.put", "secret.rm")) == 51


@pytest.mark.server
class TestPostgresStore(StoreContract):
    """The same contract on a real PostgreSQL server (tests/servers/postgres.py), a schema per test."""

    @pytest.fixture
    def uri(self, pg_cluster, pg_uri, monkeypatch):
        for k, v in pg_cluster.env.items():
            monkeypatch.setenv(k, v)
        return pg_uri

    @pytest.fixture
    def store(self, uri):
        from kms_cli.store.postgres import PostgresStore

        s = PostgresStore.create(uri)
        yield s
        s.close()

    @pytest.fixture
    def second_store(self, store, uri):
        from kms_cli.store.postgres import PostgresStore

        s = PostgresStore.open(uri)
        yield s
        s.close()

    def test_driver_errors_leave_as_kms_errors(self, store):
        store.conn.execute("DROP TABLE keys")  # a table edited away outside kms-cli
        with pytest.raises(IntegrityError, match="damaged or was edited"):
            store.key("x")
        assert store.integrity_problems() == ["table keys is missing"]

    def test_an_existing_vault_is_not_replaced_without_force(self, store, uri):
        from kms_cli.errors import AlreadyExistsError
        from kms_cli.store.postgres import PostgresStore

        with store.write():
            store.set_meta("x", "1")
        with pytest.raises(AlreadyExistsError):
            PostgresStore.create(uri)
        fresh = PostgresStore.create(uri, force=True)
        try:
            assert fresh.get_meta("x") is None and fresh.schema_version() == SCHEMA_VERSION
        finally:
            fresh.close()

    def test_a_missing_vault_is_not_found(self, pg_cluster, monkeypatch):
        from kms_cli.errors import NotFoundError
        from kms_cli.store.postgres import PostgresStore

        monkeypatch.setenv("PGPASSFILE", pg_cluster.passfile)
        with pytest.raises(NotFoundError):
            PostgresStore.open(pg_cluster.uri("kms", vault="nothing_here"))

    def test_glob_translation_matches_sqlite(self):
        import fnmatch
        import re

        from kms_cli.store.postgres import _glob_regex

        for pattern, names in {"key.*": ["key.create", "key", "keyxcreate"], "a?c": ["abc", "ac", "abbc"],
                               "[ab]*": ["a1", "c1"], "x.y": ["x.y", "xzy"]}.items():
            for name in names:
                assert bool(re.match(_glob_regex(pattern), name)) == fnmatch.fnmatchcase(name, pattern), (pattern, name)

