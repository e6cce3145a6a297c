"""Handler for `secret rotate`: a fresh value, generated or from the secret's outside program."""

from __future__ import annotations

import sys

from kms_cli.errors import UsageError


def run_program(argv: list[str], old: bytes, timeout: float) -> bytes:
    """Run a secret's rotation program without a shell: the old value on its stdin, the new one
    read from its stdout (one trailing newline dropped); its stderr is the user's. A non-zero exit,
    a program that cannot start or one that runs past `timeout` leaves the secret unchanged (exit 7)."""
    import subprocess

    from kms_cli.errors import UnavailableError

    try:
        done = subprocess.run(argv, input=old, stdout=subprocess.PIPE, timeout=timeout, check=False)
    except FileNotFoundError:
        raise UnavailableError(f"the rotation program {argv[0]!r} was not found; the secret is unchanged") from None
    except PermissionError:
        raise UnavailableError(f"the rotation program {argv[0]!r} cannot be run; the secret is unchanged") from None
    except subprocess.TimeoutExpired:
        raise UnavailableError(f"the rotation program {argv[0]!r} ran longer than {timeout:g}s; the secret is "
                               "unchanged", hint="raise KMS_CLI_TIMEOUT for a slow program") from None
    if done.returncode != 0:
        raise UnavailableError(f"the rotation program {argv[0]!r} exited with status {done.returncode}; the secret "
                               "is unchanged")
    out = done.stdout
    return out[:-1] if out.endswith(b"\n") else out


def rotate(ctx, name, length, charset, rotate_every, due, dry_run) -> int:
    from kms_cli.cli.output import plural
    from kms_cli.durations import parse_duration
    from kms_cli.vault import secrets

    every = parse_duration(rotate_every) if rotate_every else None
    if every == 0:
        raise UsageError("--rotate-every must be longer than 0s")
    if dry_run and not due:
        raise UsageError("--dry-run goes with --due", hint="kms-cli secret rotate --due --dry-run")
    timeout = max(ctx.settings.timeout, 1.0)

    def hook(argv: list[str], old: bytes) -> bytes:
        sys.stdout.flush()
        return run_program(argv, old, timeout)

    if due:
        if name or length or charset or every:
            raise UsageError("--due rotates every due secret as it was set up: give no NAME or generator options")
        with ctx.vault() as vault:
            actions = secrets.rotate_due(vault, dry_run=dry_run, run_hook=hook)
        failed = [a for a in actions if "error" in a]
        if ctx.json:
            ctx.emit_json(actions)
        else:
            for a in actions:
                if dry_run:
                    line = f"would rotate {a['name']}"
                elif "error" in a:
                    line = f"failed {a['name']}: {a['error']}"
                else:
                    line = f"rotated {a['name']} to version {a['version']} ({'by its program' if a['by'] == 'program' else 'generated'})"
                ctx.stdout.write((line + "\n").encode())
            if not actions:
                ctx.info("no secret is due for rotation")
            elif failed:
                ctx.warn(f"{plural(len(failed), 'secret')} not rotated")
        return max((a["exit"] for a in failed), default=0)
    if not name:
        raise UsageError("missing argument NAME for `secret rotate`", hint="or pass --due to rotate every due secret")
    with ctx.vault() as vault:
        info = secrets.rotate(vault, name, length=length, charset=charset, every=every, run_hook=hook)
    ctx.emit(info, lambda i: ctx.info(f"rotated {i['name']} to version {i['version']}"
                                      + (" (value from its program)" if i["by"] == "program" else "")))
    return 0
