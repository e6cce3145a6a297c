"""Slots and master operations: add, list, remove a master key source; rotate the root key."""

from __future__ import annotations

from kms_cli import durations
from kms_cli.crypto.primitives import random_bytes
from kms_cli.errors import AlreadyExistsError, NotFoundError, StateError, UsageError
from kms_cli.providers import from_uri
from kms_cli.vault import rows as state_rows
from kms_cli.vault.hierarchy import CONTEXT_KEY, Subkeys, slot_tag


def new_master_key() -> str:
    """A new random 32-byte master key for an `env:` source, as 64 hex characters."""
    return random_bytes(32).hex()


def _describe(vault, row) -> dict:
    uri = row["uri"]  # a source URI never holds a secret (each provider refuses one that would)
    return {
        "slot": row["id"],
        "source": uri,
        "scheme": uri.split(":", 1)[0],
        "created": durations.rfc3339(row["created"]),
        "last_used": durations.rfc3339(row["last_used"]),
        "label": row["label"],
        "current": row["id"] == vault.slot_id,
    }


LABEL_MAX = 100


def check_label(label: str | None) -> str | None:
    """A slot's label: who or what holds it ("alice", "ci runner"); one printable line, trimmed."""
    if label is None:
        return None
    text = label.strip()
    if not text or len(text) > LABEL_MAX or not text.isprintable():
        raise UsageError(f"invalid label: one printable line of 1 to {LABEL_MAX} characters expected",
                         hint='for example --label "alice (laptop)"')
    return text


def _audit_extra(slot_id: int, label: str | None) -> dict:
    return {"slot": slot_id} if label is None else {"slot": slot_id, "label": label}


def list_slots(vault) -> list[dict]:
    with vault.operation("master.list", write=False):
        return [_describe(vault, r) for r in vault.store.slots()]


def add(vault, uri: str, options, label: str | None = None) -> dict:
    label = check_label(label)
    source = from_uri(uri, options)
    with vault.operation("master.add", source.uri) as rec:
        for row in vault.store.slots():
            if row["uri"] == source.uri:
                raise AlreadyExistsError(f"slot {row['id']} already uses {source.uri}")
        blob = source.wrap(vault._root, vault.context)
        # prove the new seal opens before it is trusted with the vault (a recipient's identity is
        # its holder's, not here: that seal is an age file to a key parsed and checked just now)
        if source.scheme != "recipient" and source.unwrap(blob, vault.context) != vault._root:
            raise StateError(f"the source {source.uri} did not return the sealed key")
        slot_id = vault.store.next_slot_id()
        vault._add_slot_row(slot_id, source.uri, blob, label)
        state_rows.seal_slot_set(vault)
        rec.extra = _audit_extra(slot_id, label)
        return _describe(vault, vault.store.slot(slot_id))


def recipient_lines(data: bytes, name: str) -> list[tuple[int, str, str | None]]:
    """(line number, recipient, label) of a recipients file as age -R reads it: # comments and blank
    lines skipped, CRLF and a UTF-8 BOM accepted; a line that is not a recipient is exit 2 naming it.
    The label is the comment line right above the recipient (`# alice`), if any."""
    from kms_cli.providers import scheme_of

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text") from None
    out, comment = [], None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            comment = line.lstrip("#").strip() or None if line else None
            continue
        try:
            ok = scheme_of(line) == "recipient"
        except UsageError:
            ok = False
        if not ok:
            raise UsageError(f"{name} line {number}: not a recipient",
                             hint="a line is age1..., age1pq1... or ssh-ed25519 AAAA... (# starts a comment)")
        label = comment if comment is not None and len(comment) <= LABEL_MAX and comment.isprintable() else None
        out.append((number, line, label))
        comment = None
    if not out:
        raise UsageError(f"{name} holds no recipient")
    return out


def add_recipients(vault, lines: list[tuple[int, str, str | None]], options,
                   label: str | None = None) -> list[dict]:
    """One slot per recipient, in one transaction (all or nothing), one master.add entry each.
    A recipient's label is its line's (the comment above it), else `label`."""
    default = check_label(label)
    sources = []
    for number, line, own in lines:
        try:
            sources.append((from_uri(line, options), own or default))
        except UsageError as exc:
            raise UsageError(f"line {number}: {exc.message}", hint=exc.hint) from None
    added = []
    with vault.operation("master.add-recipients", None) as rec:
        taken = {r["uri"] for r in vault.store.slots()}
        for source, slot_label in sources:
            if source.uri in taken:
                raise AlreadyExistsError(f"a slot already uses {source.uri}")
            taken.add(source.uri)
            slot_id = vault.store.next_slot_id()
            vault._add_slot_row(slot_id, source.uri, source.wrap(vault._root, vault.context), slot_label)
            added.append((slot_id, slot_label))
        state_rows.seal_slot_set(vault)
        for slot_id, slot_label in added:
            vault.audit.append("master.add", vault.store.slot(slot_id)["uri"], None,
                               extra=_audit_extra(slot_id, slot_label))
        added = [slot_id for slot_id, _ in added]
        rec.extra = {"slots": added}
        return [_describe(vault, vault.store.slot(i)) for i in added]


def _slot_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"invalid slot {text!r}: expected a slot number", hint="see `kms-cli master list`") from None


def _removable(slots, slot_id: int):
    """The row of slot `slot_id`, which may be removed: it exists and is not the last one."""
    row = next((r for r in slots if r["id"] == slot_id), None)
    if row is None:
        raise NotFoundError(f"no slot {slot_id}", hint="see `kms-cli master list`")
    if len(slots) == 1:
        raise StateError("cannot remove the last slot: the vault could never be unlocked again",
                         hint="add another with `kms-cli master add SOURCE` first")
    return row


def remove(vault, slot: str, rotate_root: bool = False, progress=None) -> dict:
    """Remove a slot; with `rotate_root`, in the same transaction as a new root key (`rotate`), so
    what the removed holder kept of the old root opens nothing written from now on."""
    slot_id = _slot_id(slot)
    if rotate_root:
        return rotate(vault, progress, drop=slot_id)
    with vault.operation("master.remove", str(slot_id)) as rec:
        desc = _describe(vault, _removable(vault.store.slots(), slot_id))
        rec.extra = _audit_extra(slot_id, desc["label"]) | {"source": desc["source"]}
        vault.store.remove_slot(slot_id)
        state_rows.seal_slot_set(vault)
        return desc


def rotate(vault, progress=None, *, drop: int | None = None) -> dict:
    """A new root key: every key version's material, every secret value and every slot re-sealed,
    and the audit chain re-MACed, in one transaction. Every row is authenticated under the old
    key before it is rewritten (an edited row stops the rotation: it is never laundered into a
    valid one). Data ciphertexts stay valid: their data keys are wrapped by key versions, whose
    material does not change. `progress(done, total)`: keys and secrets re-sealed so far.
    `drop`: a slot removed in the same transaction (`master remove --rotate`): never sealed to."""
    op, target = ("master.remove", str(drop)) if drop is not None else ("master.rotate", None)
    with vault.operation(op, target) as rec:
        # everything verified first, under the old keys: rows, slots, the audit chain
        state_rows.verify_all(vault)
        vault.audit.verify()
        slots = vault.store.slots()
        removed = None
        if drop is not None:
            removed = _describe(vault, _removable(slots, drop))
        new_root = random_bytes(32)
        new = Subkeys.derive(new_root, vault.vault_id)
        # every slot next: if one source cannot seal, nothing changes
        sealed = []
        for row in slots:
            if row["id"] == drop:
                continue
            source = from_uri(row["uri"], vault.options.source)
            blob = source.wrap(new_root, {CONTEXT_KEY: vault.vault_id.hex()})
            sealed.append((row["id"], row["uri"], blob))
        counts = {"key_versions": 0, "secret_versions": 0, "slots": len(sealed)}
        keys = state_rows.load_keys(vault)
        secrets = state_rows.load_secrets(vault, deleted=True)
        total, done = len(keys) + len(secrets), 0
        for k in keys:
            algorithm = k.row["algorithm"]
            for v in k.ordered():
                n = v["version"]
                if v["material"] is not None:
                    material = vault.open_material(k.name, n, algorithm, v["material"])
                    k.set_version(n, material=vault.seal_material(k.name, n, algorithm, material, keys=new))
                    counts["key_versions"] += 1
                if v["public"] is not None:
                    public = vault.open_material(k.name, n, algorithm, v["public"], kind="public")
                    k.set_version(n, public=vault.seal_material(k.name, n, algorithm, public, kind="public",
                                                                keys=new))
            k.save(vault, keys=new, everything=True)
            done += 1
            if progress is not None:
                progress(done, total)
        for srec in secrets:
            for v in srec.versions(vault):
                value = vault.open_secret(srec.name, v["version"], v["value"], v["expires"])
                v["value"] = vault.seal_secret(srec.name, v["version"], value, v["expires"], keys=new)
                srec.rewrite_version(v)
                counts["secret_versions"] += 1
            srec.save(vault, keys=new)
            done += 1
            if progress is not None:
                progress(done, total)
        for policy in state_rows.load_policies(vault):
            policy.save(vault, keys=new)
        for token in state_rows.load_tokens(vault):
            token.save(vault, keys=new)
        from kms_cli.vault.tokens import reseal_token_key

        reseal_token_key(vault, new.material)
        if drop is not None:
            vault.store.remove_slot(drop)
        for slot_id, uri, blob in sealed:
            vault.store.update_slot(slot_id, blob, slot_tag(new.slot, vault.vault_id, slot_id, uri, blob))
        state_rows.seal_slot_set(vault, keys=new)
        vault.audit.rekey(new.audit, verified=True)
        vault._root, vault.subkeys = new_root, new
        vault._slot_blob = next((b for i, _, b in sealed if i == vault.slot_id), None)
        rec.extra = counts if removed is None else {
            **counts, "rotate": True, **_audit_extra(drop, removed["label"]), "source": removed["source"]}
        return counts if removed is None else {**removed, "rotated": counts}
