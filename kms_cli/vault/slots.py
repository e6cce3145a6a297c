"""Slots and master operations: add, list, remove a master key source; rotate the root key."""

from __future__ import annotations

from kms_cli import durations
from kms_cli.crypto.primitives import random_bytes
from kms_cli.errors import AlreadyExistsError, NotFoundError, StateError, UsageError
from kms_cli.providers import from_uri
from kms_cli.vault.core import CONTEXT_KEY, Subkeys, slot_tag


def _describe(vault, row) -> dict:
    try:
        uri = from_uri(row["uri"], vault.options.source).masked_uri()
    except Exception:  # a source whose module cannot load is still listed
        uri = row["uri"]
    return {
        "slot": row["id"],
        "source": uri,
        "scheme": uri.split(":", 1)[0],
        "created": durations.rfc3339(row["created"]),
        "last_used": durations.rfc3339(row["last_used"]),
        "current": row["id"] == vault.slot_id,
    }


def list_slots(vault) -> list[dict]:
    with vault.operation("master.list", write=False):
        return [_describe(vault, r) for r in vault.store.slots()]


def add(vault, uri: str, options) -> dict:
    source = from_uri(uri, options)
    with vault.operation("master.add", source.masked_uri()) as rec:
        for row in vault.store.slots():
            if row["uri"] == source.uri:
                raise AlreadyExistsError(f"slot {row['id']} already uses {source.masked_uri()}")
        blob = source.wrap(vault._root, vault.context)
        # prove the new seal opens before it is trusted with the vault
        if source.unwrap(blob, vault.context) != vault._root:
            raise StateError(f"the source {source.masked_uri()} did not return the sealed key")
        slot_id = vault.store.next_slot_id()
        vault._add_slot_row(slot_id, source.uri, blob)
        rec.extra = {"slot": slot_id}
        return _describe(vault, vault.store.one("SELECT * FROM slots WHERE id = ?", (slot_id,)))


def _slot_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"invalid slot {text!r}: expected a slot number", hint="see `kms-cli master list`") from None


def remove(vault, slot: str) -> dict:
    slot_id = _slot_id(slot)
    with vault.operation("master.remove", str(slot_id)):
        rows = vault.store.slots()
        row = next((r for r in rows if r["id"] == slot_id), None)
        if row is None:
            raise NotFoundError(f"no slot {slot_id}", hint="see `kms-cli master list`")
        if len(rows) == 1:
            raise StateError("cannot remove the last slot: the vault could never be unlocked again",
                             hint="add another with `kms-cli master add SOURCE` first")
        desc = _describe(vault, row)
        vault.store.remove_slot(slot_id)
        return desc


def rotate(vault) -> dict:
    """A new root key: every key version's material, every secret value and every slot re-sealed,
    and the audit chain re-MACed, in one transaction. Data ciphertexts stay valid: their data
    keys are wrapped by key versions, whose material does not change."""
    with vault.operation("master.rotate") as rec:
        new_root = random_bytes(32)
        new = Subkeys.derive(new_root, vault.vault_id)
        # every slot first: if one source cannot seal, nothing changes
        sealed = []
        for row in vault.store.slots():
            source = from_uri(row["uri"], vault.options.source)
            blob = source.wrap(new_root, {CONTEXT_KEY: vault.vault_id.hex()})
            sealed.append((row["id"], row["uri"], blob))
        counts = {"key_versions": 0, "secret_versions": 0, "slots": len(sealed)}
        for v in vault.store.all_key_versions():
            changes = {}
            if v["material"] is not None:
                algorithm = vault.store.key(v["name"])["algorithm"]
                material = vault.open_material(v["name"], v["version"], algorithm, v["material"])
                public = (vault.open_material(v["name"], v["version"], algorithm, v["public"], kind="public")
                          if v["public"] is not None else None)
                changes["material"] = vault.seal_material(v["name"], v["version"], algorithm, material, keys=new)
                if public is not None:
                    changes["public"] = vault.seal_material(v["name"], v["version"], algorithm, public,
                                                            kind="public", keys=new)
                vault.store.update_key_version(v["name"], v["version"], **changes)
                counts["key_versions"] += 1
        for s in vault.store.all_secret_versions():
            value = vault.open_secret(s["name"], s["version"], s["value"], s["expires"])
            vault.store.update_secret_value(s["name"], s["version"],
                                            vault.seal_secret(s["name"], s["version"], value, s["expires"], keys=new))
            counts["secret_versions"] += 1
        from kms_cli.vault import keys as key_policy

        for k in vault.store.keys():
            key_policy.reseal_rows(vault, k["name"], keys=new)
        for slot_id, uri, blob in sealed:
            vault.store.update_slot(slot_id, blob, slot_tag(new.slot, vault.vault_id, slot_id, uri, blob))
        vault.audit.rekey(new.audit)
        vault._root, vault.subkeys = new_root, new
        rec.extra = counts
        return counts
