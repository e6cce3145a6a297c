"""Argon2id (RFC 9106) key derivation for passphrase slots."""

from __future__ import annotations

from dataclasses import dataclass

# RFC 9106's second recommended option, raised to at least the issue's floor.
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_TIME_COST = 3
DEFAULT_PARALLELISM = 4
SALT_LEN = 16


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int = DEFAULT_MEMORY_KIB
    time_cost: int = DEFAULT_TIME_COST
    parallelism: int = DEFAULT_PARALLELISM

    def as_dict(self) -> dict:
        return {"m": self.memory_kib, "t": self.time_cost, "p": self.parallelism}

    @classmethod
    def from_dict(cls, d: dict) -> "Argon2Params":
        return cls(memory_kib=int(d["m"]), time_cost=int(d["t"]), parallelism=int(d["p"]))


def derive_key(passphrase: bytes, salt: bytes, params: Argon2Params, length: int = 32) -> bytes:
    """Argon2id(passphrase, salt) -> `length` bytes."""
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(
        secret=passphrase,
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=length,
        type=Type.ID,
    )
