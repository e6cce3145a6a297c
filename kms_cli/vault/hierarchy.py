"""The key hierarchy: the subkeys derived from a vault's root key, and the tag that binds a slot
row to its vault. Below `core` and `rows`, which both use it (so neither imports the other back).
"""

from __future__ import annotations

from kms_cli.binding import bind
from kms_cli.crypto.primitives import hkdf_sha256, hmac_sha256

CONTEXT_KEY = "kms-cli:vault"
PURPOSES = ("key-material", "secret-value", "audit-mac", "slot-mac", "row-mac")


class Subkeys:
    """One key per purpose, derived from the root key; never printed."""

    __slots__ = ("material", "secret", "audit", "slot", "row")

    def __init__(self, material: bytes, secret: bytes, audit: bytes, slot: bytes, row: bytes):
        self.material, self.secret, self.audit, self.slot, self.row = material, secret, audit, slot, row

    @classmethod
    def derive(cls, root: bytes, vault_id: bytes) -> "Subkeys":
        k = {p: hkdf_sha256(root, salt=vault_id, info=b"kms-cli/v1/subkey/" + p.encode()) for p in PURPOSES}
        return cls(k["key-material"], k["secret-value"], k["audit-mac"], k["slot-mac"], k["row-mac"])

    def __repr__(self) -> str:
        return "Subkeys(***)"


def slot_tag(slot_key: bytes, vault_id: bytes, slot_id: int, uri: str, blob: bytes) -> bytes:
    """Authenticates a slot row to its vault (so a slot copied from another vault fails)."""
    return hmac_sha256(slot_key, bind("slot", vault_id, slot_id, uri, blob))
