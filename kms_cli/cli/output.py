"""Human output: tables and key/value blocks. The only module that imports rich."""

from __future__ import annotations

import sys


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
