"""Layers point one way (CONTRIBUTING.md): checked over every module's imports and string literals.

- `cli` parses and renders: it never imports the crypto layer, the providers, the store or the
  audit chain (it goes through `kms_cli.vault`); nothing outside `cli` imports `cli`.
- `store` is the only place that speaks SQL: no other module imports a database driver or holds
  a SQL statement.
- `crypto` is the only importer of the cryptography libraries.
"""

from __future__ import annotations

import ast
import pathlib
import re

import kms_cli

ROOT = pathlib.Path(kms_cli.__file__).parent
SQL = re.compile(r"^\s*(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
                 r"ALTER\s+TABLE|PRAGMA\s|BEGIN\b|COMMIT\b|ROLLBACK\b)", re.I | re.S)
CRYPTO_LIBS = ("cryptography", "argon2", "pqcrypto", "pyrage", "hmac", "hashlib")
DRIVERS = ("sqlite3", "psycopg", "psycopg2")


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Every module imported anywhere in the file (module level or inside functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from kms_cli import store`
    return out


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = dict(_modules())


def test_the_cli_goes_through_the_vault_layer():
    bad = {}
    for name, tree in MODULES.items():
        if not _in(name, "kms_cli.cli"):
            continue
        hits = sorted(i for i in _imports(tree, name)
                      if any(_in(i, p) for p in ("kms_cli.crypto", "kms_cli.providers", "kms_cli.store",
                                                  "kms_cli.audit")))
        if hits:
            bad[name] = hits
    assert bad == {}


def test_nothing_below_imports_the_cli():
    # the entry point, and the agent's command processes (they run the CLI with a held key)
    hosts = ("kms_cli.__main__", "kms_cli.agent.child")
    bad = {name: sorted(i for i in _imports(tree, name) if _in(i, "kms_cli.cli"))
           for name, tree in MODULES.items() if not _in(name, "kms_cli.cli") and name not in hosts}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_store_speaks_sql():
    drivers, statements = {}, {}
    for name, tree in MODULES.items():
        if _in(name, "kms_cli.store"):
            continue
        hits = sorted(i for i in _imports(tree, name) if any(_in(i, d) for d in DRIVERS))
        if hits:
            drivers[name] = hits
        sql = [n.value[:40] for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and SQL.match(n.value)]
        if sql:
            statements[name] = sql
    assert drivers == {}
    assert statements == {}


def test_only_the_crypto_layer_imports_crypto_libraries():
    bad = {}
    for name, tree in MODULES.items():
        if _in(name, "kms_cli.crypto"):
            continue
        hits = sorted(i for i in _imports(tree, name) if any(_in(i, lib) for lib in CRYPTO_LIBS))
        if hits:
            bad[name] = hits
    assert bad == {}


def test_the_store_knows_rows_not_keys():
    """The store imports no layer above it and nothing that could open a key."""
    allowed = ("kms_cli.store", "kms_cli.errors", "kms_cli.durations", "kms_cli.leftovers", "kms_cli.locations")
    bad = {}
    for name, tree in MODULES.items():
        if not _in(name, "kms_cli.store"):
            continue
        hits = sorted(i for i in _imports(tree, name) if _in(i, "kms_cli") and i != "kms_cli"
                      and not any(_in(i, a) for a in allowed))
        if hits:
            bad[name] = hits
    assert bad == {}


def test_the_checks_see_what_they_claim():
    """The rules above would pass vacuously if the walk found nothing: it sees SQL in the store,
    sqlite3 in the SQLite engine, the crypto libraries in crypto/ and the CLI's imports."""
    store_sql = [n for n in ast.walk(MODULES["kms_cli.store.sqlite"])
                 if isinstance(n, ast.Constant) and isinstance(n.value, str) and SQL.match(n.value)]
    assert len(store_sql) > 20
    assert "sqlite3" in _imports(MODULES["kms_cli.store.sqlite"], "kms_cli.store.sqlite")
    assert any(_in(i, "cryptography") for i in _imports(MODULES["kms_cli.crypto.primitives"], "kms_cli.crypto.primitives"))
    assert "kms_cli.vault" in _imports(MODULES["kms_cli.cli.key"], "kms_cli.cli.key")
