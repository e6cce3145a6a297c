"""Copy a whole vault's rows from one store to another, engine to engine, in bounded memory.

Rows travel as they are stored (MACs, sealed values, the audit chain): they are bound to the
vault id, not to where the vault lives, so the copy is the same vault and verifies as the source
does. The caller holds the source's read snapshot; the destination gets one write transaction.
"""

from __future__ import annotations

from kms_cli.store.base import COLUMNS, Store

BATCH = 1000


def copy_rows(src: Store, dst: Store, progress=None) -> dict[str, int]:
    """Every table of `src` into the empty `dst`, `BATCH` rows at a time; counts per table.
    `progress(rows_so_far)` after each batch."""
    counts: dict[str, int] = {}
    done = 0
    with dst.write():
        for table in COLUMNS:
            n = 0
            for rows in src.export_rows(table, BATCH):
                dst.import_rows(table, rows)
                n += len(rows)
                done += len(rows)
                if progress is not None:
                    progress(done)
            counts[table] = n
    return counts
