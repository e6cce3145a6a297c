"""The command table: the one source of truth for every command, option and help text.

Both the fast parser (`parse.py`, used to run commands without importing Typer)
and the Typer app (`typer_app.py`: help, completion, man page) are built from it.
Handlers are named as "module:function" and imported only when their command runs.
"""

from __future__ import annotations

from collections import namedtuple

# Plain namedtuples: the table builds about 130 of them on every start. Measured against the former
# hand-written record class (issue 11): defining the four classes costs ~0.1 ms more, building the
# rows ~0.1 ms less (namedtuple's __new__ is C-level tuple construction), the same import time of
# this module within the noise (see the commit that introduced this comment for the figures).
# typing.NamedTuple and dataclasses cost more (typing is not on every path).

Opt = namedtuple("Opt", ("flags", "dest", "help", "kind", "metavar", "default", "choices", "required", "envvar",
                         "empty"),
                 defaults=("str", None, None, None, False, None, False))
Opt.__doc__ = """An option: flags, destination, help; kind is str | int | dur | flag | multi (repeatable str).

`int` is a whole number from 1 to names.MAX_VERSION; `dur` a duration of at most 100 years,
checked by the parser and handed to the handler as text. An empty value is a usage error
unless `empty` (where "" means something: the root namespace, no prefix).
"""

Arg = namedtuple("Arg", ("dest", "help", "required", "rest", "metavar"), defaults=(True, False, None))
Arg.__doc__ = """A positional argument; `rest` collects every remaining token (exec's CMD [ARGS...])."""

Cmd = namedtuple("Cmd", ("path", "help", "handler", "opts", "args", "extra_arg_hint", "epilog"),
                 defaults=((), (), None, None))
Cmd.__doc__ = """A command: its path, help, handler ("module:function"), options and arguments."""

Group = namedtuple("Group", ("name", "help"))


GLOBAL_OPTS = (
    Opt(("--vault",), "vault", "Vault file (a SQLite database).", metavar="PATH", envvar="KMS_CLI_VAULT"),
    Opt(("--namespace",), "namespace", "Scope every name to this namespace.", metavar="NS", envvar="KMS_CLI_NAMESPACE",
        empty=True),
    Opt(("--json",), "json", "Machine output: one JSON document on stdout.", kind="flag"),
    Opt(("--unlock",), "unlock", "Unlock with this slot's source instead of trying slots in order.",
        metavar="SOURCE", envvar="KMS_CLI_UNLOCK"),
    Opt(("--passphrase-file",), "passphrase_file", "Read a passphrase slot's passphrase from this file.",
        metavar="F"),
    Opt(("--quiet", "-q"), "quiet", "No informational output on stderr.", kind="flag"),
    Opt(("--no-color",), "no_color", "Plain output (also NO_COLOR).", kind="flag"),
)

GROUPS = (
    Group("key", "Create, rotate, revoke and destroy keys."),
    Group("secret", "Store and read versioned secrets."),
    Group("master", "Master key sources (slots) that seal the vault's root key."),
    Group("audit", "The tamper-evident audit log."),
)

_CTX = Opt(("--context",), "context", "Associated context K=V, bound into the ciphertext (repeatable).",
           kind="multi", metavar="K=V")
_SIG_CTX = Opt(("--context",), "context", "Context string bound into the signature (ML-DSA's context).",
               metavar="CTX", empty=True)
_IN = Opt(("-i", "--in"), "input", "Input file ('-' for stdin).", metavar="IN", default="-")
_OUT = Opt(("-o", "--out"), "output", "Output file ('-' for stdout).", metavar="OUT", default="-")
_CREATE_KEY = Opt(("--create-key",), "create_key",
                  "Create the key object on the token when it is absent (pkcs11: sources).", kind="flag")
_WEAK = Opt(("--allow-weak-passphrase",), "allow_weak_passphrase",
            "Accept a passphrase slot's passphrase under 12 characters or easy to guess.", kind="flag")
_NAME_KEY = Arg("name", "Key name.", metavar="NAME")
_NAME_SECRET = Arg("name", "Secret name.", metavar="NAME")
_VERSION = Opt(("--version",), "version", "A specific version.", kind="int", metavar="N")

COMMANDS = (
    # -- vault ---------------------------------------------------------------
    Cmd(("init",), "Create a new vault sealed by a master key source.", "kms_cli.cli.vault_cmds:init",
        opts=(Opt(("--master-key",), "master_key", "Master key source URI (default env:KMS_CLI_MASTER_KEY).",
                  metavar="SOURCE"),
              Opt(("--force",), "force", "Replace an existing vault.", kind="flag"),
              _CREATE_KEY, _WEAK)),
    Cmd(("master", "generate"), "Print a new random 32-byte master key as 64 hex characters.",
        "kms_cli.cli.vault_cmds:master_generate"),
    Cmd(("master", "list"), "List the slots: id, source (secrets masked), created, last used.",
        "kms_cli.cli.master:list_"),
    Cmd(("master", "add"), "Seal the vault's root key with another master key source.", "kms_cli.cli.master:add",
        args=(Arg("source", "Master key source URI.", metavar="SOURCE"),), opts=(_CREATE_KEY, _WEAK)),
    Cmd(("master", "remove"), "Remove a slot (never the last one).", "kms_cli.cli.master:remove",
        args=(Arg("slot", "Slot number (see master list).", metavar="SLOT"),)),
    Cmd(("master", "rotate"), "New root key: re-seal every key, secret and slot (ciphertexts stay valid).",
        "kms_cli.cli.master:rotate"),
    Cmd(("health",), "Check the vault, its slots, the audit chain, rotations and TTLs.",
        "kms_cli.cli.health_cmds:health",
        opts=(Opt(("--format",), "format", "text, json or prometheus.", metavar="FORMAT", default="text",
                  choices=("text", "json", "prometheus")),
              Opt(("--expiring-within",), "expiring_within",
                  "Warn about secrets whose TTL ends within DUR (default 7d; 0s turns the warning off).",
                  metavar="DUR", kind="dur"),)),
    Cmd(("backup",), "Write a consistent, still sealed copy of the vault.", "kms_cli.cli.backup_cmds:backup",
        opts=(Opt(("-o", "--out"), "output", "Backup file.", metavar="FILE", required=True),)),
    Cmd(("restore",), "Check a backup, then replace the vault with it.", "kms_cli.cli.backup_cmds:restore",
        args=(Arg("file", "Backup file.", metavar="FILE"),),
        opts=(Opt(("--force",), "force", "Replace an existing vault.", kind="flag"),),
        epilog="Crash-safe: killed at any point, it leaves the old or the new vault at the path, and the next "
               "command finishes or rolls back the interrupted restore (VAULT.restore-journal)."),
    # -- audit ---------------------------------------------------------------
    Cmd(("audit", "log"), "Show audit entries.", "kms_cli.cli.audit_cmds:log",
        opts=(Opt(("--since",), "since", "Only entries newer than DUR ago.", metavar="DUR", kind="dur"),
              Opt(("--target",), "target", "Only entries for this name.", metavar="NAME"),
              Opt(("--op",), "op", "Only this operation (e.g. secret.get).", metavar="OP"),
              Opt(("--follow", "-f"), "follow", "Keep printing new entries as they land.", kind="flag"))),
    Cmd(("audit", "verify"), "Verify the whole audit chain and its head.", "kms_cli.cli.audit_cmds:verify"),
    Cmd(("audit", "export"), "Export the audit log as JSON lines.", "kms_cli.cli.audit_cmds:export",
        opts=(_OUT,)),
    Cmd(("audit", "prune"), "Remove entries older than DUR, leaving a MACed checkpoint.",
        "kms_cli.cli.audit_cmds:prune",
        opts=(Opt(("--before",), "before", "Remove entries older than DUR.", metavar="DUR", required=True,
                  kind="dur"),)),
    # -- keys ----------------------------------------------------------------
    Cmd(("key", "create"), "Create a key.", "kms_cli.cli.key:create", args=(_NAME_KEY,),
        opts=(Opt(("--algorithm",), "algorithm", "Key algorithm (default aes-256-gcm).", metavar="ALG",
                  default="aes-256-gcm"),
              Opt(("--rotate-every",), "rotate_every", "Rotation schedule, e.g. 90d or P90D.", metavar="DUR",
                  kind="dur"),
              Opt(("--description",), "description", "Free text.", metavar="TEXT", empty=True),
              Opt(("--label",), "label", "Label K=V (repeatable).", kind="multi", metavar="K=V"))),
    Cmd(("key", "list"), "List keys.", "kms_cli.cli.key:list_"),
    Cmd(("key", "show"), "Show a key and every version's state (never material).", "kms_cli.cli.key:show",
        args=(_NAME_KEY,)),
    Cmd(("key", "rotate"), "Make a new primary version (or rotate every due key with --due).",
        "kms_cli.cli.key:rotate", args=(Arg("name", "Key name.", required=False, metavar="NAME"),),
        opts=(Opt(("--reason",), "reason", "scheduled, manual or compromise (revokes older versions).",
                  metavar="REASON", default="manual", choices=("scheduled", "manual", "compromise")),
              Opt(("--grace",), "grace", "Older versions stop decrypting after DUR.", metavar="DUR", kind="dur"),
              Opt(("--due",), "due", "Rotate every key whose schedule has elapsed (for cron).", kind="flag"))),
    Cmd(("key", "revoke"), "Revoke a version, or every version: it never encrypts or decrypts again.",
        "kms_cli.cli.key:revoke", args=(_NAME_KEY,),
        opts=(_VERSION, Opt(("--reason",), "reason", "Why (recorded).", metavar="TEXT", required=True))),
    Cmd(("key", "disable"), "Suspend a key (reversible).", "kms_cli.cli.key:disable", args=(_NAME_KEY,)),
    Cmd(("key", "enable"), "Resume a disabled key.", "kms_cli.cli.key:enable", args=(_NAME_KEY,)),
    Cmd(("key", "destroy"), "Schedule deletion of a key's material (default after 7 days).",
        "kms_cli.cli.key:destroy", args=(_NAME_KEY,),
        opts=(Opt(("--after",), "after", "Destroy window, e.g. 7d.", metavar="DUR", kind="dur"),)),
    Cmd(("key", "cancel-destroy"), "Cancel a scheduled destruction.", "kms_cli.cli.key:cancel_destroy",
        args=(_NAME_KEY,)),
    Cmd(("key", "public"), "Export a key's public half.", "kms_cli.cli.sign:public",
        args=(_NAME_KEY,),
        opts=(_VERSION, Opt(("--format",), "format", "pem, jwk or raw.", metavar="FORMAT", default="pem",
                            choices=("pem", "jwk", "raw")), _OUT)),
    # -- data ----------------------------------------------------------------
    Cmd(("encrypt",), "Encrypt a file or stream of any size.", "kms_cli.cli.data:encrypt",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME"), _CTX, _IN, _OUT,
              Opt(("--armor", "-a"), "armor", "Write a PEM-like text block.", kind="flag"),
              Opt(("--public-key",), "public_key", "Encrypt to an exported public key (RSA-OAEP, ML-KEM, "
                  "hybrid) without a vault.", metavar="FILE"))),
    Cmd(("decrypt",), "Decrypt a ciphertext made by encrypt (binary or armored).", "kms_cli.cli.data:decrypt",
        opts=(_CTX, _IN, _OUT)),
    Cmd(("rewrap",), "Re-wrap a ciphertext to its key's current version (no plaintext written).",
        "kms_cli.cli.data:rewrap", opts=(_IN, _OUT)),
    Cmd(("sign",), "Sign a file or stream (the signature names its key and version).", "kms_cli.cli.sign:sign",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True), _IN,
              Opt(("-o", "--out"), "output", "Signature file ('-' for stdout).", metavar="SIG", default="-"),
              Opt(("--raw",), "raw", "Write the bare algorithm signature (verifiable with OpenSSL).", kind="flag"),
              _SIG_CTX)),
    Cmd(("verify",), "Verify a signature: exit 0 valid, 5 invalid, 6 revoked version.", "kms_cli.cli.sign:verify",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True),
              Opt(("--signature",), "signature", "Signature file.", metavar="SIG", required=True), _IN,
              _SIG_CTX)),
    Cmd(("datakey",), "Print a fresh data key and its ciphertext as JSON.", "kms_cli.cli.data:datakey",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True),)),
    # -- secrets -------------------------------------------------------------
    Cmd(("secret", "put"), "Store a new version of a secret (value from stdin or a hidden prompt).",
        "kms_cli.cli.secret:put", args=(_NAME_SECRET,),
        opts=(Opt(("--from-file",), "from_file", "Read the value from this file.", metavar="F"),
              Opt(("--ttl",), "ttl", "The value expires after DUR.", metavar="DUR", kind="dur"),
              Opt(("--tag",), "tag", "Tag K=V (repeatable).", kind="multi", metavar="K=V")),
        extra_arg_hint="values are never read from the command line: pipe it on stdin, "
                       "e.g. `printf %s \"$VALUE\" | kms-cli secret put NAME`, or use --from-file"),
    Cmd(("secret", "get"), "Print a secret's value, byte for byte.", "kms_cli.cli.secret:get",
        args=(_NAME_SECRET,), opts=(_VERSION,)),
    Cmd(("secret", "list"), "List secrets (never values).", "kms_cli.cli.secret:list_",
        opts=(Opt(("--tag",), "tag", "Only secrets with tag K=V (repeatable).", kind="multi", metavar="K=V"),)),
    Cmd(("secret", "history"), "List a secret's versions.", "kms_cli.cli.secret:history", args=(_NAME_SECRET,)),
    Cmd(("secret", "rm"), "Remove a secret (every version).", "kms_cli.cli.secret:rm", args=(_NAME_SECRET,)),
    Cmd(("secret", "import"), "Import secrets from a dotenv file.", "kms_cli.cli.secret:import_",
        args=(Arg("file", "Dotenv file ('-' for stdin).", metavar="FILE"),)),
    Cmd(("secret", "export"), "Export every secret of the namespace.", "kms_cli.cli.secret:export",
        opts=(Opt(("--format",), "format", "dotenv or json.", metavar="FORMAT", default="dotenv",
                  choices=("dotenv", "json")), _OUT)),
)


_SECRET_VAR = Opt(("--secret", "-s"), "secret", "Secret to inject, as NAME or NAME=VAR (repeatable).",
                  kind="multi", metavar="NAME[=VAR]")
_ALL = Opt(("--all",), "all", "Every secret of the current namespace.", kind="flag")
_PREFIX = Opt(("--prefix",), "prefix", "Prefix for variable names derived from secret names.", metavar="P",
              default="", empty=True)

COMMANDS = COMMANDS + (
    # -- processes -----------------------------------------------------------
    Cmd(("exec",), "Run CMD (never through a shell) with secrets in its environment.",
        "kms_cli.cli.process:exec_",
        args=(Arg("command", "The command and its arguments (after --).", required=False, rest=True,
                  metavar="CMD [ARGS]..."),),
        opts=(_SECRET_VAR, _ALL, _PREFIX,
              Opt(("--pristine",), "pristine", "Start from a minimal environment (PATH, HOME, USER, LOGNAME, "
                  "SHELL, TERM, LANG, LC_*, TZ, TMPDIR).", kind="flag"),
              Opt(("--no-clobber",), "no_clobber", "Refuse (exit 8) when a variable already exists.", kind="flag"),
              Opt(("--mask",), "mask", "Replace injected values in CMD's output with ***.", kind="flag"),
              Opt(("--env-file-out",), "env_file_out", "Also write a 0600 dotenv file (deleted when CMD exits; "
                  "if kms-cli is killed with SIGKILL, by the next kms-cli command once CMD is gone too) "
                  "and export its path as KMS_CLI_ENV_FILE.", metavar="PATH")),
        epilog="VAR defaults to the last name segment upper-cased with '-' and '.' turned to '_', after --prefix."),
    Cmd(("env",), "Print secrets as shell assignments (eval-safe), dotenv, JSON or GitHub Actions env.",
        "kms_cli.cli.process:env",
        opts=(_SECRET_VAR, _ALL, _PREFIX,
              Opt(("--format",), "format", "sh, dotenv, json or github.", metavar="FORMAT", default="sh",
                  choices=("sh", "dotenv", "json", "github")))),
    Cmd(("inject",), "Render a template, replacing {{ kms://NAME }} references with secret values.",
        "kms_cli.cli.process:inject",
        opts=(Opt(("-i", "--in"), "input", "Template file ('-' for stdin).", metavar="TEMPLATE", default="-"),
              Opt(("-o", "--out"), "output", "Output file (written 0600; '-' for stdout).", metavar="OUT",
                  default="-"))),
    Cmd(("read",), "Print the secret a kms:// reference names (like secret get).", "kms_cli.cli.process:read",
        args=(Arg("reference", "kms://NAME or kms://NAME?version=N", metavar="REFERENCE"),)),
)


def find(path: tuple[str, ...]) -> Cmd | None:
    for c in COMMANDS:
        if c.path == path:
            return c
    return None


def group_names() -> set[str]:
    return {c.path[0] for c in COMMANDS if len(c.path) > 1}
