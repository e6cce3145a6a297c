"""Handlers for `backup` and `restore`: the checks and the file handling live in kms_cli.vault.backup."""

from __future__ import annotations


def backup(ctx, output) -> int:
    from kms_cli.vault import backup as backups

    with ctx.vault() as vault:
        info = backups.backup(vault, output)
    ctx.emit(info, lambda i: ctx.info(f"wrote a sealed backup of vault {i['vault_id']} to {i['file']} "
                                      f"(audit head at seq {i['head']})"))
    return 0


def restore(ctx, file, force) -> int:
    from kms_cli.vault import backup as backups

    info = backups.restore(ctx.vault_options(), file, force)

    def human(i: dict) -> None:
        if i["other_vault"]:
            ctx.warn(f"replaced vault {i['replaced_vault_id']} with a backup of another vault, {i['vault_id']}")
        from kms_cli.cli.output import plural

        ctx.info(f"restored vault {i['vault_id']} from {file} ({plural(i['entries'], 'audit entry', 'audit entries')} "
                 f"verified, {plural(i['sealed_rows'], 'sealed row')} authenticated)")
        if i["kept"]:
            ctx.info(f"the previous vault is kept as {i['kept']} until the next successful command")

    ctx.emit(info, human)
    return 0


def copy(ctx, src, dst) -> int:
    from kms_cli.cli.output import plural
    from kms_cli.cli.progress import progress
    from kms_cli.vault.copy import copy_vault

    with progress(ctx, None, "copying rows", unit="rows") as p:
        info = copy_vault(ctx.vault_options(), src, dst, progress=p.update if p else None)
    ctx.emit(info, lambda i: ctx.info(
        f"copied vault {i['vault_id']} from {i['from']} to {i['to']}: {plural(i['rows']['keys'], 'key')}, "
        f"{plural(i['rows']['secrets'], 'secret')}, {plural(i['rows']['audit'], 'audit entry', 'audit entries')} "
        f"(chain verified on the copy, head at seq {i['head']})"))
    return 0
