"""The contract every master key source passes; each source's test module subclasses it.

A subclass supplies only how to build its source:

* fixture `source`: a configured, working source.
* fixture `denied`: `(source, blob)` where the service refuses the caller
  (wrong credentials, wrong PIN, locked keyring, wrong passphrase); unwrapping
  `blob` with CTX_A must raise UnlockError.
* `module` and `sdk_modules`: importing the module must not import the SDK.
* `tamper(blob)` when flipping one bit of the last byte is not meaningful.

Remote sources subclass RemoteSourceContract and also supply `source_at(endpoint, timeout, retries)`
(the source pointed at an arbitrary loopback endpoint, for the fault servers)
and fixture `stoppable`: `(source, stop)` bound to a server of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kms_cli.errors import UnavailableError, UnlockError
from tests.servers import closed_port
from tests.servers.faults import HangServer, StatusServer

ROOT = bytes(range(32))
OTHER_ROOT = bytes(range(100, 132))
CTX_A = {"kms-cli:vault": "a1" * 16}
CTX_B = {"kms-cli:vault": "b2" * 16}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Timing of the fault tests: tight timeouts keep the suite fast.
FAULT_TIMEOUT = 1.5
FAULT_RETRIES = 2
SLACK = 1.0  # watchdog grace (0.5 s) plus scheduling


def flip_last_bit(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


class SourceContract:
    module: str = ""
    sdk_modules: tuple[str, ...] = ()
    remote: bool = False

    def tamper(self, blob: bytes) -> bytes:
        return flip_last_bit(blob)

    @pytest.fixture
    def source(self):
        raise NotImplementedError

    @pytest.fixture
    def denied(self):
        raise NotImplementedError

    # -- the interface -------------------------------------------------------
    def test_shape(self, source):
        assert source.scheme and source.uri
        assert isinstance(source.uri, str)
        assert isinstance(source.secret_env_vars(), list)
        assert source.is_configured() is True

    def test_round_trip(self, source):
        blob = source.wrap(ROOT, CTX_A)
        assert isinstance(blob, bytes)
        assert ROOT not in blob
        assert source.unwrap(blob, CTX_A) == ROOT

    def test_each_wrap_is_fresh(self, source):
        one, two = source.wrap(ROOT, CTX_A), source.wrap(ROOT, CTX_A)
        assert one != two
        assert source.unwrap(one, CTX_A) == source.unwrap(two, CTX_A) == ROOT

    def test_slot_of_another_vault_does_not_open(self, source):
        blob_a = source.wrap(ROOT, CTX_A)
        blob_b = source.wrap(OTHER_ROOT, CTX_B)  # vault B also uses this source
        assert source.unwrap(blob_b, CTX_B) == OTHER_ROOT
        with pytest.raises(UnlockError):
            source.unwrap(blob_a, CTX_B)

    def test_tampered_blob_does_not_open(self, source):
        blob = source.wrap(ROOT, CTX_A)
        with pytest.raises(UnlockError):
            source.unwrap(self.tamper(blob), CTX_A)

    def test_truncated_blob_does_not_open(self, source):
        blob = source.wrap(ROOT, CTX_A)
        for cut in (blob[: len(blob) // 2], blob[:1], b""):
            with pytest.raises(UnlockError):
                source.unwrap(cut, CTX_A)

    def test_denied(self, denied):
        source, blob = denied
        with pytest.raises(UnlockError) as info:
            source.unwrap(blob, CTX_A)
        assert info.value.exit_code == 4

    def test_import_does_not_load_the_sdk(self):
        code = (
            "import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(','.join(m for m in sys.argv[2:] if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, self.module, *self.sdk_modules],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert out == "", f"importing {self.module} loaded {out}"


class RemoteSourceContract(SourceContract):
    """The contract plus the fault tests of sources that call a network service."""

    remote = True
    fault_scheme: str = "http"  # azure needs https for its fault servers

    def source_at(self, endpoint: str, *, timeout: float, retries: int):
        raise NotImplementedError

    @pytest.fixture
    def stoppable(self):
        raise NotImplementedError

    def test_unreachable_is_unavailable_within_the_timeout(self):
        source = self.source_at(f"{self.fault_scheme}://127.0.0.1:{closed_port()}", timeout=FAULT_TIMEOUT,
                                retries=FAULT_RETRIES)
        start = time.monotonic()
        with pytest.raises(UnavailableError) as info:
            source.wrap(ROOT, CTX_A)
        assert time.monotonic() - start < FAULT_TIMEOUT + SLACK
        assert info.value.exit_code == 7

    def test_hanging_server_is_bounded_by_the_timeout(self):
        hang = HangServer().start()
        try:
            source = self.source_at(hang.url(self.fault_scheme), timeout=FAULT_TIMEOUT, retries=3)
            start = time.monotonic()
            with pytest.raises(UnavailableError):
                source.wrap(ROOT, CTX_A)
            elapsed = time.monotonic() - start
        finally:
            hang.stop()
        assert FAULT_TIMEOUT * 0.5 < elapsed < FAULT_TIMEOUT + SLACK

    def test_server_error_is_retried_then_unavailable(self, tls_cert):
        server = StatusServer(500, tls=tls_cert if self.fault_scheme == "https" else None).start()
        try:
            source = self.source_at(server.url, timeout=5, retries=FAULT_RETRIES)
            start = time.monotonic()
            with pytest.raises(UnavailableError) as info:
                source.wrap(ROOT, CTX_A)
            elapsed = time.monotonic() - start
        finally:
            server.stop()
        assert server.requests == FAULT_RETRIES + 1
        assert "after 3 attempts" in str(info.value)
        assert elapsed < 5

    def test_server_stopped_mid_way(self, stoppable):
        source, stop = stoppable
        blob = source.wrap(ROOT, CTX_A)
        assert source.unwrap(blob, CTX_A) == ROOT
        stop()
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            source.unwrap(blob, CTX_A)
        assert time.monotonic() - start < source.policy.timeout + SLACK
