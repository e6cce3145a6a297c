"""Handlers for exec, env, inject and read: secrets into processes, files and shells."""

from __future__ import annotations

import os
import sys

from kms_cli import fileio
from kms_cli.errors import UsageError


def _selection(ctx, vault, secret, all_, prefix) -> dict[str, str]:
    """VAR -> secret name, from --secret NAME[=VAR] and --all (two secrets on one VAR is exit 2)."""
    from kms_cli import envformat
    from kms_cli.vault import secrets

    pairs = []
    for item in secret or []:
        name, eq, var = item.partition("=")
        if eq and not var:
            raise UsageError(f"empty variable name in --secret {name}=")
        pairs.append((name, var or None))
    if all_:
        explicit = {n for n, _ in pairs}
        pairs += [(n, None) for n in secrets.all_names(vault) if n not in explicit]
    if not pairs:
        raise UsageError("no secrets selected", hint="use --secret NAME[=VAR] or --all")
    return envformat.build_mapping(pairs, prefix or "")


def _values(vault, mapping: dict[str, str], op: str, check=None):
    from kms_cli.vault import secrets

    def by_var(got):
        return {var: got[(name, None)] for var, name in mapping.items()}

    got = secrets.get_many(vault, [(name, None) for name in dict.fromkeys(mapping.values())], op,
                           check=None if check is None else lambda got: check(by_var(got)))
    return by_var(got)


def exec_(ctx, command, secret, all, prefix, pristine, no_clobber, mask, env_file_out) -> int:  # noqa: A002
    from kms_cli import dotenv, runner

    if not command:
        raise UsageError("missing command to run", hint="kms-cli exec [OPTIONS] -- CMD [ARGS...]")
    with ctx.vault() as vault:
        mapping = _selection(ctx, vault, secret, all, prefix)
        if "PATH" not in mapping:  # else the child's PATH is a secret: runner.run checks CMD after reading
            _check_command(vault, mapping, command, ctx.environ.get("PATH"))
        # The audit entry lands before the child starts; an env file's text is made inside the
        # audited read, so a value dotenv cannot carry safely is that entry's result (exit 2).
        env_text: dict[str, str] = {}

        def render(values) -> None:
            env_text["dotenv"] = dotenv.serialize(
                values, subject="variable",
                hint="leave out --env-file-out: the child's environment carries any value but a NUL")

        values = _values(vault, mapping, "exec", check=render if env_file_out else None)
        scrub = list(runner.DEFAULT_SCRUB) + vault.secret_env_vars()
    env = runner.build_env(ctx.environ, values, pristine=pristine, no_clobber=no_clobber, scrub=scrub,
                           warn=None if ctx.quiet else ctx.warn)
    sys.stdout.flush()
    return runner.run(
        command, env,
        mask_values=list(values.values()) if mask else None,
        env_file=env_file_out,
        dotenv_text=env_text.get("dotenv"),
    )


def _check_command(vault, mapping: dict[str, str], command: list[str], path: str | None) -> None:
    """A CMD that cannot start is exit 127/126 with an "error" exec entry, and no secret is read."""
    from kms_cli import runner
    from kms_cli.errors import KmsError

    try:
        runner.check_command(command, path)
    except KmsError:
        target = ",".join(dict.fromkeys(vault.ns.full(n) for n in mapping.values())) or (vault.ns.prefix or None)
        with vault.operation("exec", target, write=False):
            raise


def env(ctx, secret, all, prefix, format) -> int:  # noqa: A002
    from kms_cli import envformat
    from kms_cli.vault import secrets

    # Everything that can refuse is checked before the audited read or inside it, so the entry's
    # result is what the user sees: GITHUB_ENV unset or unwritable before, a value a format
    # cannot carry (a NUL for sh; not UTF-8 for json and github; see kms_cli.dotenv) inside.
    ctx.need_stdout()
    github_fd = envformat.github_env_fd(ctx.environ.get("GITHUB_ENV")) if format == "github" else None
    try:
        out: dict[str, str | bytes] = {}

        def render(got) -> None:
            values = {var: got[(name, None)] for var, name in mapping.items()}
            if format == "github":
                out["github_env"], out["text"] = envformat.github_texts(values)
            else:
                out["text"] = {"sh": envformat.format_sh, "dotenv": envformat.format_dotenv,
                               "json": envformat.format_json}[format](values)

        with ctx.vault() as vault:
            mapping = _selection(ctx, vault, secret, all, prefix)
            secrets.get_many(vault, [(name, None) for name in dict.fromkeys(mapping.values())], "env", check=render)
        if github_fd is not None:
            fd, github_fd = github_fd, None
            envformat.append_github_env(fd, out["github_env"])
    finally:
        if github_fd is not None:
            os.close(github_fd)
    text = out["text"]
    ctx.stdout.write(text if isinstance(text, bytes) else text.encode())  # sh is bytes: any byte but NUL
    return 0


def inject(ctx, input, output) -> int:  # noqa: A002
    from kms_cli import template
    from kms_cli.vault import secrets

    from kms_cli.cli.data import announce_terminal_input

    announce_terminal_input(ctx, input, "template")
    tpl = fileio.read_input(input)
    refs = template.references(tpl)
    # The output is opened (its directory checked, its temporary file made) before the audited
    # read, so a bad -o is refused with no entry rather than after an "ok" one.
    with fileio.atomic_output(output) as dst:
        with ctx.vault() as vault:
            got = secrets.get_many(vault, [(r.name, r.version) for r in refs], "inject")
        dst.write(template.render(tpl, lambda name, version: got[(name, version)]))
    return 0


def read(ctx, reference) -> int:
    from kms_cli.cli import secret as secret_cmds
    from kms_cli.template import parse_reference

    ref = parse_reference(reference)  # the one kms:// parser, shared with inject
    return secret_cmds.get(ctx, ref.name, ref.version)
