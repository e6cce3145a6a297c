"""Rotation policies per namespace (spec section 9): a schedule per key purpose and a grace.

A policy row is authenticated like key state (`rows.PolicyRecord`) and every change is audited
(`policy.set`, `policy.rm`, target `policy:NS`: a name never holds a colon). A key without a
schedule of its own takes its purpose's period from the nearest enclosing namespace's policy
(`app/prod` beats `app`, which beats the root policy ""), at the time it is asked: a policy set
later applies to keys made before it. `key rotate --due` gives the old versions that policy's grace.
"""

from __future__ import annotations

import json

from kms_cli import durations, names
from kms_cli.errors import NotFoundError, UsageError
from kms_cli.vault import rows

PURPOSES = ("encrypt", "sign")


def target(namespace: str) -> str:
    return "policy:" + namespace


def _full(vault, namespace: str) -> str:
    """NS under --namespace; "" is the current namespace itself (the root policy without one)."""
    if not namespace:
        return vault.ns.prefix
    names.validate(namespace, "namespace")
    return vault.ns.full(namespace)


def describe(vault, p: rows.PolicyRecord) -> dict:
    every = json.loads(p.row["rotate_every"])
    ns = p.namespace
    shown = vault.ns.relative(ns) if vault.ns.prefix and vault.ns.contains(ns) and ns != vault.ns.prefix else ns
    return {"namespace": shown,
            "rotate_every": {k: durations.format_duration(v) for k, v in sorted(every.items())},
            "grace": durations.format_duration(p.row["grace"]) if p.row["grace"] else None}


def parse_schedules(items: list[str]) -> dict[str, int]:
    """`encrypt=90d`, `sign=P1Y` -> {purpose: seconds}; a purpose twice or an unknown one is exit 2."""
    out: dict[str, int] = {}
    for item in items:
        purpose, eq, dur = item.partition("=")
        if not eq or not dur:
            raise UsageError(f"invalid --rotate-every {item!r}: expected PURPOSE=DUR", hint="e.g. encrypt=90d")
        if purpose not in PURPOSES:
            raise UsageError(f"unknown key purpose {purpose!r}", hint="a purpose is encrypt or sign")
        if purpose in out:
            raise UsageError(f"--rotate-every {purpose}= given twice")
        seconds = durations.parse_duration(dur)
        if seconds <= 0:
            raise UsageError(f"the rotation period of {purpose} must be more than zero")
        out[purpose] = seconds
    return out


def set_(vault, namespace: str, schedules: dict[str, int], grace: int | None) -> dict:
    """Create or update a policy: the purposes given replace theirs, the others stay; --grace too."""
    if not schedules and grace is None:
        raise UsageError("nothing to set", hint="give --rotate-every PURPOSE=DUR and/or --grace DUR")
    if grace is not None and grace < 0:
        raise UsageError("--grace must not be negative")
    full = _full(vault, namespace)
    with vault.operation("policy.set", target(full)) as rec:
        now = durations.now()
        p = rows.load_policy(vault, full) or rows.new_policy(full, now)
        every = json.loads(p.row["rotate_every"])
        every.update(schedules)
        p.row.update(rotate_every=json.dumps(every, sort_keys=True), updated=now)
        if grace is not None:
            p.row["grace"] = grace or None
        p.save(vault)
        rec.extra = {"rotate_every": every, "grace": p.row["grace"]}
        return describe(vault, p)


def show(vault, namespace: str | None) -> dict | list[dict]:
    with vault.operation("policy.show", target(_full(vault, namespace)) if namespace is not None else None,
                         write=False):
        if namespace is not None:
            p = rows.load_policy(vault, _full(vault, namespace))
            if p is None:
                raise NotFoundError(f"no policy for {namespace or '(the root)'!r}")
            return describe(vault, p)
        return [describe(vault, p) for p in rows.load_policies(vault)
                if not vault.ns.prefix or p.namespace == vault.ns.prefix or vault.ns.contains(p.namespace)]


def rm(vault, namespace: str) -> dict:
    full = _full(vault, namespace)
    with vault.operation("policy.rm", target(full)):
        p = rows.load_policy(vault, full)
        if p is None:
            raise NotFoundError(f"no policy for {namespace or '(the root)'!r}")
        vault.store.delete_policy(full)
        return describe(vault, p)


class Policies:
    """Every policy, loaded (verified) once: which one governs a name, for a purpose."""

    def __init__(self, vault):
        self.by_ns = {p.namespace: p for p in rows.load_policies(vault)}

    def governing(self, full_name: str, purpose: str | None) -> tuple[str, int, int | None] | None:
        """(namespace, period, grace) of the nearest enclosing policy with a schedule for `purpose`."""
        parts = full_name.split("/")[:-1]
        for i in range(len(parts), -1, -1):
            ns = "/".join(parts[:i])
            p = self.by_ns.get(ns)
            if p is None:
                continue
            every = json.loads(p.row["rotate_every"])
            if purpose in every:
                return ns, every[purpose], p.row["grace"]
        return None

    def grace_for(self, full_name: str) -> int | None:
        """The grace of the nearest enclosing policy that sets one."""
        parts = full_name.split("/")[:-1]
        for i in range(len(parts), -1, -1):
            p = self.by_ns.get("/".join(parts[:i]))
            if p is not None and p.row["grace"]:
                return p.row["grace"]
        return None
