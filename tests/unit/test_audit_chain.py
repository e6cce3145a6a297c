"""The audit chain without the CLI: MAC, verify and its damage kinds, prune checkpoints, rekey, query, follow.

(Named test_audit_chain.py: tests/cli/test_audit.py holds the black-box tests, and
pytest's default import mode refuses two test modules with the same basename.)
"""

import json
import os
import random
import sqlite3

import pytest

from kms_cli import durations
from kms_cli.audit import CHECKPOINT, GENESIS, AuditDamage, AuditLog, canonical, to_entry
from kms_cli.crypto.primitives import KeyedHmacSha256, hmac_sha256
from kms_cli.errors import IntegrityError, KmsError
from kms_cli.store.sqlite import SQLiteStore as Store

KEY = bytes(range(32))
ACTOR = {"user": "u", "host": "h", "pid": 1, "ci": None}
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock(T0)
    monkeypatch.setattr(durations, "now", c)
    return c


@pytest.fixture
def log(tmp_path, clock):
    store = Store.create(str(tmp_path / "v.db"))
    yield AuditLog(store, KEY, ACTOR)
    store.close()


def fill(log, n, clock=None, step=10.0, **kw):
    out = []
    for i in range(n):
        with log.store.write():
            out.append(log.append(kw.get("op", "secret.get"), kw.get("target", f"app/s{i}"), i + 1))
        if clock is not None:
            clock.t += step
    return out


def damage(log) -> tuple[int, str]:
    with pytest.raises(AuditDamage) as info:
        log.verify()
    return info.value.seq, info.value.kind


def sql(log, statement, params=()):
    log.store.conn.execute(statement, params)


# -- MAC ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [b"", b"k", bytes(32), random.Random(64).randbytes(64), random.Random(65).randbytes(65),
                                 random.Random(200).randbytes(200)],
                         ids=["empty", "short", "zeros", "block", "block+1", "long"])  # fixed: xdist workers agree
def test_fast_mac_is_hmac_sha256(key):
    for data in (b"", b"x", os.urandom(1000)):
        assert KeyedHmacSha256(key).hex(data) == hmac_sha256(key, data).hex()


def test_mac_covers_canonical_entry_including_prev(log):
    e1, e2 = fill(log, 2)
    assert e1["prev"] == GENESIS and e2["prev"] == e1["mac"]
    assert e2["mac"] == hmac_sha256(KEY, canonical(e2)).hex()
    stored = log.store.one("SELECT entry FROM audit WHERE seq = 2")[0]
    assert stored == canonical(e2).decode() and '"mac"' not in stored


def test_to_entry_has_the_spec_shape(log):
    fill(log, 1)
    row = log.store.one("SELECT entry, mac FROM audit WHERE seq = 1")
    e = to_entry(row[0], row[1])
    assert list(e) == ["seq", "time", "actor", "op", "target", "version", "result", "error", "prev", "mac"]
    assert list(e["actor"]) == ["user", "host", "pid", "ci"]
    assert e["time"].endswith("Z") and e["result"] == "ok" and e["error"] is None


def test_append_needs_the_callers_transaction(log):
    with pytest.raises(RuntimeError):
        log.append("secret.get")


def test_append_fails_closed(log):
    with log.store.write():
        log.append("a")
    sql(log, "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'full'); END")
    with pytest.raises(KmsError, match="could not write the audit entry"):
        with log.store.write():
            log.store.set_meta("x", "1")
            log.append("b")
    assert log.store.get_meta("x") is None  # the operation's own write rolled back with it


# -- verify -------------------------------------------------------------------------------

def test_verify_counts_and_empty(log):
    # every vault has at least its vault.init entry: an empty log with no head was emptied
    with pytest.raises(AuditDamage, match="truncated"):
        log.verify()
    fill(log, 5)
    r = log.verify()
    assert (r.entries, r.last_seq, r.first_seq) == (5, 5, 1)


def test_detail_and_escaped_targets_verify(log):
    with log.store.write():
        log.append("key.revoke", 'we"ird\\name', 1, extra={"reason": 'a "quoted", "prev":"x" reason'})
        log.append("exec", "a/b,c/d", None, "denied", "not_found", extra={"prev": "nested", "op": "x"})
        log.append("unicode", "caf\u00e9", None)
    assert log.verify().entries == 3


@pytest.mark.parametrize("edit, expected", [
    ("UPDATE audit SET entry = replace(entry, '\"result\":\"ok\"', '\"result\":\"denied\"') WHERE seq = 3",
     (3, "altered")),
    ("UPDATE audit SET mac = '00' || substr(mac, 3) WHERE seq = 4", (4, "altered")),
    ("UPDATE audit SET entry = 'not json' WHERE seq = 2", (2, "altered")),
    ("UPDATE audit SET op = 'secret.put' WHERE seq = 2", (2, "altered")),
    ("UPDATE audit SET target = 'other' WHERE seq = 5", (5, "altered")),
    ("UPDATE audit SET time = '2000-01-01T00:00:00Z' WHERE seq = 5", (5, "altered")),
    ("DELETE FROM audit WHERE seq = 3", (3, "missing")),
    ("DELETE FROM audit WHERE seq IN (3, 4)", (3, "missing")),
    ("DELETE FROM audit WHERE seq = 1", (1, "missing")),
    ("DELETE FROM audit WHERE seq >= 5", (5, "truncated")),
    ("DELETE FROM audit WHERE seq = 6", (6, "truncated")),
    ("DELETE FROM audit", (1, "truncated")),
    ("UPDATE audit_head SET seal = '00' || substr(seal, 3)", (6, "head mismatch")),
    ("UPDATE audit_head SET mac = (SELECT mac FROM audit WHERE seq = 5)", (6, "head mismatch")),
    ("DELETE FROM audit_head", (6, "head mismatch")),
    # an entry moved to the end: the gap is not "missing", the entry still exists elsewhere
    ("UPDATE audit SET seq = 100 WHERE seq = 3", (3, "reordered")),
    ("UPDATE audit SET seq = 0 WHERE seq = 2", (0, "reordered")),
    # edits that change a column's type: still named, never a crash
    ("UPDATE audit SET entry = X'00ff' WHERE seq = 3", (3, "altered")),
    ("UPDATE audit SET entry = CAST(entry AS BLOB) || X'ff' WHERE seq = 3", (3, "altered")),
    ("UPDATE audit SET mac = 42 WHERE seq = 2", (2, "altered")),
    ("UPDATE audit SET target = X'ff' WHERE seq = 4", (4, "altered")),
    ("UPDATE audit_head SET seq = 'six'", (6, "head mismatch")),
    ("UPDATE audit_head SET seal = X'00'", (6, "head mismatch")),
])
def test_verify_names_first_bad_seq_and_kind(log, edit, expected):
    fill(log, 6)
    sql(log, edit)
    assert damage(log) == expected


def swap(log, a, b):
    cols = "entry, mac, op, target, time"
    ra = log.store.one(f"SELECT {cols} FROM audit WHERE seq = ?", (a,))
    rb = log.store.one(f"SELECT {cols} FROM audit WHERE seq = ?", (b,))
    for seq, row in ((a, rb), (b, ra)):
        sql(log, "UPDATE audit SET entry = ?, mac = ?, op = ?, target = ?, time = ? WHERE seq = ?", (*row, seq))


@pytest.mark.parametrize("a, b", [(2, 3), (3, 5), (5, 6), (1, 2)])
def test_swapped_entries_are_reordered_not_missing(log, a, b):
    fill(log, 6)
    swap(log, a, b)
    assert damage(log) == (a, "reordered")


def test_swapped_seq_keys_are_reordered(log):
    fill(log, 6)
    sql(log, "UPDATE audit SET seq = -1 WHERE seq = 4")
    sql(log, "UPDATE audit SET seq = 4 WHERE seq = 5")
    sql(log, "UPDATE audit SET seq = 5 WHERE seq = -1")
    assert damage(log) == (4, "reordered")


def test_stale_but_sealed_head_is_a_mismatch(log):
    fill(log, 4)
    old = log.store.one("SELECT seq, mac, seal FROM audit_head")
    fill(log, 2)
    sql(log, "UPDATE audit_head SET seq = ?, mac = ?, seal = ?", tuple(old))
    assert damage(log) == (5, "head mismatch")


def test_entry_from_another_key_is_altered(log, tmp_path):
    fill(log, 3)
    other = AuditLog(log.store, bytes(32), ACTOR)
    forged = other.make_entry(4, log.head()[1], "secret.get", "x")
    with log.store.write():
        other._insert(forged)
        log._set_head(4, forged["mac"])
    assert damage(log) == (4, "altered")


def test_damage_is_an_integrity_error_with_a_clear_message(log):
    fill(log, 3)
    sql(log, "DELETE FROM audit WHERE seq = 2")
    with pytest.raises(IntegrityError, match=r"audit chain broken at seq 2: missing \(entry 2 is gone\)"):
        log.verify()


# -- prune --------------------------------------------------------------------------------

def prune(log, before):
    with log.store.write():
        info = log.prune(before)
        log.append("audit.prune", extra={k: v for k, v in info.items() if v is not None})
    return info


def test_prune_leaves_a_checkpoint_the_rest_verifies_from(log, clock):
    entries = fill(log, 10, clock)  # times T0, T0+10, ..., T0+90
    info = prune(log, T0 + 45)  # entries 1..5 are older
    assert info == {"pruned": 5, "before": durations.rfc3339(T0 + 45), "checkpoint": 5}
    rows = log.store.all("SELECT seq, entry, mac FROM audit ORDER BY seq")
    assert [r[0] for r in rows] == [5, 6, 7, 8, 9, 10, 11]
    cp = json.loads(rows[0][1])
    assert cp["op"] == CHECKPOINT and cp["prev"] == entries[4]["mac"] == entries[5]["prev"]
    assert cp["detail"] == {"pruned": 5, "first": 1, "last": 5, "before": durations.rfc3339(T0 + 45)}
    r = log.verify()
    assert (r.entries, r.first_seq, r.last_seq) == (7, 5, 11)
    # and again, pruning the checkpoint itself away
    clock.t += 100
    info = prune(log, T0 + 75)
    assert info["pruned"] == 3 and info["checkpoint"] == 8
    assert log.store.one("SELECT MIN(seq) FROM audit")[0] == 8
    assert log.verify().first_seq == 8


def test_prune_nothing_old(log, clock):
    fill(log, 3, clock)
    assert prune(log, T0 - 1) == {"pruned": 0, "before": durations.rfc3339(T0 - 1), "checkpoint": None}
    assert log.verify().entries == 4


def test_prune_everything_then_append(log, clock):
    fill(log, 4, clock)
    clock.t += 100
    prune(log, clock.t)
    fill(log, 2)
    r = log.verify()
    assert (r.entries, r.first_seq, r.last_seq) == (4, 4, 7)


@pytest.mark.parametrize("edit, expected", [
    ("DELETE FROM audit WHERE seq = 5", (1, "missing")),  # the checkpoint itself
    ("UPDATE audit SET entry = replace(entry, '\"pruned\":5', '\"pruned\":1') WHERE seq = 5", (5, "altered")),
    ("DELETE FROM audit WHERE seq = 7", (7, "missing")),
    ("UPDATE audit SET entry = replace(entry, '\"version\":8', '\"version\":9') WHERE seq = 8", (8, "altered")),
    ("DELETE FROM audit WHERE seq = 11", (11, "truncated")),
])
def test_tampering_after_prune_is_detected(log, clock, edit, expected):
    fill(log, 10, clock)
    prune(log, T0 + 45)
    sql(log, edit)
    assert damage(log) == expected


def test_prune_refuses_a_damaged_chain(log, clock):
    fill(log, 6, clock)
    sql(log, "DELETE FROM audit WHERE seq = 2")
    with pytest.raises(AuditDamage):
        prune(log, T0 + 100)
    assert log.store.one("SELECT COUNT(*) FROM audit")[0] == 5  # nothing pruned


def test_checkpoint_can_only_be_made_with_the_key(log, clock):
    fill(log, 6, clock)
    other = AuditLog(log.store, bytes(32), ACTOR)
    mac3 = log.store.one("SELECT mac FROM audit WHERE seq = 3")[0]
    sql(log, "DELETE FROM audit WHERE seq <= 3")
    with log.store.write():
        other._insert(other.make_entry(3, mac3, CHECKPOINT, extra={"pruned": 3}))
    assert damage(log) == (3, "altered")


# -- rekey (master rotate) -----------------------------------------------------------------

def test_rekey_remacs_the_chain_and_head(log, clock):
    fill(log, 10, clock)
    prune(log, T0 + 45)
    new_key = bytes(reversed(range(32)))
    with log.store.write():
        log.rekey(new_key)
    assert log.verify().entries == 7
    with pytest.raises(AuditDamage):
        AuditLog(log.store, KEY, ACTOR).verify()
    fill(log, 1)
    assert AuditLog(log.store, new_key, ACTOR).verify().entries == 8


def test_rekey_refuses_a_damaged_chain(log):
    fill(log, 4)
    sql(log, "DELETE FROM audit WHERE seq = 2")
    with pytest.raises(AuditDamage):
        with log.store.write():
            log.rekey(bytes(32))
    assert log.key == KEY


# -- query and follow ---------------------------------------------------------------------

def test_query_filters(log, clock):
    with log.store.write():
        log.append("secret.put", "app/db", 1)
    clock.t += 100
    with log.store.write():
        log.append("secret.get", "app/db", 1)
        log.append("exec", "app/db,app/api", None)
        log.append("key.create", "app/k", 1)
        log.append("vault.init", None, None)
    seqs = lambda **kw: [e["seq"] for e in log.query(**kw)]  # noqa: E731
    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs(op="secret.get") == [2]
    assert seqs(op="secret.*") == [1, 2]
    assert seqs(target="app/db") == [1, 2, 3]
    assert seqs(target="app/api") == [3]
    assert seqs(target="app") == []
    assert seqs(since=durations.rfc3339(T0 + 50)) == [2, 3, 4, 5]
    assert seqs(after=3) == [4, 5]
    assert seqs(visible=lambda t: t is not None and t.startswith("app/k")) == [4]


def test_follow_yields_entries_as_they_land(log):
    fill(log, 2)
    ticks = []

    def sleep(_):
        ticks.append(1)
        if len(ticks) == 1:
            fill(log, 2)  # lands while following
        elif len(ticks) == 3:
            with log.store.write():
                log.append("audit.log", None)
                log.append("secret.get", "x")
        elif len(ticks) > 4:
            raise StopIteration

    got = []
    with pytest.raises(RuntimeError):  # StopIteration inside a generator becomes RuntimeError
        for e in log.follow(after=2, sleep=sleep, skip=lambda e: e["op"] == "audit.log"):
            got.append(e["seq"])
    assert got == [3, 4, 6]


def test_export_never_holds_values(tmp_path):
    """The vault layer puts names and metadata in entries: a sanity check of the shape."""
    store = Store.create(str(tmp_path / "v.db"))
    log = AuditLog(store, KEY, ACTOR)
    with store.write():
        e = log.append("secret.put", "app/db", 1)
    assert set(e) == {"seq", "time", "actor", "op", "target", "version", "result", "error", "prev", "mac"}
    store.close()


def test_verify_reads_one_snapshot(tmp_path, clock):
    path = str(tmp_path / "v.db")
    store = Store.create(path)
    log = AuditLog(store, KEY, ACTOR)
    fill(log, 3)
    other = sqlite3.connect(path)
    other.execute("BEGIN")
    other.execute("SELECT COUNT(*) FROM audit").fetchone()
    assert log.verify().entries == 3
    other.rollback()
    other.close()
    store.close()


def test_verify_reports_progress_per_batch(log, monkeypatch):
    import kms_cli.audit as audit_mod

    monkeypatch.setattr(audit_mod, "BATCH", 4)
    fill(log, 10)
    seen = []
    assert log.verify(progress=lambda done, total: seen.append((done, total))).entries == 10
    assert seen == [(4, 10), (8, 10), (10, 10)]
