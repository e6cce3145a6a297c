"""The append-only, hash-chained audit log and its verification.

Each entry's `mac` is HMAC-SHA-256 under the audit subkey over the canonical
JSON of the entry without `mac` (keys sorted, no spaces), which includes `prev`,
the previous entry's mac. The head row holds the last seq and mac, sealed with
its own MAC, so deleting the newest entries is detected. `audit prune` replaces
old entries by one checkpoint entry whose `prev` is the pruned tail's mac.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kms_cli import durations
from kms_cli.crypto.primitives import equal, hmac_sha256
from kms_cli.errors import IntegrityError, KmsError

GENESIS = "0" * 64


def canonical(entry: dict) -> bytes:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def result_of(exc: BaseException | None) -> tuple[str, str | None]:
    if exc is None:
        return "ok", None
    if isinstance(exc, KmsError):
        return ("denied" if exc.exit_code in (3, 4, 6, 8) else "error"), exc.code
    return "error", "internal"


class AuditLog:
    def __init__(self, store, key: bytes, actor: dict):
        self.store = store
        self.key = key
        self.actor = actor

    def _mac(self, entry: dict) -> str:
        return hmac_sha256(self.key, canonical(entry)).hex()

    def _head_seal(self, seq: int, mac: str) -> str:
        return hmac_sha256(self.key, b"kms-cli/audit-head/v1\x00" + str(seq).encode() + b"\x00" + mac.encode()).hex()

    def head(self) -> tuple[int, str]:
        row = self.store.one("SELECT seq, mac FROM audit_head WHERE id = 1")
        return (row["seq"], row["mac"]) if row else (0, GENESIS)

    def append(self, op: str, target: str | None = None, version: int | None = None,
               result: str = "ok", error: str | None = None, extra: dict | None = None) -> dict:
        """Append one entry; the caller holds the write transaction."""
        if not self.store.in_transaction:
            raise RuntimeError("audit entries are written inside the operation's transaction")
        seq, prev = self.head()
        entry = {
            "seq": seq + 1,
            "time": durations.rfc3339(durations.now()),
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
        try:
            self.store.run(
                "INSERT INTO audit (seq, time, entry, op, target, mac) VALUES (?, ?, ?, ?, ?, ?)",
                (entry["seq"], entry["time"], canonical(entry).decode(), op, target, entry["mac"]),
            )
            self.store.run(
                "INSERT INTO audit_head (id, seq, mac, seal) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, seal = excluded.seal",
                (entry["seq"], entry["mac"], self._head_seal(entry["seq"], entry["mac"])),
            )
        except Exception as exc:  # fail closed: the operation does not happen without its entry
            raise KmsError("could not write the audit entry; the operation was not performed") from exc
        return entry

    # -- verification --------------------------------------------------------
    def verify(self) -> "VerifyResult":
        """Check the whole chain and the head. Returns counts; raises IntegrityError on damage."""
        expected_seq = None
        prev = GENESIS
        count = 0
        last_seq, last_mac = 0, GENESIS
        cur = self.store.conn.execute("SELECT seq, entry, mac FROM audit ORDER BY seq")
        key = self.key
        from kms_cli.crypto.primitives import hmac_sha256 as mac_fn

        while True:
            rows = cur.fetchmany(10_000)
            if not rows:
                break
            for seq, text, mac in rows:
                try:
                    entry = json.loads(text)
                except ValueError:
                    raise IntegrityError(f"audit chain broken at seq {seq}: altered (unreadable entry)") from None
                body = text.encode()
                if not equal(mac_fn(key, body).hex().encode(), mac.encode()) or entry.get("seq") != seq:
                    raise IntegrityError(f"audit chain broken at seq {seq}: altered")
                if expected_seq is None:
                    # The first entry: genesis, or a checkpoint left by `audit prune`.
                    if seq != 1 and entry.get("op") != "audit.checkpoint":
                        raise IntegrityError(f"audit chain broken at seq {seq}: missing entries before it")
                    if seq == 1 and entry.get("prev") != GENESIS:
                        raise IntegrityError(f"audit chain broken at seq {seq}: altered")
                else:
                    if seq != expected_seq:
                        raise IntegrityError(f"audit chain broken at seq {expected_seq}: missing")
                    if entry.get("prev") != prev:
                        raise IntegrityError(f"audit chain broken at seq {seq}: reordered or missing predecessor")
                prev = mac
                expected_seq = seq + 1
                last_seq, last_mac = seq, mac
                count += 1
        row = self.store.one("SELECT seq, mac, seal FROM audit_head WHERE id = 1")
        if row is None:
            if count:
                raise IntegrityError("audit head is missing: head mismatch")
            return VerifyResult(0, 0)
        if not equal(self._head_seal(row["seq"], row["mac"]).encode(), row["seal"].encode()):
            raise IntegrityError(f"audit head mismatch: the head seal does not verify (seq {row['seq']})")
        if row["seq"] > last_seq:
            raise IntegrityError(f"audit chain truncated: entries after seq {last_seq} up to {row['seq']} are missing")
        if row["seq"] != last_seq or row["mac"] != last_mac:
            raise IntegrityError(f"audit head mismatch at seq {last_seq}: the head names seq {row['seq']}")
        return VerifyResult(count, last_seq)


@dataclass
class VerifyResult:
    entries: int
    last_seq: int
