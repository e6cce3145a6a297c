"""Settings: a flag beats an environment variable beats config.toml beats the default."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kms_cli.errors import UsageError

# config.toml key -> (environment variable, default)
SETTINGS = {
    "vault": ("KMS_CLI_VAULT", None),
    "namespace": ("KMS_CLI_NAMESPACE", ""),
    "unlock": ("KMS_CLI_UNLOCK", None),
    "passphrase_file": (None, None),
    "timeout": ("KMS_CLI_TIMEOUT", "10"),
    "retries": ("KMS_CLI_RETRIES", "3"),
    "no_color": ("NO_COLOR", None),
}


def config_path(environ) -> str:
    path = environ.get("KMS_CLI_CONFIG")
    if path:
        return path
    from platformdirs import user_config_dir

    return os.path.join(user_config_dir("kms-cli"), "config.toml")


def default_vault_path() -> str:
    from platformdirs import user_data_dir

    return os.path.join(user_data_dir("kms-cli"), "vault.db")


def _load_file(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        import tomllib  # Python 3.11+: fast, read-only

        with open(path, "rb") as f:
            data = tomllib.load(f)
    except ImportError:  # pragma: no cover - Python 3.10
        import tomlkit

        with open(path, encoding="utf-8") as f:
            data = tomlkit.parse(f.read()).unwrap()
    except Exception as exc:
        raise UsageError(f"cannot read config file {path}: {exc.__class__.__name__}") from None
    unknown = set(data) - set(SETTINGS)
    if unknown:
        raise UsageError(f"unknown setting {sorted(unknown)[0]!r} in {path}",
                         hint="known settings: " + ", ".join(SETTINGS))
    return data


@dataclass
class Settings:
    vault: str
    namespace: str
    unlock: str | None
    passphrase_file: str | None
    timeout: float
    retries: int
    no_color: bool


def resolve(flags: dict, environ) -> Settings:
    """Merge flags (already parsed), environment and the config file."""
    file_values: dict | None = None
    values = {}
    for key, (var, default) in SETTINGS.items():
        if flags.get(key) not in (None, False):
            values[key] = flags[key]
            continue
        if var and environ.get(var) not in (None, "") or (key == "no_color" and var in environ):
            values[key] = environ.get(var)
            continue
        if file_values is None:
            file_values = _load_file(config_path(environ))
        values[key] = file_values.get(key, default)
    try:
        timeout = float(values["timeout"])
        retries = int(values["retries"])
    except (TypeError, ValueError):
        raise UsageError("KMS_CLI_TIMEOUT must be a number of seconds and KMS_CLI_RETRIES a whole number") from None
    if timeout <= 0 or retries < 0:
        raise UsageError("KMS_CLI_TIMEOUT must be positive and KMS_CLI_RETRIES not negative")
    return Settings(
        vault=values["vault"] or default_vault_path(),
        namespace=values["namespace"] or "",
        unlock=values["unlock"] or None,
        passphrase_file=values["passphrase_file"],
        timeout=timeout,
        retries=retries,
        no_color=bool(values["no_color"]) or "NO_COLOR" in environ,
    )
