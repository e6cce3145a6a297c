"""Authenticated state rows: the one loader that verifies key, secret and slot rows, the one sealer.

Every row that carries state (a key, a key version, a secret's head and each of its versions,
the set of slots) has a MAC under the row subkey (the slot set: the slot subkey) over its
state fields, its vault and the audit seq of the operation that last wrote it. The seq ties
state to the log: a log shorter than any row's seq was truncated or rolled back
(`audit verify` and `health` check it).

Rows are read through the loaders here, which verify before they return anything. Only a
record a loader produced, or one being created, can be sealed again: `KeyRecord` and
`SecretRecord` can only be built with this module's token, and `save` is the only code that
computes a row MAC. So an edited row is refused, never re-MACed into validity.
"""

from __future__ import annotations

from kms_cli.binding import bind
from kms_cli.crypto.primitives import equal, hmac_sha256
from kms_cli.errors import IntegrityError

AUTH_VERSION = "2"
# The ops whose successful entries change a key's or a secret's rows. An operation writes its
# rows, then appends its entries, so a row records the seq of the first entry after it and no
# later successful entry of these ops names its target: if one does, the row is an older
# authentic copy put back in place (a rollback or a resurrection) and is refused.
KEY_WRITES = ("key.create", "key.rotate", "key.revoke", "key.enable", "key.disable", "key.destroy",
              "key.cancel-destroy", "key.destroyed")
SECRET_WRITES = ("secret.put", "secret.rm", "secret.rotate")
POLICY_WRITES = ("policy.set", "policy.rm")
TOKEN_WRITES = ("token.create", "token.revoke")
_TOKEN = object()
_EDITED = "the vault file was edited outside kms-cli; restore a backup"


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def _opt(x: str | None) -> bytes:
    """An optional text: absent and empty differ."""
    return b"\x00" if x is None else b"\x01" + x.encode()


def _int(x) -> str:
    return "" if x is None else str(int(x))


def _mac(key: bytes, vault_id: bytes, label: str, *parts) -> bytes:
    return hmac_sha256(key, bind(label, vault_id, *parts))


def key_mac(row_key: bytes, vault_id: bytes, k, nversions: int) -> bytes:
    """Over the key's state and how many versions it has (versions are never deleted, so a
    version row removed from the file is detected)."""
    return _mac(row_key, vault_id, "key-row/v2", k["name"], k["algorithm"], k["state"], k["state_before"] or "",
                k["primary_version"], _num(k["destroy_at"]), _int(k["rotate_every"]), _num(k["next_rotation"]),
                _int(k["seq"]), nversions, _opt(k["description"]), k["labels"], _num(k["created"]), _num(k["updated"]))


def version_mac(row_key: bytes, vault_id: bytes, v) -> bytes:
    return _mac(row_key, vault_id, "key-version-row/v2", v["name"], v["version"], v["state"], _num(v["grace_until"]),
                _num(v["revoked"]), _num(v["destroyed"]), "material" if v["material"] is not None else "none",
                _num(v["superseded"]), v["fingerprint"] or "", _int(v["seq"]), _num(v["created"]),
                v["revoke_reason"] or "", "public" if v["public"] is not None else "none")


def secret_head_mac(row_key: bytes, vault_id: bytes, s) -> bytes:
    # A rotation (schedule, generator, outside program) is covered when there is one; a head without
    # one keeps the MAC it had before rotations existed (schema 4), so older vaults verify unchanged.
    rotation = s["rotation"] if "rotation" in s.keys() else None
    extra = () if rotation is None else ("rotation", rotation)
    return _mac(row_key, vault_id, "secret-row/v2", s["name"], s["last_version"], _int(s["deleted"]),
                _num(s["created"]), _num(s["updated"]), _int(s["seq"]), *extra)


def policy_mac(row_key: bytes, vault_id: bytes, p) -> bytes:
    return _mac(row_key, vault_id, "policy-row/v1", p["namespace"], p["rotate_every"], _int(p["grace"]),
                _num(p["created"]), _num(p["updated"]), _int(p["seq"]))


def token_mac(row_key: bytes, vault_id: bytes, t) -> bytes:
    return _mac(row_key, vault_id, "token-row/v1", t["name"], t["hash"], t["ops"], t["namespace"],
                _num(t["created"]), _num(t["expires"]), _num(t["revoked"]), _int(t["seq"]))


def secret_version_mac(row_key: bytes, vault_id: bytes, v) -> bytes:
    return _mac(row_key, vault_id, "secret-version-row/v2", v["name"], v["version"], _num(v["created"]),
                _num(v["expires"]), v["tags"], _int(v["seq"]))


def slot_set_mac(slot_key: bytes, vault_id: bytes, slots, seq: int, *, version: int = 3) -> bytes:
    """v3 covers each slot's label; v2 (vaults sealed before labels) only id, uri and tag."""
    parts = []
    for s in sorted(slots, key=lambda r: r["id"]):
        parts += [s["id"], s["uri"], s["tag"]]
        if version >= 3:
            parts.append(_opt(s["label"]))
    return _mac(slot_key, vault_id, f"slot-set/v{version}", str(seq), *parts)


def _ok(expected: bytes, stored) -> bool:
    return isinstance(stored, bytes) and equal(expected, stored)


# -- keys ------------------------------------------------------------------------------------

class KeyRecord:
    """A key row and all its version rows, authenticated together (see the module docstring)."""

    __slots__ = ("name", "row", "versions", "_new", "_dirty", "_dirty_versions", "_new_versions")

    def __init__(self, token, row: dict, versions: list[dict], *, new: bool = False):
        if token is not _TOKEN:
            raise TypeError("key records come from kms_cli.vault.rows.load_key or new_key only")
        self.name = row["name"]
        self.row = row
        self.versions = {v["version"]: v for v in versions}
        self._new = new
        self._dirty: set[str] = set()
        self._dirty_versions: set[int] = set()
        self._new_versions: set[int] = set()

    def __repr__(self) -> str:
        return f"KeyRecord({self.name!r}, versions={sorted(self.versions)})"

    def version(self, n: int) -> dict | None:
        return self.versions.get(n)

    def ordered(self) -> list[dict]:
        return [self.versions[n] for n in sorted(self.versions)]

    def set(self, **changes) -> None:
        self.row.update(changes)
        self._dirty.update(changes)

    def set_version(self, n: int, **changes) -> None:
        self.versions[n].update(changes)
        self._dirty_versions.add(n)

    def add_version(self, row: dict) -> None:
        row = dict(row)
        row.setdefault("superseded", None)
        row.setdefault("grace_until", None)
        row.setdefault("revoked", None)
        row.setdefault("revoke_reason", None)
        row.setdefault("destroyed", None)
        self.versions[row["version"]] = row
        self._new_versions.add(row["version"])

    def save(self, vault, *, keys=None, everything: bool = False) -> None:
        """Write what changed (or, with `everything`, every row: master rotate), MACed with this
        operation's audit seq. Inside the operation's write transaction."""
        store, seq = vault.store, vault.audit.next_seq()
        row_key = (keys or vault.subkeys).row
        if self._new or self._dirty or self._new_versions or everything:
            self.row["seq"] = seq
            self.row["mac"] = key_mac(row_key, vault.vault_id, self.row, len(self.versions))
            if self._new:
                store.insert_key(**self.row)
            else:
                store.update_key(self.name, **{c: self.row[c] for c in (*self._dirty, "seq", "mac")})
        for n, v in self.versions.items():
            is_new = n in self._new_versions
            if not (is_new or everything or n in self._dirty_versions):
                continue
            v["seq"] = seq
            v["mac"] = version_mac(row_key, vault.vault_id, v)
            if is_new:
                store.insert_key_version(**v)
            else:
                store.update_key_version(self.name, n, **{c: v[c] for c in v if c not in ("name", "version")})
        self._new = False
        self._dirty.clear()
        self._dirty_versions.clear()
        self._new_versions.clear()


def new_key(row: dict) -> KeyRecord:
    row = dict(row)
    for col in ("state_before", "description", "rotate_every", "next_rotation", "destroy_at"):
        row.setdefault(col, None)
    row.setdefault("labels", "{}")
    return KeyRecord(_TOKEN, row, [], new=True)


def _key_error(vault, name: str, version: int | None = None) -> IntegrityError:
    what = f"key {vault.ns.relative(name)!r}" + (f" version {version}" if version is not None else "")
    return IntegrityError(f"the state of {what} failed authentication", hint=_EDITED)


def verify_key_rows(vault, key_row, version_rows, keys=None) -> None:
    row_key = (keys or vault.subkeys).row
    if not _ok(key_mac(row_key, vault.vault_id, key_row, len(version_rows)), key_row["mac"]):
        raise _key_error(vault, key_row["name"])
    for v in version_rows:
        if v["name"] != key_row["name"] or not _ok(version_mac(row_key, vault.vault_id, v), v["mac"]):
            raise _key_error(vault, key_row["name"], v["version"])


def load_key(vault, full: str) -> KeyRecord | None:
    """The key `full` with every version, authenticated; None when there is no such key."""
    row = vault.store.key(full)
    if row is None:
        return None
    versions = vault.store.key_versions(full)
    verify_key_rows(vault, row, versions)
    _check_newest(vault, full, row["seq"], KEY_WRITES, f"key {vault.ns.relative(full)!r}")
    return KeyRecord(_TOKEN, dict(row), [dict(v) for v in versions])


def _check_newest(vault, full: str, seq: int, ops: tuple[str, ...], what: str) -> None:
    later = vault.store.written_since(full, seq, ops)
    if later is not None:
        raise IntegrityError(f"the state of {what} is older than audit entry {later} that changed it: "
                             "an older copy of it was put back", hint=_EDITED)


def load_keys(vault, under: str = "") -> list[KeyRecord]:
    """Every key inside the namespace `under` ("" = the whole vault), verified."""
    return [k for k in (load_key(vault, r["name"]) for r in vault.store.keys(under)) if k is not None]


# -- secrets ---------------------------------------------------------------------------------

class SecretRecord:
    """A secret's head (latest version, deleted flag), authenticated; its version rows are
    verified one by one as they are read."""

    __slots__ = ("name", "head", "_new_versions", "_dirty_versions")

    def __init__(self, token, head: dict):
        if token is not _TOKEN:
            raise TypeError("secret records come from kms_cli.vault.rows.load_secret or new_secret only")
        self.name = head["name"]
        self.head = head
        self._new_versions: list[dict] = []
        self._dirty_versions: dict[int, dict] = {}

    def __repr__(self) -> str:
        return f"SecretRecord({self.name!r}, last_version={self.head['last_version']})"

    @property
    def deleted(self) -> bool:
        return bool(self.head["deleted"])

    @property
    def last_version(self) -> int:
        return self.head["last_version"]

    def version(self, vault, n: int) -> dict | None:
        """Version `n`, authenticated (None when it does not exist or was deleted)."""
        if self.deleted or n > self.last_version or n < 1:
            return None
        row = vault.store.secret_version(self.name, n)
        if row is None:
            return None
        if not _ok(secret_version_mac(vault.subkeys.row, vault.vault_id, row), row["mac"]):
            raise IntegrityError(f"the metadata of secret {vault.ns.relative(self.name)!r} version {n} "
                                 "failed authentication", hint=_EDITED)
        return dict(row)

    def versions(self, vault) -> list[dict]:
        return [v for v in (self.version(vault, n) for n in range(1, self.last_version + 1)) if v is not None] \
            if not self.deleted else []

    def add_version(self, row: dict) -> None:
        self._new_versions.append(dict(row))
        self.head.update(last_version=row["version"], deleted=0, updated=row["created"])

    def rewrite_version(self, row: dict) -> None:
        """A version read through `version` (so verified), with a new value (master rotate), or
        one written before version rows had MACs (the upgrade)."""
        self._dirty_versions[row["version"]] = row

    def delete(self, when: float) -> None:
        self.head.update(deleted=1, updated=when, rotation=None)

    @property
    def rotation(self) -> dict | None:
        import json

        text = self.head.get("rotation")
        return None if text is None else json.loads(text)

    def set_rotation(self, rotation: dict | None) -> None:
        import json

        self.head["rotation"] = None if rotation is None else json.dumps(rotation, sort_keys=True,
                                                                         separators=(",", ":"))

    def save(self, vault, *, keys=None) -> None:
        store, seq = vault.store, vault.audit.next_seq()
        row_key = (keys or vault.subkeys).row
        if self.deleted:
            store.delete_secret_versions(self.name)
        for v in self._new_versions:
            v["seq"] = seq
            v["mac"] = secret_version_mac(row_key, vault.vault_id, v)
            store.insert_secret_version(**v)
        for v in self._dirty_versions.values():
            v["seq"] = seq
            v["mac"] = secret_version_mac(row_key, vault.vault_id, v)
            store.update_secret_version(self.name, v["version"], value=v["value"], seq=seq, mac=v["mac"])
        h = self.head
        h["seq"] = seq
        h["mac"] = secret_head_mac(row_key, vault.vault_id, h)
        store.put_secret_head(h["name"], h["last_version"], bool(h["deleted"]), h["created"], h["updated"],
                              seq, h["mac"], h.get("rotation"))
        self._new_versions, self._dirty_versions = [], {}


def new_secret(full: str, when: float) -> SecretRecord:
    return SecretRecord(_TOKEN, {"name": full, "last_version": 0, "deleted": 0, "created": when, "updated": when,
                                 "rotation": None})


def _check_secret_head(vault, row) -> None:
    if not _ok(secret_head_mac(vault.subkeys.row, vault.vault_id, row), row["mac"]):
        raise IntegrityError(f"the state of secret {vault.ns.relative(row['name'])!r} failed authentication",
                             hint=_EDITED)


def load_secret(vault, full: str) -> SecretRecord | None:
    """The secret `full`'s head, authenticated, and checked against its version rows (a head
    rolled back below a newer version, or a deleted secret with versions, is refused)."""
    row = vault.store.secret(full)
    if row is None:
        return None
    _check_secret_head(vault, row)
    _check_newest(vault, full, row["seq"], SECRET_WRITES, f"secret {vault.ns.relative(full)!r}")
    top = vault.store.max_secret_version(full)
    if (row["deleted"] and top) or (not row["deleted"] and top != row["last_version"]):
        raise IntegrityError(f"the versions of secret {vault.ns.relative(full)!r} do not match its state",
                             hint=_EDITED)
    return SecretRecord(_TOKEN, dict(row))


def load_secrets(vault, under: str = "", *, deleted: bool = False) -> list[SecretRecord]:
    """Every live secret inside the namespace `under` ("" = all; `deleted`: every head), verified."""
    out = []
    for row in vault.store.secrets(under) if not deleted else vault.store.all_secrets():
        rec = load_secret(vault, row["name"])
        if rec is not None:
            out.append(rec)
    return out


# -- policies --------------------------------------------------------------------------------

class PolicyRecord:
    """A namespace's rotation policy row, authenticated (see the module docstring)."""

    __slots__ = ("namespace", "row")

    def __init__(self, token, row: dict):
        if token is not _TOKEN:
            raise TypeError("policy records come from kms_cli.vault.rows.load_policy or new_policy only")
        self.namespace = row["namespace"]
        self.row = row

    def __repr__(self) -> str:
        return f"PolicyRecord({self.namespace!r})"

    def save(self, vault, *, keys=None) -> None:
        r = self.row
        r["seq"] = vault.audit.next_seq()
        r["mac"] = policy_mac((keys or vault.subkeys).row, vault.vault_id, r)
        vault.store.put_policy(r["namespace"], r["rotate_every"], r["grace"], r["created"], r["updated"], r["seq"],
                               r["mac"])


def new_policy(namespace: str, when: float) -> PolicyRecord:
    return PolicyRecord(_TOKEN, {"namespace": namespace, "rotate_every": "{}", "grace": None, "created": when,
                                 "updated": when})


def load_policy(vault, namespace: str) -> PolicyRecord | None:
    row = vault.store.policy(namespace)
    if row is None:
        return None
    if not _ok(policy_mac(vault.subkeys.row, vault.vault_id, row), row["mac"]):
        raise IntegrityError(f"the rotation policy of {namespace or '(the root)'!r} failed authentication",
                             hint=_EDITED)
    _check_newest(vault, "policy:" + namespace, row["seq"], POLICY_WRITES, f"the policy of {namespace!r}")
    return PolicyRecord(_TOKEN, dict(row))


def load_policies(vault) -> list[PolicyRecord]:
    return [p for p in (load_policy(vault, r["namespace"]) for r in vault.store.policies()) if p is not None]


# -- API tokens --------------------------------------------------------------------------------

class TokenRecord:
    """An API token's row (a keyed hash of the token, its ops, namespace, expiry, revocation),
    authenticated like key state; the token itself is never stored."""

    __slots__ = ("name", "row")

    def __init__(self, token, row: dict):
        if token is not _TOKEN:
            raise TypeError("token records come from kms_cli.vault.rows.load_token or new_token only")
        self.name = row["name"]
        self.row = row

    def __repr__(self) -> str:
        return f"TokenRecord({self.name!r})"

    def save(self, vault, *, keys=None) -> None:
        r = self.row
        r["seq"] = vault.audit.next_seq()
        r["mac"] = token_mac((keys or vault.subkeys).row, vault.vault_id, r)
        vault.store.put_token(**r)


def new_token(name: str, digest: bytes, ops: str, namespace: str, created: float,
              expires: float | None) -> TokenRecord:
    return TokenRecord(_TOKEN, {"name": name, "hash": digest, "ops": ops, "namespace": namespace,
                                "created": created, "expires": expires, "revoked": None, "last_used": None})


def _token_record(vault, row) -> TokenRecord:
    if not _ok(token_mac(vault.subkeys.row, vault.vault_id, row), row["mac"]):
        raise IntegrityError(f"the token {row['name']!r} failed authentication", hint=_EDITED)
    _check_newest(vault, "token:" + row["name"], row["seq"], TOKEN_WRITES, f"the token {row['name']!r}")
    return TokenRecord(_TOKEN, dict(row))


def load_token(vault, name: str) -> TokenRecord | None:
    row = vault.store.token(name)
    return None if row is None else _token_record(vault, row)


def load_token_by_hash(vault, digest: bytes) -> TokenRecord | None:
    row = vault.store.token_by_hash(digest)
    return None if row is None else _token_record(vault, row)


def load_tokens(vault) -> list[TokenRecord]:
    return [_token_record(vault, r) for r in vault.store.tokens()]


# -- slots -----------------------------------------------------------------------------------

def seal_slot_set(vault, *, keys=None) -> None:
    """MAC the set of slots as it now stands (after init, master add/remove/rotate): a removed
    slot put back into the file, or one copied in, is refused at unlock."""
    seq = vault.audit.next_seq()
    slot_key = (keys or vault.subkeys).slot
    vault.store.set_meta("slots_seq", str(seq))
    vault.store.set_meta("slots_mac", slot_set_mac(slot_key, vault.vault_id, vault.store.slots(), seq).hex())


def verify_slot_set(store, vault_id: bytes, slot_key: bytes, read=None) -> None:
    """`read`: (slots, slots_seq, slots_mac) already read in one snapshot (Vault.open), else read now."""
    if read is not None:
        slots, seq, mac = read
    else:
        seq, mac = store.get_meta("slots_seq"), store.get_meta("slots_mac")
        slots = store.slots()
    try:
        ok = seq is not None and mac is not None and equal(
            slot_set_mac(slot_key, vault_id, slots, int(seq)), bytes.fromhex(mac))
        # a set sealed before labels existed (v2) is still good while no slot has a label: a label
        # added or removed outside kms-cli fails both forms
        if not ok and seq is not None and mac is not None and all(s["label"] is None for s in slots):
            ok = equal(slot_set_mac(slot_key, vault_id, slots, int(seq), version=2), bytes.fromhex(mac))
    except ValueError:
        ok = False
    if not ok:
        raise IntegrityError("the vault's set of slots failed authentication (a slot was added, removed or "
                             "edited outside kms-cli)", hint=_EDITED)


# -- everything at once: health, restore checks, master rotate, upgrades ------------------------

def verify_all(vault) -> dict:
    """Authenticate every state row and open every sealed value; raise IntegrityError naming the
    first bad one. Returns counts and the highest seq any row records."""
    from kms_cli.vault.hierarchy import slot_tag

    counts = {"keys": 0, "key_versions": 0, "secrets": 0, "secret_versions": 0, "slots": 0}
    verify_slot_set(vault.store, vault.vault_id, vault.subkeys.slot)
    for s in vault.store.slots():
        if not _ok(slot_tag(vault.subkeys.slot, vault.vault_id, s["id"], s["uri"], s["blob"]), s["tag"]):
            raise IntegrityError(f"slot {s['id']} failed authentication", hint=_EDITED)
        counts["slots"] += 1
    names = {r["name"] for r in vault.store.keys()}
    orphans = {v["name"] for v in vault.store.all_key_versions()} - names
    if orphans:
        raise IntegrityError(f"key versions without a key: {', '.join(sorted(orphans))}", hint=_EDITED)
    for k in load_keys(vault):
        counts["keys"] += 1
        for v in k.ordered():
            counts["key_versions"] += 1
            if v["material"] is not None:
                vault.open_material(k.name, v["version"], k.row["algorithm"], v["material"])
            if v["public"] is not None:
                vault.open_material(k.name, v["version"], k.row["algorithm"], v["public"], kind="public")
    heads = {r["name"] for r in vault.store.all_secrets()}
    orphans = {v["name"] for v in vault.store.all_secret_versions()} - heads
    if orphans:
        raise IntegrityError(f"secret versions without a secret: {', '.join(sorted(orphans))}", hint=_EDITED)
    for s in load_secrets(vault, deleted=True):
        counts["secrets"] += 1
        for v in s.versions(vault):
            counts["secret_versions"] += 1
            vault.open_secret(s.name, v["version"], v["value"], v["expires"])
    counts["policies"] = len(load_policies(vault))
    counts["tokens"] = len(load_tokens(vault))
    counts["max_seq"] = vault.store.max_row_seq()
    return counts


def _v1_key_ok(vault, k) -> bool:
    mac = hmac_sha256(vault.subkeys.row, bind(
        "key-row", vault.vault_id, k["name"], k["algorithm"], k["state"], k["state_before"] or "",
        k["primary_version"], _num(k["destroy_at"])))
    return _ok(mac, k["mac"])


def _v1_version_ok(vault, v) -> bool:
    mac = hmac_sha256(vault.subkeys.row, bind(
        "key-version-row", vault.vault_id, v["name"], v["version"], v["state"], _num(v["grace_until"]),
        _num(v["revoked"]), _num(v["destroyed"]), "material" if v["material"] is not None else "none"))
    return _ok(mac, v["mac"])


def upgrade(vault) -> None:
    """Bring a vault written before row seqs and secret MACs (auth version 1) to version 2, in
    one write transaction: key rows are verified under their version-1 MACs first, then every
    row is sealed as today. Runs once, at the first unlock by this kms-cli."""
    if vault.store.get_meta("auth") == AUTH_VERSION:
        return
    with vault.store.write():
        if vault.store.get_meta("auth") == AUTH_VERSION:
            return
        if not vault.audit.head_is_legacy():  # a version-2 vault whose marker was removed: not an upgrade
            raise IntegrityError("the vault's authentication version failed authentication", hint=_EDITED)
        for row in vault.store.keys():
            versions = vault.store.key_versions(row["name"])
            if not _v1_key_ok(vault, row) or not all(_v1_version_ok(vault, v) for v in versions):
                raise _key_error(vault, row["name"])
            KeyRecord(_TOKEN, dict(row), [dict(v) for v in versions]).save(vault, everything=True)
        for row in vault.store.all_secrets():
            rec = SecretRecord(_TOKEN, dict(row))
            for v in vault.store.secret_versions(row["name"]):
                rec.rewrite_version(dict(v))
            rec.save(vault)
        seal_slot_set(vault)
        vault.store.set_meta("auth", AUTH_VERSION)
        vault.audit.append("vault.upgrade", None, None, extra={"auth": int(AUTH_VERSION)})
