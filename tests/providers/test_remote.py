"""The bounded, retried call helper shared by the remote sources (fake clock and sleep)."""

from __future__ import annotations

import threading
import time

import pytest

from kms_cli.errors import NotFoundError, UnavailableError, UnlockError
from kms_cli.providers import remote
from kms_cli.providers.remote import Failure, Policy


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Transient(Exception):
    pass


class Fatal(Exception):
    pass


def classify(exc):
    if isinstance(exc, Transient):
        return Failure(UnavailableError("busy"), retryable=True)
    return Failure(UnlockError("denied"))


def policy(ft: FakeTime, **kw) -> Policy:
    defaults = dict(timeout=10, retries=3, sleep=ft.sleep, clock=ft.clock, rand=lambda: 1.0, watchdog=False)
    defaults.update(kw)
    return Policy(**defaults)


def failing(errors, result="ok"):
    calls = []

    def fn(remaining):
        calls.append(remaining)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


def test_success_first_time_passes_the_whole_budget():
    ft = FakeTime()
    fn, calls = failing([])
    assert remote.call(fn, classify, policy=policy(ft), what="op") == "ok"
    assert calls == [10]
    assert ft.slept == []


def test_retryable_errors_are_retried_with_exponential_backoff():
    ft = FakeTime()
    fn, calls = failing([Transient(), Transient()])
    assert remote.call(fn, classify, policy=policy(ft), what="op") == "ok"
    assert ft.slept == [0.2, 0.4]
    assert len(calls) == 3
    assert calls[1] == pytest.approx(10 - 0.2)


def test_full_jitter_and_cap():
    p = Policy(base=1.0, cap=4.0, rand=lambda: 0.5)
    assert [p.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert Policy(rand=lambda: 0.0).backoff(3) == 0.0


def test_retries_exhausted_raise_the_last_error_with_attempts():
    ft = FakeTime()
    fn, calls = failing([Transient()] * 10)
    with pytest.raises(UnavailableError, match=r"^busy \(after 4 attempts\)$") as info:
        remote.call(fn, classify, policy=policy(ft), what="op")
    assert len(calls) == 4
    assert isinstance(info.value.__cause__, Transient)


def test_non_retryable_errors_are_not_retried():
    ft = FakeTime()
    fn, calls = failing([Fatal()])
    with pytest.raises(UnlockError, match="^denied$") as info:
        remote.call(fn, classify, policy=policy(ft), what="op")
    assert len(calls) == 1 and ft.slept == []
    assert isinstance(info.value.__cause__, Fatal)


def test_retries_zero_means_one_attempt():
    ft = FakeTime()
    fn, calls = failing([Transient()])
    with pytest.raises(UnavailableError, match="^busy$"):
        remote.call(fn, classify, policy=policy(ft, retries=0), what="op")
    assert len(calls) == 1


def test_a_backoff_past_the_deadline_ends_the_call():
    ft = FakeTime()

    def slow(remaining):
        ft.now += 4.0  # each attempt takes 4 of the 10 seconds
        raise Transient()

    with pytest.raises(UnavailableError, match="after 2 attempts"):
        remote.call(slow, classify, policy=policy(ft, retries=10, base=1.0, cap=1.0), what="op")
    assert ft.now - 100.0 <= 10


def test_project_errors_raised_inside_pass_through_unchanged():
    ft = FakeTime()
    original = NotFoundError("no such key")

    def fn(remaining):
        raise original

    def passthrough(exc):
        return Failure(exc)

    with pytest.raises(NotFoundError) as info:
        remote.call(fn, passthrough, policy=policy(ft), what="op")
    assert info.value is original


def test_watchdog_abandons_an_attempt_that_overruns():
    release = threading.Event()

    def hang(remaining):
        release.wait(10)
        return "late"

    start = time.monotonic()
    with pytest.raises(UnavailableError, match="timed out after 0.3s"):
        remote.call(hang, classify, policy=Policy(timeout=0.3, retries=3), what="op")
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 0.3 + remote.WATCHDOG_GRACE + 0.3


def test_watchdog_returns_values_and_errors_of_the_worker():
    assert remote.call(lambda r: 42, classify, policy=Policy(timeout=2), what="op") == 42
    with pytest.raises(UnlockError):
        remote.call(lambda r: (_ for _ in ()).throw(Fatal()), classify, policy=Policy(timeout=2), what="op")


def test_policy_from_options():
    from kms_cli.providers.base import SourceOptions

    p = Policy.from_options(SourceOptions(timeout=2.5, retries=1))
    assert (p.timeout, p.retries) == (2.5, 1)
    assert Policy.from_options(SourceOptions(retries=-3)).retries == 0


@pytest.mark.parametrize(
    "host, loop",
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("a.localhost", True), ("10.0.0.1", False), ("example.com", False), ("", False), (None, False),
     ("localhost.example.com", False)],
)
def test_is_loopback_host(host, loop):
    assert remote.is_loopback_host(host) is loop


def test_is_loopback_url():
    assert remote.is_loopback_url("http://127.0.0.1:8200")
    assert not remote.is_loopback_url("https://kms.example.com")


@pytest.mark.parametrize(
    "status, cls, retry",
    [(401, UnlockError, False), (403, UnlockError, False), (404, NotFoundError, False),
     (429, UnavailableError, True), (500, UnavailableError, True), (503, UnavailableError, True),
     (408, UnavailableError, True), (418, UnavailableError, False)],
)
def test_http_failure(status, cls, retry):
    failure = remote.http_failure(status, "x")
    assert type(failure.error) is cls and failure.retryable is retry


def test_source_reprs_hide_the_environment():
    from kms_cli.providers import aws_kms, gcp_kms, hcvault, keyring, passphrase, pkcs11
    from kms_cli.providers.base import SourceOptions

    secret = "s3cr3t-value"
    env = {"VAULT_TOKEN": secret, "KMS_CLI_PASSPHRASE": secret, "AWS_SECRET_ACCESS_KEY": secret, "PIN": secret,
           "VAULT_ADDR": "http://127.0.0.1:1"}
    options = SourceOptions(environ=env)
    sources = [
        aws_kms.from_uri("aws-kms://alias/x", options),
        gcp_kms.from_uri("gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k", options),
        hcvault.from_uri("hcvault://transit/keys/k", options),
        keyring.from_uri("keyring:x", options),
        passphrase.from_uri("passphrase", options),
        pkcs11.from_uri("pkcs11:token=t;object=o?module-path=/x.so&pin-source=env:PIN", options),
    ]
    from kms_cli.providers import azure_kv

    sources.append(azure_kv.from_uri("azure-kv://v.vault.azure.net/keys/k", options, credential=object()))
    for source in sources:
        assert secret not in repr(source)
        assert secret not in source.uri
