"""The one crypto layer: the only package that imports cryptography, argon2 or pqcrypto.

Recipes (chunked streams, wraps, signatures, KEMs) are built here on primitives;
everything above it sees bytes in, bytes out, and kms_cli.errors on failure.
"""
