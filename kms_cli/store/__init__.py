"""Storage engines behind one interface (`store/base.py`); the only code that speaks SQL.

`open_store` and `create_store` pick the engine from the vault's location: a `postgresql://` (or
`postgres://`) URI is a PostgreSQL vault (`store/postgres.py`), anything else a file path, a SQLite
vault (`store/sqlite.py`). Engines are imported only when used, so importing this package costs
nothing (a process served by the agent never imports sqlite3, nor psycopg).
"""

from __future__ import annotations

from kms_cli.locations import is_uri
from kms_cli.store.base import SCHEMA_VERSION, BadText, Store  # noqa: F401 - the interface

DEFAULT_TIMEOUT = 10.0
_ADOPTED: dict[str, Store] = {}


def adopt(location: str, store: Store) -> None:
    """The next `open_store(location)` in this process gets `store`, already open (the agent's
    command process checked the vault with it: one connection instead of two)."""
    from kms_cli.locations import canonical

    _ADOPTED[canonical(location)] = store


def _postgres():
    try:
        from kms_cli.store import postgres
    except ImportError as exc:
        if "psycopg" not in str(exc):
            raise
        from kms_cli.errors import UsageError

        raise UsageError("a PostgreSQL vault needs psycopg", hint="pip install 'kms-cli[postgres]'") from None
    return postgres


def open_store(location: str, timeout: float = DEFAULT_TIMEOUT) -> Store:
    if _ADOPTED:
        from kms_cli.locations import canonical

        store = _ADOPTED.pop(canonical(location), None)
        if store is not None:
            return store
    if is_uri(location):
        return _postgres().PostgresStore.open(location, timeout)
    from kms_cli.store.sqlite import SQLiteStore

    return SQLiteStore.open(location)


def create_store(location: str, *, force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Store:
    if is_uri(location):
        return _postgres().PostgresStore.create(location, force=force, timeout=timeout)
    from kms_cli.store.sqlite import SQLiteStore

    return SQLiteStore.create(location, force=force)


def vault_exists(location: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `location` holds a vault already (a file there, or the schema in the database)."""
    if is_uri(location):
        store = _postgres().PostgresStore.connect(location, timeout)
        try:
            return store.exists()
        finally:
            store.close()
    import os

    return os.path.exists(location)


def check_location(location: str) -> None:
    """Refuse a malformed vault URI (exit 2) before anything else happens; a path passes."""
    if is_uri(location):
        _postgres().Location(location)


def probe(location: str):
    """What the vault file at `location` is, without unlocking it (see `sqlite.probe`)."""
    from kms_cli.store.sqlite import probe as _probe

    return _probe(location)


def peek_vault_id(location: str) -> str | None:
    if is_uri(location):
        return _postgres().peek_vault_id(location)
    from kms_cli.store.sqlite import peek_vault_id as _peek

    return _peek(location)
