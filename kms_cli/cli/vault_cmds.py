"""Handlers for vault-wide commands: init and master key generation."""

from __future__ import annotations

def init(ctx, master_key: str | None, force: bool, create_key: bool, allow_weak_passphrase: bool) -> int:
    from kms_cli.vault import Vault

    source = master_key or "env:KMS_CLI_MASTER_KEY"
    vault = Vault.create(ctx.vault_options(create_key=create_key, allow_weak_passphrase=allow_weak_passphrase), source,
                         force=force)
    info = {"vault": ctx.settings.vault, "vault_id": vault.vault_id.hex(), "slot": 1,
            "source": source}
    if ctx.json:
        ctx.emit_json(info)
    else:
        ctx.info(f"created vault {vault.vault_id.hex()} at {ctx.settings.vault} (slot 1: {source})")
    return 0


def master_generate(ctx) -> int:
    from kms_cli.vault.slots import new_master_key

    key = new_master_key()
    if ctx.json:
        ctx.emit_json({"key": key})
    else:
        ctx.stdout.write(key.encode() + b"\n")
    return 0

