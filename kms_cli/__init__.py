"""kms-cli: a local key-management and secrets vault for the command line."""

__version__ = "0.1.0"
