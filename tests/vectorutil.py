"""Load the Wycheproof vector files kept in tests/vectors (Apache-2.0, see tests/vectors/LICENSE).

Importable from any test directory::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    import vectorutil
    data = vectorutil.load("ed25519_test")   # reads tests/vectors/ed25519_test.json
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"


def path(name: str) -> Path:
    """tests/vectors/<name>.json (the ".json" suffix is optional)."""
    return VECTORS / (name if name.endswith(".json") else f"{name}.json")


def load(name: str) -> dict:
    """The parsed JSON of tests/vectors/<name>.json."""
    return json.loads(path(name).read_text(encoding="utf-8"))


def cases(name: str) -> Iterator[tuple[dict, dict]]:
    """(group, test) for every test of every testGroup of a Wycheproof file."""
    for group in load(name)["testGroups"]:
        for test in group["tests"]:
            yield group, test


def case_id(case: tuple[dict, dict]) -> str:
    """A pytest id for a (group, test) pair: tcId and result."""
    return f"tc{case[1]['tcId']}-{case[1]['result']}"
