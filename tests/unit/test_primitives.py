"""kms_cli.crypto.primitives: the small building blocks, and the short import path they take."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers import aead

from kms_cli.crypto import primitives


def test_aead_classes_are_cryptographys_own():
    # primitives takes them from cryptography's compiled core to skip importing the ciphers
    # package; they must be the very classes the public module exports.
    assert primitives.AESGCM is aead.AESGCM
    assert primitives.ChaCha20Poly1305 is aead.ChaCha20Poly1305


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [(b"", b"", True), (b"abc", b"abc", True), (b"abc", b"abd", False), (b"abc", b"ab", False),
     (bytearray(b"\x00" * 32), bytes(32), True), (memoryview(b"k" * 16), b"k" * 16, True)],
)
def test_equal(a, b, same):
    assert primitives.equal(a, b) is same


def test_hot_path_imports_stay_small():
    """A secret read must not pay for modules it does not use (each costs cold-start time)."""
    code = (
        "import sys\n"
        "import kms_cli.vault, kms_cli.vault.secrets, kms_cli.cli.entry, kms_cli.cli.secret, kms_cli.providers.env\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    unwanted = {"hmac", "hashlib", "_hashlib", "signal", "base64", "cryptography.hazmat.primitives.ciphers",
                "kms_cli.crypto.streaming", "mmap", "concurrent.futures",
                "typer", "click", "rich", "tomlkit", "platformdirs", "boto3", "hvac", "pkcs11", "keyring"}
    assert loaded & unwanted == set()
