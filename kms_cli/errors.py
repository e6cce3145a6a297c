"""The error tree: every failure kms-cli reports, each with its exit code and optional hint."""

from __future__ import annotations


class KmsError(Exception):
    """Base of every error kms-cli reports to its user.

    Messages are lowercase, carry no trailing period and never contain secret
    material (values, keys, passphrases); `hint` is an optional second line.
    """

    exit_code = 1
    code = "internal"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(KmsError):
    exit_code = 2
    code = "usage"


class NotFoundError(KmsError):
    exit_code = 3
    code = "not_found"


class UnlockError(KmsError):
    """Wrong passphrase or master key, or the provider denied access."""

    exit_code = 4
    code = "unlock_failed"


class NoIdentityError(UnlockError):
    """No identity given opens a recipient slot (grouped with the others in the unlock error)."""


class IntegrityError(KmsError):
    """Authentication of a ciphertext, signature, vault row or audit chain failed."""

    exit_code = 5
    code = "integrity"


class StateError(KmsError):
    """The state of a key, version, secret or slot forbids the operation."""

    exit_code = 6
    code = "forbidden"


class UnavailableError(KmsError):
    """A provider could not be reached: network, timeout, throttling, HSM absent."""

    exit_code = 7
    code = "unavailable"


class StandbyError(UnavailableError):
    """A write to a PostgreSQL standby: the vault is read-only there (exit 7, hint: the primary)."""


class AlreadyExistsError(KmsError):
    exit_code = 8
    code = "already_exists"


class CommandNotFoundError(KmsError):
    """`exec`: CMD is not found (as a shell reports it, exit 127)."""

    exit_code = 127
    code = "command_not_found"


class CommandNotExecutableError(KmsError):
    """`exec`: CMD is found but cannot be executed (exit 126)."""

    exit_code = 126
    code = "command_not_executable"


class DegradedError(KmsError):
    """`health` found warnings only."""

    exit_code = 10
    code = "degraded"
