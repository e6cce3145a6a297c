"""Bounded, retried calls to remote key services, shared by every cloud/network source.

Semantics (KMS_CLI_TIMEOUT, KMS_CLI_RETRIES):

* `timeout` bounds one provider operation (a `wrap` or an `unwrap`) from start
  to finish, retries included. Each attempt receives the time still left and
  passes it to its SDK as the connect/read timeout; a watchdog thread also
  abandons an attempt that overruns it (DNS resolution, credential chains and
  other SDK internals ignore socket timeouts), so a hung service costs at most
  `timeout` plus a small grace.
* `retries` extra attempts are made, only for failures the caller classifies as
  retryable (throttling, 5xx, connection refused/reset, timeouts): never for
  denied, not found or a blob that does not open. Backoff is exponential with
  full jitter (sleep = uniform(0, min(cap, base * 2**n))), and a sleep that
  would end past the deadline ends the call instead.
* Sleep, clock and randomness are injectable for tests.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from kms_cli.errors import KmsError, UnavailableError

log = logging.getLogger("kms_cli.providers")

T = TypeVar("T")

BACKOFF_BASE = 0.2  # seconds
BACKOFF_CAP = 2.0
WATCHDOG_GRACE = 0.5  # seconds an attempt may overrun the deadline before it is abandoned
MIN_ATTEMPT = 0.05  # no attempt starts with less time than this left


@dataclass(frozen=True)
class Failure:
    """How a source classifies one failed attempt: the error to raise and whether to retry."""

    error: KmsError
    retryable: bool = False


@dataclass
class Policy:
    """Timeout budget and retry schedule of one provider operation."""

    timeout: float = 10.0
    retries: int = 3
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rand: Callable[[], float] = field(default=random.random, repr=False)
    watchdog: bool = True

    @classmethod
    def from_options(cls, options) -> "Policy":
        timeout = float(getattr(options, "timeout", 10.0) or 10.0)
        retries = int(getattr(options, "retries", 3))
        return cls(timeout=max(timeout, MIN_ATTEMPT), retries=max(retries, 0))

    def backoff(self, attempt: int) -> float:
        """Full-jitter delay before retry number `attempt` (0-based)."""
        return self.rand() * min(self.cap, self.base * (2 ** attempt))


class _Overrun(Exception):
    """An attempt outlived its budget and was abandoned by the watchdog."""


def _run_bounded(fn: Callable[[float], T], budget: float, watchdog: bool) -> T:
    if not watchdog:
        return fn(budget)
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(budget)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="kms-cli-remote-call", daemon=True)
    worker.start()
    worker.join(budget + WATCHDOG_GRACE)
    if worker.is_alive():
        raise _Overrun()
    if "error" in box:
        raise box["error"]
    return box["value"]


def call(
    fn: Callable[[float], T],
    classify: Callable[[BaseException], Failure],
    *,
    policy: Policy,
    what: str,
) -> T:
    """Run `fn(remaining_seconds)` within the policy's budget, retrying retryable failures.

    `classify` turns any exception raised by `fn` into a Failure; `what` names
    the operation for messages ("aws kms decrypt"). Raises the classified
    KmsError, chained to the SDK exception, or UnavailableError on timeout.
    """
    deadline = policy.clock() + policy.timeout
    attempt = 0
    while True:
        remaining = deadline - policy.clock()
        try:
            return _run_bounded(fn, remaining, policy.watchdog)
        except _Overrun:
            raise UnavailableError(
                f"{what} timed out after {policy.timeout:g}s",
                hint="check the service address and network, or raise KMS_CLI_TIMEOUT",
            ) from None
        except Exception as exc:  # noqa: BLE001 - every SDK error is classified here
            failure = classify(exc)
            error = failure.error
            if not failure.retryable or attempt >= policy.retries:
                if failure.retryable and attempt:
                    error = _after(error, attempt + 1)
                if error is exc:
                    raise
                raise error from exc
            delay = policy.backoff(attempt)
            left = deadline - policy.clock()
            if left - delay < MIN_ATTEMPT:  # no time for another attempt
                if attempt == 0 and error is exc:
                    raise
                raise (_after(error, attempt + 1) if attempt else error) from exc
            log.debug("%s failed (%s); retry %d in %.2fs", what, error, attempt + 1, delay)
            policy.sleep(delay)
            attempt += 1


def _after(error: KmsError, attempts: int) -> KmsError:
    """The same error with the number of attempts made appended to its message."""
    clone = type(error)(f"{error.message} (after {attempts} attempts)", hint=error.hint)
    return clone


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback IP literals (never resolves names)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname)


def http_failure(status: int | None, message: str, *, not_found: str | None = None) -> Failure:
    """The usual mapping of an HTTP status to a Failure.

    401/403 denied (exit 4), 404 not found (exit 3), 408/429/5xx retryable
    unavailable (exit 7); anything else a non-retryable unavailable.
    """
    from kms_cli.errors import NotFoundError, UnlockError

    if status in (401, 403):
        return Failure(UnlockError(message, hint="check the credentials and the key's access policy"))
    if status == 404:
        return Failure(NotFoundError(not_found or message))
    if status in (408, 429) or (status is not None and status >= 500):
        return Failure(UnavailableError(message), retryable=True)
    return Failure(UnavailableError(message))
