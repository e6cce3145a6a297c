"""Handing an unlocked vault to the agent (`kms-cli unlock`): the policy side.

The unlocking process writes the `agent.unlock` entry (fail-closed: no entry, nothing handed
over) and gives the agent what it needs to run commands without unlocking again: the root key,
the slot it came from, and the slot set it was valid for (a change of slots makes the agent
forget the vault).
"""

from __future__ import annotations

import os


def slots_fingerprint(slots) -> bytes:
    """What identifies a slot set: every slot's id and sealed blob (sealed material, not secret)."""
    return b"|".join(b"%d:%s" % (s["id"], bytes(s["blob"]).hex().encode()) for s in slots)


def hand_over(vault, idle: int, max_: int) -> dict:
    """The `agent.unlock` entry, then what the agent holds: path, vault id, root key, slot, slots."""
    with vault.operation("agent.unlock") as rec:
        rec.extra = {"idle": idle, "max": max_}
        with vault.store.read():
            fingerprint = slots_fingerprint(vault.store.slots())
    return {"path": os.path.realpath(vault.options.path), "vault_id": vault.vault_id.hex(), "root": vault._root,
            "slot_id": vault.slot_id, "fingerprint": fingerprint}
