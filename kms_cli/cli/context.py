"""What every handler receives: resolved settings, the vault opener and the output channels."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from kms_cli import config
from kms_cli.errors import UsageError


class ClosedStream:
    """Stands in for a standard stream that was closed when kms-cli started (`>&-`, `<&-`).

    Writing the output to a closed stdout, or reading a value from a closed stdin, is a
    usage error (exit 2) at the moment it is tried; a closed stderr swallows messages
    (the exit code still tells). Its descriptor is held on /dev/null, close-on-exec, so no
    file kms-cli opens (an output, a secret's env file) can take its number.
    """

    def __init__(self, name: str):
        self.name = name

    @property
    def buffer(self):
        return self

    def _closed(self) -> UsageError:
        return UsageError(f"standard {'input' if self.name == 'stdin' else 'output'} is closed",
                          hint="redirect it (e.g. >/dev/null or </dev/null) instead of closing it")

    def write(self, data) -> int:
        if self.name == "stderr":
            return len(data)
        raise self._closed()

    def read(self, *args):
        raise self._closed()

    readline = readinto = read

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        import io

        raise io.UnsupportedOperation(f"{self.name} is closed")

    def readable(self) -> bool:
        return self.name == "stdin"

    def writable(self) -> bool:
        return self.name != "stdin"

    closed = False


class Ctx:
    def __init__(self, flags: dict, environ=None):
        self.environ = dict(os.environ if environ is None else environ)
        self.flags = flags
        self.json = bool(flags.get("json"))
        self.quiet = bool(flags.get("quiet"))
        self._settings = None
        self.stdout = sys.stdout.buffer
        self.stderr = sys.stderr

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.resolve(self.flags, self.environ)
        return self._settings

    @property
    def no_color(self) -> bool:
        return bool(self.flags.get("no_color")) or "NO_COLOR" in self.environ

    # -- the vault -----------------------------------------------------------
    def source_options(self, *, create_key: bool = False, allow_weak_passphrase: bool = False):
        from kms_cli.vault import SourceOptions

        s = self.settings
        return SourceOptions(
            passphrase_file=s.passphrase_file,
            prompt=self.prompt if sys.stdin.isatty() else None,
            create_key=create_key,
            allow_weak_passphrase=allow_weak_passphrase,
            identities=s.identity,
            warn=self.warn,
            timeout=s.timeout,
            retries=s.retries,
            environ=self.environ,
        )

    def vault_options(self, **kw):
        """How to open the vault; called by every command that opens one, before it does.

        So it is also where such a command stops core dumps (it is about to hold key material)
        and where a restore that was killed half-way is finished or rolled back, before the
        vault file is opened (`vault.backup.recover_interrupted_restore`).
        """
        from kms_cli.hardening import no_core_dumps
        from kms_cli.names import Namespace
        from kms_cli.vault import Options

        no_core_dumps()
        s = self.settings
        if os.path.lexists(s.vault + ".restore-journal"):  # one stat; the backup module only when needed
            from kms_cli.vault.backup import recover_interrupted_restore

            recover_interrupted_restore(s.vault)
        return Options(path=s.vault, namespace=Namespace.parse(s.namespace), unlock=s.unlock,
                       source=self.source_options(**kw))

    def open_vault(self, **source_kw):
        """`source_kw` go to the source options (e.g. allow_weak_passphrase for a command that seals)."""
        from kms_cli.errors import NotFoundError
        from kms_cli.vault import Vault

        options = self.vault_options(**source_kw)
        try:
            return Vault.open(options)
        except NotFoundError as exc:
            from kms_cli.vault.backup import restore_leftovers

            kept = [p for p in restore_leftovers(options.path) if not p.endswith(("-wal", "-shm"))]
            if not kept or os.path.lexists(options.path):
                raise
            raise NotFoundError(exc.message, hint=f"a restore left the previous vault as {kept[-1]}: rename it to "
                                                  f"{options.path} (`kms-cli init` would make a new, empty vault)"
                                ) from None

    @contextmanager
    def vault(self, **source_kw):
        """`with ctx.vault() as vault:` opens (and unlocks) the vault around a command."""
        v = self.open_vault(**source_kw)
        try:
            yield v
        finally:
            v.close()

    def prompt(self, label: str, confirm: bool) -> str:
        """A hidden TTY prompt (asked twice when `confirm`); a progress bar on screen is erased
        first (it comes back with the next progress report)."""
        import getpass

        bar = getattr(self, "active_progress", None)
        if bar is not None:
            bar.hide()
        first = getpass.getpass(f"{label}: ")
        if confirm:
            again = getpass.getpass(f"{label} (again): ")
            if again != first:
                raise UsageError(f"the {label}s do not match")
        return first

    # -- output --------------------------------------------------------------
    def need_stdout(self) -> None:
        """Fail now, before the vault is read, when the output cannot go anywhere (stdout closed):
        the audit entry then records no read the user never received."""
        if isinstance(self.stdout, ClosedStream):
            raise self.stdout._closed()

    def info(self, message: str) -> None:
        if not self.quiet:
            print(f"kms-cli: {message}", file=self.stderr)

    def warn(self, message: str) -> None:
        print(f"kms-cli: warning: {message}", file=self.stderr)

    def emit_json(self, obj) -> None:
        import json

        self.stdout.write(json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n")
        self.stdout.flush()

    def emit(self, obj, human) -> None:
        """JSON with --json, else `human(obj)` (which may use rich through cli.output)."""
        if self.json:
            self.emit_json(obj)
        else:
            human(obj)

    def parse_pairs(self, items, what: str) -> list[tuple[str, str]]:
        from kms_cli.names import utf8_text

        out = []
        for item in items or []:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise UsageError(f"invalid {what} {item.split('=', 1)[0]!r}: expected K=V")
            out.append((utf8_text(k, what), utf8_text(v, what)))
        return out

    def parse_map(self, items, what: str) -> dict[str, str]:
        out = {}
        for k, v in self.parse_pairs(items, what):
            if k in out:
                raise UsageError(f"{what} {k!r} given twice")
            out[k] = v
        return out

