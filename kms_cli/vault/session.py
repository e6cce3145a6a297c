"""Handing an unlocked vault to the agent (`kms-cli unlock`): the policy side.

The unlocking process writes the `agent.unlock` entry (fail-closed: no entry, nothing handed
over) and gives the agent what it needs to run commands without unlocking again: the root key,
the slot it came from, and the slot set it was valid for (a change of slots makes the agent
forget the vault), and the file it lives in (a restore or another vault put at that path, too).
"""

from __future__ import annotations

import os


def identity(path: str, slots) -> bytes:
    """What the agent checks before it serves the vault at `path`: the file (device and inode: a
    restore puts another file there) and every slot's id and sealed blob (sealed, not secret)."""
    from kms_cli.locations import canonical, is_uri

    if is_uri(path):  # a database vault: its place, credential-free (init --force there makes a new vault id)
        return b"pg:" + canonical(path).encode() + b"|" + b"|".join(
            b"%d:%s" % (s["id"], bytes(s["blob"]).hex().encode()) for s in slots)
    st = os.stat(path)
    return b"%d:%d|" % (st.st_dev, st.st_ino) + b"|".join(b"%d:%s" % (s["id"], bytes(s["blob"]).hex().encode())
                                                         for s in slots)


def hand_over(vault, idle: int | None, max_: int | None) -> dict:
    """The `agent.unlock` entry, then what the agent holds: path, vault id, root key, slot, slots.
    `idle`/`max_`: seconds asked for (None: the agent's defaults)."""
    with vault.operation("agent.unlock") as rec:
        rec.extra = {k: v for k, v in (("idle", idle), ("max", max_)) if v is not None}
        with vault.store.read():
            fingerprint = identity(vault.options.path, vault.store.slots())
    from kms_cli.locations import held_form

    return {"path": held_form(vault.options.path), "vault_id": vault.vault_id.hex(), "root": vault._root,
            "slot_id": vault.slot_id, "fingerprint": fingerprint}
