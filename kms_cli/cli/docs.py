"""Generated documentation: shell completion scripts (Typer's) and the man page, both from the command table.

`scripts/gen-docs` writes them into completions/ and man/; tests check the committed copies are current.
"""

from __future__ import annotations

from kms_cli import __version__
from kms_cli.cli import spec

# The man page's date: the release date of each version, so that the page is the same whoever
# generates it and whenever (tests/cli/test_docs.py compares the committed copy). Add the new
# version's date when __version__ changes.
RELEASE_DATES = {"0.1.0": "2026-11-22"}

SHELLS = {"bash": "kms-cli.bash", "zsh": "_kms-cli", "fish": "kms-cli.fish"}


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="kms-cli", complete_var="_KMS_CLI_COMPLETE", shell=shell)


def _roff(text: str, words: bool = True) -> str:
    """Text for groff: backslashes and dashes escaped (\\- is a dash, not a hyphen), and with
    `words`, no hyphenation inside any word that holds a dash (\\%): option names, commands,
    algorithm names and paths are never broken across lines."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if words:
            line = " ".join(("\\%" + w) if "\\-" in w else w for w in line.split(" "))
        lines.append(("\\&" + line) if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _opt_line(o: spec.Opt) -> str:
    flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in o.flags)
    if o.kind != "flag":
        flags += f" \\fI{_roff(o.metavar or o.dest.upper())}\\fR"
    return flags


def _opt_text(o: spec.Opt) -> str:
    text = o.help
    if o.envvar:
        text += f" Environment: {o.envvar}."
    default = o.default_doc or (str(o.default) if o.kind != "flag" and o.default not in (None, "") else None)
    if default:
        text += f" Default: {default}."
    return _roff(text)


def _usage(c: spec.Cmd) -> str:
    parts = ["\\fBkms\\-cli\\fR", *(f"\\fB{_roff(p)}\\fR" for p in c.path)]
    for o in c.opts:
        f = _roff(o.flags[-1])
        item = f"\\fB{f}\\fR" + ("" if o.kind == "flag" else f" \\fI{_roff(o.metavar or o.dest.upper())}\\fR")
        parts.append(item if o.required else f"[{item}]")
    for a in c.args:
        m = f"\\fI{_roff(a.metavar or a.dest.upper())}\\fR"
        parts.append(("\\-\\- " + m) if a.rest else (m if a.required else f"[{m}]"))
    return " ".join(parts)


def _examples(examples, title: bool = True) -> list[str]:
    out = [".PP", "Examples:", ".RS 4", ".nf"] if title else [".nf"]
    for what, line in examples:
        out += [_roff("# " + what, words=False), _roff(line, words=False)]
    return out + [".fi", ".RE"] if title else out + [".fi"]


ENVIRONMENT = [
    ("KMS_CLI_VAULT", "vault file (like --vault)"),
    ("KMS_CLI_NAMESPACE", "namespace (like --namespace)"),
    ("KMS_CLI_UNLOCK", "slot source or number to unlock with (like --unlock)"),
    ("KMS_CLI_MASTER_KEY", "the default env: master key: 32 bytes as 64 hex characters or base64"),
    ("KMS_CLI_PASSPHRASE", "the passphrase of a passphrase slot when there is no TTY"),
    ("KMS_CLI_CONFIG", "config file (default: the platform config directory's kms-cli/config.toml)"),
    ("KMS_CLI_TIMEOUT", "seconds per provider call (default 10)"),
    ("KMS_CLI_RETRIES", "retries of a provider call, with backoff (default 3)"),
    ("KMS_CLI_DEBUG", "1 prints the traceback of an internal error"),
    ("NO_COLOR", "plain output"),
]

EXIT_CODES = [
    ("0", "success"), ("1", "unexpected internal error (a bug)"), ("2", "usage error"),
    ("3", "not found (key, version, secret, slot, or the vault file)"),
    ("4", "unlock failed: wrong passphrase or master key, provider denied access"),
    ("5", "integrity failure: a ciphertext, signature, vault row or the audit chain failed authentication"),
    ("6", "state forbids it: disabled, revoked, destroyed or past-grace version, expired secret, last slot, "
          "wrong purpose"),
    ("7", "provider unavailable: network, timeout, HSM absent"), ("8", "already exists"),
    ("10", "health degraded"),
]


def _release_date() -> str:
    try:
        return RELEASE_DATES[__version__]
    except KeyError:
        raise SystemExit(f"kms_cli/cli/docs.py: add the release date of {__version__} to RELEASE_DATES") from None


def manpage() -> str:
    out = [
        f'.TH KMS\\-CLI 1 "{_release_date()}" "kms\\-cli {__version__}" "User Commands"',
        ".SH NAME",
        "kms\\-cli \\- a local key\\-management and secrets vault",
        ".SH SYNOPSIS",
        "\\fBkms\\-cli\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _roff("kms-cli keeps named, versioned keys and secrets in one SQLite file, every piece of key "
              "material and every secret value encrypted under a root key sealed by one or more master key "
              "sources (env:VAR, passphrase, keyring:SERVICE, pkcs11:, aws-kms://, gcp-kms://, azure-kv://, "
              "hcvault://)."),
        ".SH GLOBAL OPTIONS",
    ]
    for o in spec.GLOBAL_OPTS:
        out += [".TP", _opt_line(o), _opt_text(o)]
    out += [".TP", "\\fB\\-\\-version\\fR", "Print the version and exit.",
            ".TP", "\\fB\\-h\\fR, \\fB\\-\\-help\\fR", "Show help for kms\\-cli or any command."]
    out.append(".SH EXAMPLES")
    out += _examples(spec.EXAMPLES, title=False)
    out.append(".SH COMMANDS")
    for c in spec.COMMANDS:
        out += [".SS " + _roff(" ".join(c.path), words=False), _usage(c), ".PP", _roff(c.help)]
        if c.epilog:
            out += [".PP", _roff(spec.expand(c.epilog))]
        for a in c.args:
            out += [".TP", f"\\fI{_roff(a.metavar or a.dest.upper())}\\fR", _roff(a.help)]
        for o in c.opts:
            out += [".TP", _opt_line(o), _opt_text(o)]
        if c.examples:
            out += _examples(c.examples)
    out.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        out += [".TP", f"\\fB{_roff(name)}\\fR", _roff(text)]
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_CODES:
        out += [".TP", f"\\fB{code}\\fR", _roff(text)]
    out += [".SH FILES", ".TP", "\\fIvault.db\\fR",
            _roff("the vault, under the platform data directory (kms-cli/vault.db) unless --vault is given; "
                  "created 0600 with its -wal and -shm files"),
            ".TP", "\\fIvault.db.bak\\-TIME\\fR, \\fIvault.db.restore\\-journal\\fR",
            _roff("beside the vault during a restore: the previous vault, kept until the next successful "
                  "command, and the journal with which the next command finishes or rolls back a restore "
                  "that was killed (the path always holds the old or the new vault)"),
            ".TP", "\\fI.kms\\-cli\\-*.tmp\\fR",
            _roff("beside an -o OUT file (and a backup) while it is written; removed on any error and on "
                  "SIGINT, SIGTERM, SIGHUP or SIGPIPE (exit 128+N)"),
            ".TP", "\\fI$XDG_STATE_HOME/kms\\-cli/pending/\\fR (default \\fI~/.local/state/kms\\-cli/pending/\\fR)",
            _roff("0700; one marker per file a kms-cli process would leave behind if killed with SIGKILL "
                  "(temporary outputs, backup copies, exec --env-file-out files): every command removes the "
                  "files of markers whose processes (kms-cli and, for an env file, CMD) have all ended, and "
                  "only while each is still the file kms-cli created")]
    out += [".SH NOTES",
            _roff("A command that opens a vault sets its soft core-file limit to 0 and, on Linux, makes "
                  "itself non-dumpable (PR_SET_DUMPABLE 0), so no core dump holds key material or secret "
                  "values. Programs started by exec inherit the soft limit 0 (raise it with ulimit -c if "
                  "they need core files); execve(2) makes them dumpable again.")]
    return "\n".join(out) + "\n"
