"""The vault layer: policy over the store, the crypto layer and the master key sources.

`core` opens and unlocks, `keys`, `secrets`, `data` and `slots` hold each noun's policy.
"""

from kms_cli.providers.base import SourceOptions
from kms_cli.vault.core import Options, Vault

__all__ = ["Options", "SourceOptions", "Vault"]
