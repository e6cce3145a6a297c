"""API tokens for `serve` (spec section 10): create, list, revoke, and authenticate a bearer.

A token is `kms.` + 43 base64url characters (256 random bits), printed once by `token create`. The
vault keeps only HMAC-SHA-256(token key, token): the token key is a random 256-bit key sealed in the
vault's meta under the key-material subkey (re-sealed by `master rotate`, so a rotation keeps every
token valid). A token row (name, hash, ops, namespace, expiry, revocation) is authenticated like
key state (`rows.TokenRecord`: a row MAC bound to the vault and to the audit seq that wrote it), so a
token cannot be granted more by editing the database; `last_used` alone is informational.

Every create and revoke is audited (`token.create`, `token.revoke`, target `token:NAME`; never the
token). A revoked or expired token is refused at its next request.
"""

from __future__ import annotations

import base64

from kms_cli import durations, names
from kms_cli.crypto import wrap
from kms_cli.crypto.primitives import hmac_sha256, random_bytes
from kms_cli.errors import AlreadyExistsError, IntegrityError, NotFoundError, UsageError
from kms_cli.vault import rows

OPS = ("secret.read", "secret.write", "encrypt", "decrypt", "rewrap", "datakey", "sign", "verify", "key.read",
       "key.rotate", "health")
# Without --allow: everything but the two that change state (secret.write, key.rotate)
DEFAULT_OPS = tuple(op for op in OPS if op not in ("secret.write", "key.rotate"))
DEFAULT_TTL = 32 * 86400  # Vault's default token TTL (768h)
PREFIX = "kms."
_KEY_META = "token_key"


def target(name: str) -> str:
    return "token:" + name


def parse_ops(items: list[str] | None) -> tuple[str, ...]:
    """`--allow encrypt,decrypt --allow health` -> ("decrypt", "encrypt", "health"); unknown: exit 2."""
    if not items:
        return DEFAULT_OPS
    ops: set[str] = set()
    for item in items:
        for op in item.split(","):
            op = op.strip()
            if op not in OPS:
                raise UsageError(f"unknown operation {op!r}", hint="one of: " + ", ".join(OPS))
            ops.add(op)
    return tuple(o for o in OPS if o in ops)


def _binding(vault) -> bytes:
    from kms_cli.binding import bind

    return bind("token-key", vault.vault_id)


def token_key(vault, *, create: bool = False) -> bytes | None:
    """The vault's token key (None when no token was ever made and `create` is false)."""
    sealed = vault.store.get_meta(_KEY_META)
    if sealed is None:
        if not create:
            return None
        key = random_bytes(32)
        vault.store.set_meta(_KEY_META, wrap.seal("aes-256-gcm", vault.subkeys.material, key, _binding(vault)).hex())
        return key
    try:
        return wrap.open("aes-256-gcm", vault.subkeys.material, bytes.fromhex(sealed), _binding(vault))
    except (ValueError, IntegrityError):
        raise IntegrityError("the vault's token key failed authentication",
                             hint="the vault was edited outside kms-cli; restore a backup") from None


def reseal_token_key(vault, new_material_key: bytes) -> None:
    """`master rotate`: the same token key under the new root's key-material subkey."""
    key = token_key(vault)
    if key is not None:
        vault.store.set_meta(_KEY_META, wrap.seal("aes-256-gcm", new_material_key, key, _binding(vault)).hex())


def digest(key: bytes, token: str) -> bytes:
    return hmac_sha256(key, token.encode("utf-8", "surrogateescape"))


def describe(t: rows.TokenRecord) -> dict:
    r = t.row
    return {"name": t.name, "allow": r["ops"].split(",") if r["ops"] else [], "namespace": r["namespace"],
            "created": durations.rfc3339(r["created"]), "expires": durations.rfc3339(r["expires"]),
            "last_used": durations.rfc3339(r["last_used"]), "revoked": durations.rfc3339(r["revoked"]),
            "state": state_of(t, durations.now())}


def state_of(t: rows.TokenRecord, now: float) -> str:
    if t.row["revoked"] is not None:
        return "revoked"
    if t.row["expires"] is not None and now >= t.row["expires"]:
        return "expired"
    return "active"


def create(vault, name: str, ops: tuple[str, ...], namespace: str, ttl: int | None) -> tuple[str, dict]:
    """A new token: (the token, shown once; its description)."""
    names.validate(name, "token name")
    if namespace:
        names.validate(namespace, "namespace")
    if ttl is not None and ttl <= 0:
        raise UsageError("--ttl must be more than zero")
    with vault.operation("token.create", target(name)) as rec:
        if vault.store.token(name) is not None:
            raise AlreadyExistsError(f"a token named {name!r} exists", hint=f"revoke it or choose another name")
        key = token_key(vault, create=True)
        token = PREFIX + base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode()
        now = durations.now()
        t = rows.new_token(name, digest(key, token), ",".join(ops), namespace, now,
                           now + (ttl if ttl is not None else DEFAULT_TTL))
        t.save(vault)
        rec.extra = {"allow": list(ops), "namespace": namespace, "expires": durations.rfc3339(t.row["expires"])}
        return token, describe(t)


def list_(vault) -> list[dict]:
    with vault.operation("token.list", write=False):
        return [describe(t) for t in rows.load_tokens(vault)]


def revoke(vault, name: str) -> dict:
    with vault.operation("token.revoke", target(name)):
        t = rows.load_token(vault, name)
        if t is None:
            raise NotFoundError(f"no token named {name!r}", hint="see `kms-cli token list`")
        if t.row["revoked"] is None:
            t.row["revoked"] = durations.now()
            t.save(vault)
        return describe(t)


class Denied(Exception):
    """A request's token is missing, unknown, revoked or expired, or does not allow the operation."""

    def __init__(self, why: str, token_name: str | None = None):
        super().__init__(why)
        self.why, self.token_name = why, token_name


def authenticate(vault, presented: str | None, key: bytes | None) -> rows.TokenRecord:
    """The live token row for `presented` (read in the caller's snapshot), or Denied."""
    if not presented or key is None:
        raise Denied("missing token" if not presented else "unknown token")
    t = rows.load_token_by_hash(vault, digest(key, presented))
    if t is None:
        raise Denied("unknown token")
    state = state_of(t, durations.now())
    if state != "active":
        raise Denied(f"{state} token", t.name)
    return t


def allows(t: rows.TokenRecord, op: str, name: str | None) -> bool:
    """Whether token `t` may do `op` on the full name `name` (None: an operation on no name)."""
    if op not in t.row["ops"].split(","):
        return False
    ns = t.row["namespace"]
    if not ns or name is None:
        return True
    return name == ns or name.startswith(ns + "/")
