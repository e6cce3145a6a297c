"""SoftHSM2 tokens initialised into a temp directory, for the PKCS#11 tests.

SoftHSM reads SOFTHSM2_CONF once per process (at C_Initialize), so `SoftHsm`
sets it in os.environ before the module is first loaded and initialises every
token the tests need up front.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

SO_PIN = "87654321"
USER_PIN = "123456"
_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def module_path() -> str | None:
    return next((p for p in _MODULES if os.path.exists(p)), None)


def missing_reason() -> str | None:
    """Why the SoftHSM tests cannot run here, or None."""
    if shutil.which("softhsm2-util") is None or module_path() is None:
        return "softhsm2 is not installed (apt-get install -y softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install python-pkcs11)"
    return None


class SoftHsm:
    def __init__(self, labels: tuple[str, ...] = ("kms-cli",)) -> None:
        self.dir = tempfile.mkdtemp(prefix="kms-cli-softhsm-")
        self.conf = os.path.join(self.dir, "softhsm2.conf")
        self.labels = labels
        self.module = module_path() or ""

    def start(self) -> "SoftHsm":
        tokens = os.path.join(self.dir, "tokens")
        os.makedirs(tokens, mode=0o700)
        with open(self.conf, "w") as fh:
            fh.write(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = self.conf
        for label in self.labels:
            subprocess.run(
                ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN],
                env={**os.environ, "SOFTHSM2_CONF": self.conf},
                check=True,
                capture_output=True,
            )
        return self

    def stop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
