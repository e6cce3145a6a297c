"""`secret edit NAME`: the current value in $VISUAL or $EDITOR, a new version only if it changed.

The vault is unlocked and the value read (one `secret.get` entry) before the editor starts, so a
wrong passphrase never throws an edit away; a changed value is stored as `secret put` stores one
(one `secret.put` entry): the previous version's tags kept, no TTL. The file, the editor and what
is left behind are `kms_cli.editing`'s.

Decisions (README, "Secrets"):
- a missing secret is exit 3, as `secret get` (the spec does not say edit creates one), with a hint
  to use `secret put`; an expired one is exit 6, as `secret get`;
- the editor is $VISUAL, else $EDITOR, else `vi` (a note says so), split like a shell word list and
  run without a shell; one that cannot be found is exit 127, not executable 126, as `exec` says,
  checked before the vault is read;
- an editor that exits non-zero or is killed stores nothing: exit 2, naming its status (vim's
  `:cq` aborts an edit, as with git); so does an editor that removes the file, a result larger
  than a secret may be (1 MiB), or an emptied file (use `secret rm`, or `secret put` for an empty
  value);
- "changed" is a byte comparison, after one final newline is dropped when the stored value had
  none (vim, nano and most editors add one on save: a password must not gain a newline because it
  was opened and saved);
- ^C, SIGTERM, SIGHUP: nothing stored, exit 128+N, the editor stopped, every file removed.
"""

from __future__ import annotations


def _final_newline(old: bytes, new: bytes) -> bytes:
    if new.endswith(b"\n") and not old.endswith(b"\n"):
        return new[:-1]
    return new


def edit(ctx, name) -> int:
    from kms_cli import editing, runner
    from kms_cli.errors import NotFoundError, UsageError
    from kms_cli.vault import secrets

    argv, source = editing.editor_command(ctx.environ)
    runner.check_command(argv, ctx.environ.get("PATH"))  # 127/126 before anything is read
    if source is None:
        ctx.info(f"neither VISUAL nor EDITOR is set: editing with {editing.DEFAULT_EDITOR}")
    with ctx.vault() as vault:  # unlocked before the editor starts
        try:
            version, value = secrets.get(vault, name)
        except NotFoundError as exc:
            if exc.hint:
                raise
            raise NotFoundError(exc.message, hint=f"create it with `kms-cli secret put {name}`") from None
        env = runner.build_env(ctx.environ, {}, scrub=vault.secret_env_vars())  # no master key for the editor
        old = value.reveal()
        new = editing.edit(old, name.rsplit("/", 1)[-1], argv, env, warn=ctx.warn, limit=secrets.MAX_VALUE)
        new = _final_newline(old, new)
        if new == old:
            info = {"name": name, "version": version, "changed": False}
        else:
            if not new and old:
                raise UsageError("the edited file is empty; nothing stored",
                                 hint=f"remove the secret with `kms-cli secret rm {name}`, or store an empty "
                                      "value with `kms-cli secret put`")
            stored = secrets.put(vault, name, new, None, None)
            info = {"name": name, "version": stored["version"], "changed": True}
            if stored["version"] != version + 1:
                ctx.warn(f"{name} changed while it was being edited (version {version} was edited): your value "
                         f"is version {stored['version']}; see `kms-cli secret history {name}`")
    ctx.emit(info, lambda i: ctx.info(f"stored {i['name']} version {i['version']}" if i["changed"] else
                                      f"{i['name']} unchanged (version {i['version']}); nothing stored"))
    return 0
