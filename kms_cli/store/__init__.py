"""Storage engines behind one interface (`store/base.py`); the only code that speaks SQL.

`open_store` and `create_store` pick the engine from the vault's location: a file path is a
SQLite vault (`store/sqlite.py`). Engines are imported only when used, so importing this
package costs nothing (a process served by the agent never imports sqlite3).
"""

from __future__ import annotations

from kms_cli.store.base import SCHEMA_VERSION, BadText, Store  # noqa: F401 - the interface


def open_store(location: str) -> Store:
    from kms_cli.store.sqlite import SQLiteStore

    return SQLiteStore.open(location)


def create_store(location: str, *, force: bool = False) -> Store:
    from kms_cli.store.sqlite import SQLiteStore

    return SQLiteStore.create(location, force=force)


def probe(location: str):
    """What the vault at `location` is, without unlocking it (see `sqlite.probe`)."""
    from kms_cli.store.sqlite import probe as _probe

    return _probe(location)


def peek_vault_id(location: str) -> str | None:
    from kms_cli.store.sqlite import peek_vault_id as _peek

    return _peek(location)
