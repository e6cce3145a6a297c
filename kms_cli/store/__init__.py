"""Storage engines behind one interface (`store/base.py`); the only code that speaks SQL.

`open_store` and `create_store` pick the engine from the vault's location: a file path is a
SQLite vault (`store/sqlite.py`). Engines are imported only when used, so importing this
package costs nothing (a process served by the agent never imports sqlite3).
"""

from __future__ import annotations

from kms_cli.store.base import SCHEMA_VERSION, BadText, Store  # noqa: F401 - the interface


_ADOPTED: dict[str, Store] = {}


def adopt(location: str, store: Store) -> None:
    """The next `open_store(location)` in this process gets `store`, already open (the agent's
    command process checked the vault with it: one connection instead of two)."""
    import os

    _ADOPTED[os.path.realpath(location)] = store


def open_store(location: str) -> Store:
    if _ADOPTED:
        import os

        store = _ADOPTED.pop(os.path.realpath(location), None)
        if store is not None:
            return store
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
