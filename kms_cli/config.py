"""Settings: a flag beats an environment variable beats config.toml beats the default."""

from __future__ import annotations

import os
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
    "identity": ("KMS_CLI_IDENTITY", None),
}

# config.toml key -> the TOML types it takes, as said in an error
_TYPES = {
    "vault": ((str,), "a string"),
    "namespace": ((str,), "a string"),
    "unlock": ((str,), "a string"),
    "passphrase_file": ((str,), "a string"),
    "timeout": ((int, float, str), "a number of seconds"),
    "retries": ((int, str), "a whole number"),
    "no_color": ((bool,), "true or false"),
    "identity": ((list, str), "an array of paths"),
}
MAX_TIMEOUT = 3600  # seconds per provider call: KMS_CLI_TIMEOUT is more than 0 and at most this
MAX_RETRIES = 100  # KMS_CLI_RETRIES is from 0 to this


def _toml_type(value) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                       (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    return "a date or time"


def _user_dir(kind: str, environ) -> str:
    """platformdirs' user_config_dir / user_data_dir for "kms-cli".

    On Linux and the BSDs this is the XDG rule, computed here because importing
    platformdirs costs more than a `secret get` may spend on start-up; elsewhere
    platformdirs answers (tests check both agree).
    """
    import sys

    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        var, default = {"config": ("XDG_CONFIG_HOME", "~/.config"), "data": ("XDG_DATA_HOME", "~/.local/share")}[kind]
        base = environ.get(var, "").strip() or os.path.expanduser(default)
        return os.path.join(base, "kms-cli")
    import platformdirs

    return (platformdirs.user_config_dir if kind == "config" else platformdirs.user_data_dir)("kms-cli")


def config_path(environ) -> str:
    return environ.get("KMS_CLI_CONFIG") or os.path.join(_user_dir("config", environ), "config.toml")


def default_vault_path(environ=None) -> str:
    return os.path.join(_user_dir("data", os.environ if environ is None else environ), "vault.db")


MAX_CONFIG_SIZE = 1 << 20  # bytes: a config.toml is a few lines; /dev/zero or a huge file is refused


def _toml():
    """The TOML reader: the standard library's tomllib (3.11+), else tomli (the same parser)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _decode_error(path: str, text: str, exc: ValueError) -> UsageError:
    """A clean message from tomllib's TOMLDecodeError: file, line and what is wrong."""
    import re

    message = str(exc)
    where = re.search(r" \(at (?:line (\d+), column \d+|end of document)\)\Z", message)
    what = message[: where.start()] if where else message
    what = (what[:1].lower() + what[1:])[:200] or "invalid TOML"
    if where and where.group(1):
        line = f" line {where.group(1)}"
    else:  # found at the end of the document: the last line
        line = f" line {max(1, text.count(chr(10)) + (0 if text.endswith(chr(10)) else 1))} (at its end)"
    return UsageError(f"config file {path}{line}: {what}", hint="config.toml is TOML: key = \"value\" lines")


def _read_config(path: str) -> bytes | None:
    """The bytes of the config file, None when there is none; UsageError when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_SIZE + 1)
    except (FileNotFoundError, NotADirectoryError):  # no such file (as os.path.exists said before)
        return None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {(exc.strerror or exc.__class__.__name__).lower()}") from None
    if len(data) > MAX_CONFIG_SIZE:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_SIZE >> 20} MiB")
    return data


def _load_file(path: str) -> dict:
    raw = _read_config(path)
    if raw is None:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"config file {path} line {line}: not UTF-8 text") from None
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise _decode_error(path, text, exc) from None
    except RecursionError:
        raise UsageError(f"config file {path}: values nested too deeply") from None
    unknown = set(data) - set(SETTINGS)
    if unknown:
        raise UsageError(f"unknown setting {sorted(unknown)[0][:60]!r} in {path}",
                         hint="known settings: " + ", ".join(SETTINGS))
    for key, value in data.items():
        kinds, what = _TYPES[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise UsageError(f"setting {key} in {path} must be {what}, not {_toml_type(value)}")
    return data


class Settings:
    """The resolved settings of one invocation."""

    __slots__ = ("vault", "namespace", "unlock", "passphrase_file", "timeout", "retries", "no_color", "identity")

    def __init__(self, **values):
        for k in self.__slots__:
            setattr(self, k, values[k])


def resolve(flags: dict, environ) -> Settings:
    """Merge flags (already parsed), environment and the config file."""
    file_values: dict | None = None
    values = {}
    origin = {}  # key -> where its value came from, for an error about it
    for key, (var, default) in SETTINGS.items():
        if flags.get(key) not in (None, False, []):
            values[key] = flags[key]
            continue
        if var and environ.get(var) not in (None, "") or (key == "no_color" and var in environ):
            values[key] = environ.get(var)
            origin[key] = var
            continue
        if file_values is None:
            file_values = _load_file(config_path(environ))
        values[key] = file_values.get(key, default)
        origin[key] = f"setting {key} in {config_path(environ)}" if key in file_values else var
    return Settings(
        vault=values["vault"] or default_vault_path(environ),
        namespace=values["namespace"] or "",
        unlock=values["unlock"] or None,
        passphrase_file=values["passphrase_file"],
        timeout=_timeout(values["timeout"], origin.get("timeout", "KMS_CLI_TIMEOUT")),
        retries=_retries(values["retries"], origin.get("retries", "KMS_CLI_RETRIES")),
        no_color=bool(values["no_color"]) or "NO_COLOR" in environ,
        identity=_identities(values["identity"], origin.get("identity", "KMS_CLI_IDENTITY")),
    )


def _identities(raw, what: str) -> list[str]:
    """Identity file paths: a list (flags, config.toml), or paths joined by ':' (KMS_CLI_IDENTITY)."""
    if raw is None:
        return []
    items = raw.split(":") if isinstance(raw, str) else raw
    if not all(isinstance(p, str) for p in items):
        raise UsageError(f"invalid {what}: identity paths are strings")
    return [p for p in items if p]


def _timeout(raw, what: str = "KMS_CLI_TIMEOUT") -> float:
    """Seconds per provider call: more than 0, at most MAX_TIMEOUT (never NaN or infinite)."""
    try:
        timeout = float(raw)
    except (TypeError, ValueError, OverflowError):
        timeout = None
    if timeout is None or not 0 < timeout <= MAX_TIMEOUT:  # NaN fails every comparison
        raise UsageError(f"{what} must be a number of seconds above 0 and at most {MAX_TIMEOUT}, "
                         f"got {str(raw)[:40]!r}")
    return timeout


def _retries(raw, what: str = "KMS_CLI_RETRIES") -> int:
    """Retries per provider call: a whole number from 0 to MAX_RETRIES."""
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 3 or int(text) > MAX_RETRIES:
        raise UsageError(f"{what} must be a whole number from 0 to {MAX_RETRIES}, got {text[:40]!r}")
    return int(text)
