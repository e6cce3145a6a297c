"""Human output: tables, key/value blocks, progress bars and counted nouns. The only module that imports rich."""

from __future__ import annotations

import sys

from kms_cli.wording import plural  # noqa: F401 - the handlers' plural


def _console(ctx):
    from rich.console import Console

    return Console(file=sys.stdout, no_color=ctx.no_color, highlight=False, soft_wrap=True)


def table(ctx, columns: list[str], rows: list[list], empty: str = "nothing to show") -> None:
    if not rows:
        ctx.info(empty)
        return
    if not sys.stdout.isatty():
        # Plain, stable, tab-separated output for pipes and scripts.
        out = ["\t".join(columns)] + ["\t".join("" if c is None else str(c) for c in r) for r in rows]
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if c is None else str(c) for c in r])
    _console(ctx).print(t)


def fields(ctx, pairs: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in pairs)
    lines = [f"{k.ljust(width)}  {'' if v is None else v}" for k, v in pairs]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


class _ProgressDisplay:
    """A rich progress bar on stderr, drawn only when `show` is called (no refresh thread: see
    `kms_cli.cli.progress`) and erased by `close`."""

    def __init__(self, ctx, description: str, unit: str):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        console = Console(file=ctx.stderr, no_color=ctx.no_color, highlight=False)
        if unit == "bytes":
            counts = [DownloadColumn(), TransferSpeedColumn()]
        else:
            counts = [MofNCompleteColumn(), TextColumn(unit)]
        self._progress = Progress(TextColumn("kms-cli: {task.description}"), BarColumn(), *counts,
                                  TimeRemainingColumn(), console=console, auto_refresh=False, transient=True,
                                  redirect_stdout=False, redirect_stderr=False)
        self._task = self._progress.add_task(description, total=None)
        self._started = False

    def show(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)
        if not self._started:
            self._started = True
            self._progress.start()
        self._progress.refresh()

    def close(self) -> None:
        if self._started:
            self._progress.stop()


def progress_display(ctx, description: str, unit: str = "bytes") -> _ProgressDisplay:
    """The drawing side of `kms_cli.cli.progress` (use that module, not this)."""
    return _ProgressDisplay(ctx, description, unit)


def refuse_binary_to_terminal(ctx, path: str | None, what: str, hint: str) -> None:
    """Binary output (`what`) to stdout when stdout is a terminal: a usage error (exit 2), as age
    does, before anything is read or recorded; a pipe, a file or `-o FILE` are fine."""
    if path not in (None, "-"):
        return
    try:
        terminal = ctx.stdout.isatty()
    except (AttributeError, ValueError, OSError):
        return
    if terminal:
        from kms_cli.errors import UsageError

        raise UsageError(f"refusing to write {what} to a terminal", hint=hint)
