"""Audit policy over an unlocked vault: log, follow, verify and prune, each itself audited.

The chain itself (entries, MACs, verification) is `kms_cli.audit`; this module decides what a
command may see (its namespace), records what it read, and refuses what it may not do.
"""

from __future__ import annotations

from typing import Callable, Iterator

from kms_cli import durations
from kms_cli.audit import VerifyResult
from kms_cli.errors import UsageError


def _visible(vault) -> Callable[[str | None], bool] | None:
    """With --namespace, only entries whose every target lies inside it: nothing outside is detected."""
    ns = vault.ns
    if not ns.prefix:
        return None

    def visible(target: str | None) -> bool:
        return bool(target) and all(t == ns.prefix or ns.contains(t) for t in target.split(","))

    return visible


def _filters(vault, since: int | None, target: str | None, op: str | None) -> dict:
    return {
        "since": durations.rfc3339(durations.now() - since) if since is not None else None,
        "target": vault.ns.full(target) if target else None,
        "op": op,
        "visible": _visible(vault),
    }


def log(vault, *, since: int | None = None, target: str | None = None, op: str | None = None,
        emit: Callable[[dict], None], op_name: str = "audit.log") -> int:
    """Stream the matching entries (one snapshot) to `emit`, then record the read; returns the last seq read."""
    filters = _filters(vault, since, target, op)
    with vault.operation(op_name, filters["target"], write=False) as rec:
        with vault.store.read():
            top = vault.store.max_audit_seq()
            count = 0
            for entry in vault.audit.query(upto=top, **filters):
                emit(entry)
                count += 1
        rec.extra = {"entries": count}
    return top


def follow(vault, *, after: int, since: int | None = None, target: str | None = None, op: str | None = None,
           interval: float = 0.5) -> Iterator[dict]:
    """Entries landing after seq `after`, forever (the caller stops on interrupt). This process's
    own `audit.log` entry is not echoed back."""
    import os
    import socket

    me = (os.getpid(), socket.gethostname())

    def own(entry: dict) -> bool:
        a = entry.get("actor") or {}
        return entry["op"] == "audit.log" and (a.get("pid"), a.get("host")) == me

    yield from vault.audit.follow(after=after, interval=interval, skip=own, **_filters(vault, since, target, op))


def verify(vault, progress: Callable[[int, int | None], None] | None = None) -> VerifyResult:
    """Verify the chain and head (before this command's own entry is appended), then record it.
    `progress(done, total)`: entries checked so far."""
    with vault.operation("audit.verify", write=False) as rec:
        result = vault.audit.verify(progress=progress)
        rec.extra = {"entries": result.entries, "last_seq": result.last_seq}
    return result


def prune(vault, before: int) -> dict:
    """Prune entries older than `before` seconds ago; the prune is itself an entry, in the same transaction."""
    if vault.ns.prefix:
        raise UsageError("audit prune acts on the whole vault's log", hint="run it without --namespace")
    if before < 0:
        raise UsageError("--before must not be negative")
    with vault.operation("audit.prune") as rec:
        info = vault.audit.prune(durations.now() - before)
        rec.extra = {k: v for k, v in info.items() if v is not None}
    return info
