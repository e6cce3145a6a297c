"""The append-only, hash-chained audit log: append, verify, query, follow, export, prune and rekey.

Each entry's `mac` is HMAC-SHA-256 under the audit subkey over the canonical
JSON of the entry without `mac` (keys sorted, no spaces), which includes `prev`,
the previous entry's mac. The head row holds the last seq and mac, sealed with
its own MAC, so deleting the newest entries is detected.

Retention: `prune` deletes entries 1..K and puts one MACed `audit.checkpoint`
entry at seq K in their place. The checkpoint's `prev` is the mac of the last
pruned entry K, which is exactly what entry K+1 names as its `prev`, so the chain
still verifies from the checkpoint on: a checkpoint stands in for the entries it
replaced, and only the vault's audit key can make one.

Verification names the first bad seq and the kind of damage:
  altered        an entry does not match its mac, or its columns do not match it
  missing        a gap in seq (entries deleted from the middle or the start)
  reordered      authentic entries stored at the wrong seq (swapped or moved)
  truncated      the head names entries after the last one (newest entries deleted)
  head mismatch  the head's seal does not verify or it does not name the last entry
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

from kms_cli import durations
from kms_cli.crypto.primitives import KeyedHmacSha256, equal, hmac_sha256
from kms_cli.errors import IntegrityError, KmsError, UnavailableError
from kms_cli.store.base import BadText

GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
FIELDS = ("seq", "time", "actor", "op", "target", "version", "result", "error")
BATCH = 20_000


def canonical(entry: dict) -> bytes:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def result_of(exc: BaseException | None) -> tuple[str, str | None]:
    if exc is None:
        return "ok", None
    if isinstance(exc, KmsError):
        return ("denied" if exc.exit_code in (3, 4, 6, 8) else "error"), exc.code
    return "error", "internal"


def to_entry(text: str, mac: str) -> dict:
    """A stored row as the spec's entry shape (plus `detail` where the op recorded one)."""
    body = json.loads(text)
    out = {k: body.get(k) for k in FIELDS}
    actor = out["actor"]
    if isinstance(actor, dict):
        out["actor"] = {k: actor.get(k) for k in ("user", "host", "pid", "ci")}
    if "detail" in body:
        out["detail"] = body["detail"]
    out["prev"] = body.get("prev")
    out["mac"] = mac
    return out


class AuditDamage(IntegrityError):
    """The chain or its head failed verification: `seq` is the first bad one, `kind` what is wrong."""

    def __init__(self, seq: int, kind: str, why: str):
        super().__init__(f"audit chain broken at seq {seq}: {kind} ({why})",
                         hint="the audit log was edited outside kms-cli; restore a backup to recover it")
        self.seq = seq
        self.kind = kind


class VerifyResult:
    """What `verify` found: entries checked, the last seq, and the first (1, or a prune checkpoint's)."""

    __slots__ = ("entries", "last_seq", "first_seq")

    def __init__(self, entries: int, last_seq: int, first_seq: int = 0):
        self.entries, self.last_seq, self.first_seq = entries, last_seq, first_seq

    def __iter__(self):
        return iter((self.entries, self.last_seq, self.first_seq))

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return f"VerifyResult(entries={self.entries}, last_seq={self.last_seq}, first_seq={self.first_seq})"


class AuditLog:
    def __init__(self, store, key: bytes, actor: dict):
        self.store = store
        self.key = key
        self.actor = actor
        self._fast = KeyedHmacSha256(key)

    def __repr__(self) -> str:
        return f"AuditLog({self.store.location!r})"

    # -- MACs ----------------------------------------------------------------
    def _mac(self, entry: dict) -> str:
        return hmac_sha256(self.key, canonical(entry)).hex()

    def set_key(self, key: bytes) -> None:
        """Another root key is in force (another process's `master rotate` committed)."""
        self.key, self._fast = key, KeyedHmacSha256(key)

    def _head_seal(self, seq: int, mac: str, key: bytes | None = None, version: int = 2) -> str:
        # version 2 (row seqs bound to the log) seals differently from version 1, so a vault
        # cannot be made to look like one awaiting its upgrade (rows.upgrade checks this)
        return hmac_sha256(key or self.key, f"kms-cli/audit-head/v{version}".encode() + b"\x00" + str(seq).encode()
                           + b"\x00" + mac.encode()).hex()

    def head_is_legacy(self) -> bool:
        """Whether the head carries a version-1 seal (a vault written before row seqs)."""
        row = self._head_row()
        return row is not None and equal(self._head_seal(row[0], row[1], version=1).encode(), row[2].encode())

    def _head_row(self, at: int = 0) -> tuple[int, str, str] | None:
        """The head as (seq, mac, seal); a head that is not what kms-cli writes is damage (exit 5,
        reported at seq `at`)."""
        row = self.store.audit_head()
        if row is None:
            return None
        seq, mac, seal = row[0], row[1], row[2]
        try:
            mac, seal = bytes(mac).decode("ascii"), bytes(seal).decode("ascii")
        except (TypeError, UnicodeDecodeError):
            raise AuditDamage(at, "head mismatch", "the head row is not what kms-cli writes") from None
        if not isinstance(seq, int):
            raise AuditDamage(at, "head mismatch", "the head row is not what kms-cli writes")
        return seq, mac, seal

    def head(self) -> tuple[int, str]:
        row = self._head_row()
        return (row[0], row[1]) if row else (0, GENESIS)

    def next_seq(self) -> int:
        """The seq the next entry will get (inside the write transaction): rows written now record it."""
        seq, _ = self.head()
        return max(seq, self.store.max_audit_seq()) + 1

    # -- appending -----------------------------------------------------------
    def make_entry(self, seq: int, prev: str, op: str, target: str | None = None, version: int | None = None,
                   result: str = "ok", error: str | None = None, extra: dict | None = None,
                   when: float | None = None) -> dict:
        """A complete entry with its mac (not stored): used by append, prune and scripts/bench_audit.py."""
        entry = {
            "seq": seq,
            "time": durations.rfc3339(durations.now() if when is None else when),
            "actor": self.actor,
            "op": op,
            "target": target,
            "version": version,
            "result": result,
            "error": error,
            "prev": prev,
        }
        if extra:
            entry["detail"] = extra
        entry["mac"] = self._mac(entry)
        return entry

    def _insert(self, entry: dict) -> None:
        self.store.insert_audit(entry["seq"], entry["time"], canonical(entry).decode(), entry["op"], entry["target"],
                                entry["mac"])

    def _set_head(self, seq: int, mac: str) -> None:
        self.store.put_audit_head(seq, mac, self._head_seal(seq, mac))

    def append(self, op: str, target: str | None = None, version: int | None = None,
               result: str = "ok", error: str | None = None, extra: dict | None = None) -> dict:
        """Append one entry; the caller holds the write transaction."""
        if not self.store.in_transaction:
            raise RuntimeError("audit entries are written inside the operation's transaction")
        try:
            # A head behind the table (edited outside kms-cli) must not make every later
            # operation fail on a duplicate seq: verify reports that damage, append goes on.
            head_seq, prev = self.head()
            seq = max(head_seq, self.store.max_audit_seq()) + 1  # next_seq(), without reading the head twice
            entry = self.make_entry(seq, prev, op, target, version, result, error, extra)
            self._insert(entry)
            self._set_head(entry["seq"], entry["mac"])
        except (AuditDamage, UnavailableError):  # a damaged head (5), a full or read-only disk (7)
            raise
        except Exception as exc:  # fail closed: the operation does not happen without its entry
            raise KmsError("could not write the audit entry; the operation was not performed") from exc
        return entry

    # -- verification --------------------------------------------------------
    def verify(self, progress: Callable[[int, int | None], None] | None = None) -> VerifyResult:
        """Check the whole chain and the head in one snapshot. Raises AuditDamage on the first damage.
        `progress(done, total)` is called after each batch of entries."""
        with self.store.read():
            return self._verify(progress=progress)

    def _verify(self, bound_rows: bool = True, progress=None) -> VerifyResult:
        """`bound_rows`: also check that no state row is newer than the log (off inside a write
        transaction that has already written rows for the entry it is about to append)."""
        try:
            return self._walk(robust=False, bound_rows=bound_rows, progress=progress)
        except (TypeError, AttributeError, BadText):
            # A column edited to a blob, a number or invalid UTF-8: walk again reading raw
            # bytes, so the damage is named (an entry that is not its text is "altered").
            return self._walk(robust=True, bound_rows=bound_rows)

    def _walk(self, robust: bool, bound_rows: bool = True, progress=None) -> VerifyResult:
        mac_hex = self._fast.hex
        op_frag: dict[str, str] = {}
        expected, chain = 1, GENESIS  # the next seq, and the value its `prev` must hold
        count, first, last = 0, 0, 0
        total = self.store.audit_count() if progress is not None else None
        for rows in self.store.audit_batches(raw=robust, size=BATCH):
            for row in rows:
                seq, text, mac, op, target, when = row
                # The fast path: every check by slicing the canonical text, no json.loads.
                # Keys are sorted, so the top-level `prev` is the last `,"prev":"` in the text
                # (only result, seq, target, time and version follow it: none is an object).
                i = text.rfind(',"prev":"')
                frag = op_frag.get(op)
                if frag is None:
                    frag = op_frag[op] = f'"op":"{op}"'
                if (seq == expected and op != CHECKPOINT and text[i + 9:i + 73] == chain
                        and mac_hex(text.encode()) == mac and text.endswith(frag, 0, i)
                        and (f',"seq":{seq},"target":{"null" if target is None else chr(34) + target + chr(34)},'
                             f'"time":"{when}","version":') in text[i + 74:]):
                    chain = mac
                else:
                    # Anything unusual (a checkpoint, a name that needed JSON escapes, damage):
                    # the careful path decides, and raises on damage.
                    chain = self._careful(row, expected, chain)
                    if op == CHECKPOINT:
                        first = seq
                if not first:
                    first = seq
                expected = seq + 1
                last = seq
                count += 1
            if progress is not None:
                progress(count, total)
        self._check_head(count, last, chain, bound_rows)
        return VerifyResult(count, last, first)

    def _careful(self, row, expected: int, chain: str) -> str:
        """Full check of one row with json.loads; returns the new chain value or raises AuditDamage."""
        seq, text, mac, op, target, when = row
        authentic = equal(self._fast.hex(text.encode()).encode(), str(mac).encode())
        body = None
        if authentic:
            try:
                body = json.loads(text)
            except ValueError:
                authentic = False
        columns_match = body is not None and (
            body.get("op") == op and body.get("target") == target and body.get("time") == when)
        # A checkpoint left by `audit prune` restarts the chain: it vouches for everything before it.
        if body is not None and body.get("op") == CHECKPOINT and body.get("seq") == seq and columns_match:
            return body.get("prev")
        if not authentic and op == CHECKPOINT and expected == 1:
            raise AuditDamage(seq, "altered", "the checkpoint the chain starts from does not match its mac")
        if seq > expected:
            self._gap(expected, seq)
        if seq < expected:  # a row below the chain's start (e.g. moved to seq 0 or below)
            raise AuditDamage(seq, "reordered" if authentic else "altered",
                              "an entry is stored before the start of the chain")
        if not authentic:
            raise AuditDamage(seq, "altered", "the entry does not match its mac")
        if body.get("seq") != seq:
            raise AuditDamage(seq, "reordered", f"the entry of seq {body.get('seq')} is stored at seq {seq}")
        if not columns_match:
            raise AuditDamage(seq, "altered", "the op, target or time column does not match the entry")
        if body.get("prev") != chain:
            if seq == 1:
                raise AuditDamage(seq, "altered", "the first entry does not start the chain")
            raise AuditDamage(seq, "altered", f"the entry does not chain to seq {seq - 1}")
        return mac

    def _gap(self, expected: int, found: int) -> None:
        """Rows expected..found-1 are absent: moved elsewhere (reordered) or gone (missing)."""
        needle = f',"seq":{expected},"target":'
        for seq, text, mac in self.store.audit_rows_containing(needle):
            if seq != expected and equal(self._fast.hex(text.encode()).encode(), str(mac).encode()):
                raise AuditDamage(expected, "reordered", f"the entry of seq {expected} is stored at seq {seq}")
        if expected == 1:
            raise AuditDamage(1, "missing", f"entries 1 to {found - 1} are gone and no checkpoint covers them")
        what = f"entry {expected} is" if found == expected + 1 else f"entries {expected} to {found - 1} are"
        raise AuditDamage(expected, "missing", f"{what} gone")

    def _check_head(self, count: int, last: int, chain: str, bound_rows: bool = True) -> None:
        row = self._head_row(last)
        if row is None:  # every vault has at least its vault.init entry, so always a head
            if not count:
                raise AuditDamage(1, "truncated", "the log and its head are gone: the log was emptied")
            raise AuditDamage(last, "head mismatch", "the head is missing")
        hseq, hmac_, seal = row
        if not equal(self._head_seal(hseq, hmac_).encode(), seal.encode()):
            raise AuditDamage(hseq, "head mismatch", "the head's seal does not verify")
        if hseq > last:
            what = f"entry {last + 1} is" if hseq == last + 1 else f"entries {last + 1} to {hseq} are"
            raise AuditDamage(last + 1, "truncated", f"{what} missing; the head names seq {hseq}")
        if hseq < last:
            raise AuditDamage(hseq + 1, "head mismatch", f"the head names seq {hseq} but the chain goes on to {last}")
        if hmac_ != chain:
            raise AuditDamage(last, "head mismatch", "the head names another entry")
        # State rows record the seq of the entry that wrote them: a log that ends before the
        # newest of them was cut or swapped for an older copy (with its own, older head).
        newest = self.store.max_row_seq() if bound_rows else 0
        if newest > last:
            raise AuditDamage(last + 1, "truncated", f"the vault's state was written at seq {newest} but the log "
                                                     f"ends at seq {last}: entries were removed or an older log "
                                                     "was put in its place")

    # -- reading -------------------------------------------------------------
    def stats(self) -> dict:
        """Entry count and head seq (for health and metrics)."""
        count = self.store.audit_count()
        return {"entries": count, "last_seq": self.head()[0]}

    def query(self, *, since: str | None = None, target: str | None = None, op: str | None = None,
              after: int = 0, upto: int | None = None,
              visible: Callable[[str | None], bool] | None = None) -> Iterator[dict]:
        """Entries in seq order. `since` is an RFC 3339 time, `target` also matches one name of a
        multi-name entry (exec), `op` may be a glob (`key.*`), `visible` filters by namespace."""
        for _, text, mac, tgt in self.store.audit_query(after=after, upto=upto, since=since, op=op, target=target):
            if visible is None or visible(tgt):
                yield to_entry(text, mac)

    def follow(self, *, after: int, interval: float = 0.5, sleep: Callable[[float], None] = time.sleep,
               skip: Callable[[dict], bool] | None = None, **filters) -> Iterator[dict]:
        """Poll for entries after seq `after` and yield them as they land, until the caller stops."""
        while True:
            top = self.store.max_audit_seq()
            if top > after:
                for entry in self.query(after=after, upto=top, **filters):
                    if skip is None or not skip(entry):
                        yield entry
                after = top
            sleep(interval)

    # -- retention -----------------------------------------------------------
    def prune(self, before: float) -> dict:
        """Delete the entries older than `before` (epoch seconds) and leave a checkpoint in their
        place. Inside the caller's write transaction; the chain is verified first, so pruning
        never hides damage."""
        if not self.store.in_transaction:
            raise RuntimeError("prune runs inside the operation's transaction")
        self._verify(bound_rows=False)
        cutoff = durations.rfc3339(before)
        found = self.store.audit_prunable(cutoff, CHECKPOINT)
        if found is None:
            return {"pruned": 0, "before": cutoff, "checkpoint": None}
        last, count, first, last_mac = found
        self.store.delete_audit_upto(last)
        info = {"pruned": count, "first": first, "last": last, "before": cutoff}
        self._insert(self.make_entry(last, last_mac, CHECKPOINT, extra=info))
        return {"pruned": count, "before": cutoff, "checkpoint": last}

    # -- master rotate -------------------------------------------------------
    def rekey(self, new_key: bytes, verified: bool = False) -> None:
        """Re-MAC every entry and the head under a new audit key (the root key changed), in the
        caller's transaction. The chain is verified under the old key first: damage is never
        laundered into a valid chain. Each `prev` is mapped to the re-MACed predecessor; a
        `prev` naming a pruned entry (after a checkpoint) or the genesis stays as it is."""
        if not self.store.in_transaction:
            raise RuntimeError("rekey runs inside the operation's transaction")
        if not verified:
            self._verify(bound_rows=False)
        new = AuditLog(self.store, new_key, self.actor)
        renamed: dict[str, str] = {}
        updates = []
        rows = [(r[0], r[1], r[2]) for batch in self.store.audit_batches() for r in batch]
        for seq, text, mac in rows:
            body = json.loads(text)
            body["prev"] = renamed.get(body["prev"], body["prev"])
            data = canonical(body)
            new_mac = new._fast.hex(data)
            renamed[mac] = new_mac
            updates.append((data.decode(), new_mac, seq))
        self.store.rewrite_audit(updates)
        has_head = self.store.audit_head()
        self.key, self._fast = new_key, new._fast
        if has_head:
            head_mac = bytes(has_head[1]).decode("ascii")
            self._set_head(has_head[0], renamed.get(head_mac, head_mac))
