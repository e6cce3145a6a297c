"""The key hierarchy: one subkey per purpose, unambiguous associated data, slots bound to their vault."""

import os

from kms_cli.binding import bind
from kms_cli.vault.hierarchy import PURPOSES, Subkeys, slot_tag


def test_one_distinct_subkey_per_purpose():
    root, vid = os.urandom(32), os.urandom(16)
    k = Subkeys.derive(root, vid)
    keys = [k.material, k.secret, k.audit, k.slot, k.row]
    assert len(PURPOSES) == 5 and len(set(keys)) == 5 and all(len(x) == 32 for x in keys)
    assert root not in keys
    assert Subkeys.derive(root, vid).material == k.material
    assert Subkeys.derive(root, os.urandom(16)).material != k.material  # salted by the vault id
    assert "***" in repr(k) and k.material.hex() not in repr(k)


def test_bind_is_unambiguous():
    assert bind("secret", b"v", "a/b", 1) != bind("secret", b"v", "a", "b/1")
    assert bind("secret", b"v", "ab", 1) != bind("secret", b"va", "b", 1)
    assert bind("key", b"v", "n", 1) != bind("secret", b"v", "n", 1)
    assert bind("key", b"v", "n", 1, "aes-256-gcm") != bind("key", b"v", "n", 1, "chacha20-poly1305")


def test_slot_tag_binds_vault_slot_uri_blob():
    key, vid = os.urandom(32), os.urandom(16)
    t = slot_tag(key, vid, 1, "env:A", b"blob")
    assert t != slot_tag(key, os.urandom(16), 1, "env:A", b"blob")
    assert t != slot_tag(key, vid, 2, "env:A", b"blob")
    assert t != slot_tag(key, vid, 1, "env:B", b"blob")
    assert t != slot_tag(key, vid, 1, "env:A", b"blob2")
