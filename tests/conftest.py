"""Shared fixtures: a temp vault and a `kms` runner that drives the real CLI in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ holds kmshelp and vectorutil
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests.servers

from kmshelp import Kms, base_env  # noqa: E402


@pytest.fixture
def kms(tmp_path) -> Kms:
    """A runner with an empty (not yet initialised) vault path."""
    return Kms(tmp_path, base_env(tmp_path))


@pytest.fixture
def vault(kms) -> Kms:
    """A runner with an initialised vault (env master key)."""
    kms.ok("init")
    return kms
