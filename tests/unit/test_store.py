import os
import stat

import pytest

from kms_cli.errors import AlreadyExistsError, IntegrityError, NotFoundError
from kms_cli.store import SCHEMA_VERSION
from kms_cli.store.sqlite import SQLiteStore as Store


def test_create_is_private_and_current(tmp_path):
    p = str(tmp_path / "v.db")
    s = Store.create(p)
    assert s.schema_version() == SCHEMA_VERSION
    with s.write():
        s.set_meta("x", "1")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(p + suffix):
            assert stat.S_IMODE(os.stat(p + suffix).st_mode) == 0o600
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    with pytest.raises(AlreadyExistsError):
        Store.create(p)


def test_open_missing_and_garbage(tmp_path):
    with pytest.raises(NotFoundError):
        Store.open(str(tmp_path / "nope.db"))
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(IntegrityError):
        Store.open(str(bad))


def test_write_rolls_back_on_error(tmp_path):
    s = Store.create(str(tmp_path / "v.db"))
    with pytest.raises(RuntimeError):
        with s.write():
            s.set_meta("a", "1")
            raise RuntimeError("boom")
    assert s.get_meta("a") is None
    with s.write():
        with s.write():  # nested joins the outer transaction
            s.set_meta("a", "2")
    assert s.get_meta("a") == "2"


def test_secret_tombstone_keeps_counter(tmp_path):
    s = Store.create(str(tmp_path / "v.db"))
    with s.write():
        s.insert_secret_version(name="n", version=1, value=b"x", created=0.0)
        s.put_secret_head("n", 1, False, 0.0, 0.0, 1, b"mac")
        s.delete_secret_versions("n")
        s.put_secret_head("n", 1, True, 0.0, 1.0, 2, b"mac")
    assert s.secret("n")["deleted"] == 1 and s.secret("n")["last_version"] == 1
    assert s.secrets() == [] and s.secret_versions("n") == []


def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    import sqlite3

    p = tmp_path / "other.db"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(IntegrityError):
        Store.open(str(p))
    db = sqlite3.connect(p)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["t"]
