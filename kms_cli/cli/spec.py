"""The command table: the one source of truth for every command, option and help text.

Both the fast parser (`parse.py`, used to run commands without importing Typer)
and the Typer app (`typer_app.py`: help, completion, man page) are built from it.
Handlers are named as "module:function" and imported only when their command runs.
"""

from __future__ import annotations

from collections import namedtuple

# Plain namedtuples (issue 11 removed the hand-written record class they replace). Measured in fresh
# interpreters, 80 runs each: importing this module went from 752 to 711 us (median); the four
# classes cost ~0.2 ms more to define, the ~130 rows ~0.2 ms less to build (0.4 us vs 1.8 us each).
# No typing.NamedTuple or dataclass here: typing and dataclasses are not imported on every path.

Opt = namedtuple("Opt", ("flags", "dest", "help", "kind", "metavar", "default", "choices", "required", "envvar",
                         "empty", "default_doc"),
                 defaults=("str", None, None, None, False, None, False, None))
Opt.__doc__ = """An option: flags, destination, help; kind is str | int | dur | flag | multi (repeatable str).

`int` is a whole number from 1 to names.MAX_VERSION; `dur` a duration of at most 100 years,
checked by the parser and handed to the handler as text. An empty value is a usage error
unless `empty` (where "" means something: the root namespace, no prefix). `envvar` is the
variable the option's setting also comes from (documented; config.py reads it); `default_doc`
the default shown in help where the handler, not `default`, supplies it.
"""

Arg = namedtuple("Arg", ("dest", "help", "required", "rest", "metavar", "interspersed"),
                 defaults=(True, False, None, False))
Arg.__doc__ = """A positional argument; `rest` collects every remaining token (exec's CMD [ARGS...]), or with
`interspersed` every remaining positional, options still read among them (rewrap's PATH...)."""

Cmd = namedtuple("Cmd", ("path", "help", "handler", "opts", "args", "extra_arg_hint", "epilog", "examples"),
                 defaults=((), (), None, None, ()))
Cmd.__doc__ = """A command: its path, help, handler ("module:function"), options and arguments.

`epilog` is more help text ("{algorithms}" in it is replaced by the algorithm list, see `expand`);
`examples` are (what it does, command line) pairs shown in --help and the man page.
"""

Group = namedtuple("Group", ("name", "help"))

# What --vault defaults to, in a form that does not depend on who reads it (the man page); --help
# shows the path computed for the current user (config.default_vault_path).
DEFAULT_VAULT_DOC = "$XDG_DATA_HOME/kms-cli/vault.db (~/.local/share/kms-cli/vault.db)"

GLOBAL_OPTS = (
    Opt(("--vault",), "vault", "Vault file, or postgresql://host/db?vault=NAME.", metavar="PATH",
        envvar="KMS_CLI_VAULT",
        default_doc=DEFAULT_VAULT_DOC),
    Opt(("--namespace",), "namespace", "Scope every name to this namespace.", metavar="NS", envvar="KMS_CLI_NAMESPACE",
        empty=True),
    Opt(("--json",), "json", "Machine output: one JSON document on stdout.", kind="flag"),
    Opt(("--unlock",), "unlock", "Unlock with this slot's source instead of trying slots in order.",
        metavar="SOURCE", envvar="KMS_CLI_UNLOCK"),
    Opt(("--passphrase-file",), "passphrase_file", "Read a passphrase slot's passphrase from this file "
        "(without a TTY, KMS_CLI_PASSPHRASE may hold the passphrase itself).", metavar="F"),
    Opt(("--quiet", "-q"), "quiet", "No informational output on stderr.", kind="flag"),
    Opt(("--no-color",), "no_color", "Plain output.", kind="flag", envvar="NO_COLOR"),
    Opt(("--no-agent",), "no_agent", "Unlock here even when the agent holds the vault.", kind="flag",
        envvar="KMS_CLI_NO_AGENT"),
    Opt(("--identity",), "identity", "Identity file for recipient slots (repeatable; KMS_CLI_IDENTITY holds paths "
        "joined by ':').", kind="multi", metavar="FILE", envvar="KMS_CLI_IDENTITY"),
)

GROUPS = (
    Group("key", "Create, rotate, revoke and destroy keys."),
    Group("secret", "Store and read versioned secrets."),
    Group("master", "Master key sources (slots) that seal the vault's root key."),
    Group("audit", "The tamper-evident audit log."),
    Group("agent", "The per-user agent: unlock once, then every command is served without the master key."),
    Group("policy", "Rotation policies per namespace: schedules by key purpose, and the old versions' grace."),
    Group("identity", "Identities for recipient slots (age and OpenSSH keys)."),
    Group("vault", "The vault as a whole: copy it between a file and PostgreSQL."),
    Group("token", "Bearer tokens for `kms-cli serve`: what each may do, where, until when."),
)

# Shown by `kms-cli --help` and the man page.
EXAMPLES = (
    ("Create a vault sealed by a new master key (keep it somewhere safe)",
     'export KMS_CLI_MASTER_KEY="$(kms-cli master generate)" && kms-cli init'),
    ("Store a secret from stdin", 'printf %s "$DB_PASSWORD" | kms-cli secret put acme/prod/db-password'),
    ("Run a program with it in its environment (as DB_PASSWORD)",
     "kms-cli exec --secret acme/prod/db-password -- ./server"),
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
_IDLE = Opt(("--idle",), "idle", "Forget a vault after DUR without use (default 5m).", metavar="DUR", kind="dur")
_MAX = Opt(("--max",), "max", "Forget a vault DUR after it was unlocked, whatever the use (default 1h).",
           metavar="DUR", kind="dur")
_VERSION = Opt(("--version",), "version", "A specific version.", kind="int", metavar="N")

COMMANDS = (
    # -- vault ---------------------------------------------------------------
    Cmd(("init",), "Create a new vault sealed by a master key source.", "kms_cli.cli.vault_cmds:init",
        opts=(Opt(("--master-key",), "master_key", "Master key source URI.", metavar="SOURCE",
                  default_doc="env:KMS_CLI_MASTER_KEY"),
              Opt(("--force",), "force", "Replace an existing vault.", kind="flag"),
              _CREATE_KEY, _WEAK),
        examples=(("Create a vault sealed by the key in KMS_CLI_MASTER_KEY (see master generate)", "kms-cli init"),
                  ("Create a vault at a given path, sealed by a passphrase",
                   "kms-cli --vault ./team.db init --master-key passphrase"),
                  ("Seal it with an AWS KMS key", "kms-cli init --master-key aws-kms://alias/kms-cli"))),
    Cmd(("master", "generate"), "Print a new random 32-byte master key as 64 hex characters.",
        "kms_cli.cli.vault_cmds:master_generate",
        examples=(("Generate the key of the default env: source",
                   'export KMS_CLI_MASTER_KEY="$(kms-cli master generate)"'),
                  ("Keep one in a file only you can read", "(umask 077; kms-cli master generate > master.key)"))),
    Cmd(("master", "list"), "List the slots: id, source URI or recipient (never a secret), label, created, last used.",
        "kms_cli.cli.master:list_",
        examples=(("List the slots", "kms-cli master list"),
                  ("As JSON", "kms-cli --json master list"))),
    Cmd(("master", "add"), "Seal the vault's root key with another master key source.", "kms_cli.cli.master:add",
        args=(Arg("source", "Master key source URI, or a recipient: age1..., age1pq1... or 'ssh-ed25519 AAAA...'.",
                  metavar="SOURCE", required=False),),
        opts=(_CREATE_KEY, _WEAK,
              Opt(("--recipients-file", "-R"), "recipients_file", "Add one recipient slot per line of F, as age -R "
                  "reads it (# comments, blank lines), all or none; a comment line right above a recipient "
                  "is its label.", metavar="F"),
              Opt(("--label",), "label", "Who or what holds this slot (\"alice\", \"ci runner\"): shown by master "
                  "list and recorded in the audit log.", metavar="TEXT")),
        examples=(("Add a passphrase as a fallback", "kms-cli master add passphrase"),
                  ("Let a teammate open the vault with their age identity",
                   "kms-cli master add age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p --label alice"),
                  ("Add everyone listed in a recipients file", "kms-cli master add -R team.txt"),
                  ("Add the OS keyring", "kms-cli master add keyring:kms-cli"),
                  ("Add a HashiCorp Vault or OpenBao transit key", "kms-cli master add hcvault://transit/keys/kms-cli"))),
    Cmd(("master", "remove"), "Remove a slot (never the last one).", "kms_cli.cli.master:remove",
        args=(Arg("slot", "Slot number (see master list).", metavar="SLOT"),),
        opts=(Opt(("--rotate",), "rotate", "Also rotate the root key, in the same transaction: what the removed "
                  "holder kept opens nothing written from now on.", kind="flag"),),
        examples=(("Find the slot's number", "kms-cli master list"),
                  ("Remove slot 2", "kms-cli master remove 2"),
                  ("Remove a teammate and rotate the root key", "kms-cli master remove 3 --rotate"))),
    Cmd(("master", "rotate"), "New root key: re-seal every key, secret and slot (ciphertexts stay valid).",
        "kms_cli.cli.master:rotate", opts=(_WEAK,),
        examples=(("Replace the root key", "kms-cli master rotate"),
                  ("Unlock with the passphrase slot to do it", "kms-cli --unlock passphrase master rotate"))),
    # -- identities ----------------------------------------------------------
    Cmd(("identity", "generate"), "Write a new age identity and print its recipient.",
        "kms_cli.cli.identity:generate",
        opts=(Opt(("--pq",), "pq", "A post-quantum hybrid identity (ML-KEM-768 + X25519: age1pq1...).", kind="flag"),
              Opt(("-o", "--out"), "output", "Identity file to create (0600; an existing one is never replaced, "
                  "exit 8); without it the identity goes to stdout and the recipient to stderr.", metavar="FILE")),
        epilog="Give the recipient to a vault's maintainer (`kms-cli master add RECIPIENT`); keep the identity "
               "file to yourself and pass it with --identity FILE or KMS_CLI_IDENTITY.",
        examples=(("A new identity for this machine", "kms-cli identity generate -o ~/.config/kms-cli/identity.txt"),
                  ("A post-quantum one", "kms-cli identity generate --pq -o id-pq.txt"))),
    # -- policies ------------------------------------------------------------
    Cmd(("policy", "set"), "Set a namespace's rotation policy: a schedule per key purpose, and a grace.",
        "kms_cli.cli.policy:set_", args=(Arg("namespace", "Namespace (the policy covers every name under it).",
                                             metavar="NS"),),
        opts=(Opt(("--rotate-every",), "rotate_every", "PURPOSE=DUR: keys of that purpose (encrypt or sign) rotate "
                  "every DUR (repeatable).", kind="multi", metavar="PURPOSE=DUR"),
              Opt(("--grace",), "grace", "Old versions keep decrypting and verifying DUR after a rotation by "
                  "this policy.", metavar="DUR", kind="dur")),
        epilog="A key created under NS without --rotate-every takes its purpose's period from the nearest "
               "enclosing namespace's policy (app/prod beats app); `key rotate --due` rotates by it.",
        examples=(("Encrypting keys every 90 days, signing keys every year, 30 days of grace",
                   "kms-cli policy set acme/prod --rotate-every encrypt=90d --rotate-every sign=365d --grace 30d"),)),
    Cmd(("policy", "show"), "Show one namespace's policy, or every policy.", "kms_cli.cli.policy:show",
        args=(Arg("namespace", "Namespace.", required=False, metavar="NS"),),
        examples=(("Every policy", "kms-cli policy show"), ("One", "kms-cli --json policy show acme/prod"))),
    Cmd(("policy", "rm"), "Remove a namespace's policy.", "kms_cli.cli.policy:rm",
        args=(Arg("namespace", "Namespace.", metavar="NS"),),
        examples=(("Remove it", "kms-cli policy rm acme/prod"),)),
    # -- sessions: the agent --------------------------------------------------
    Cmd(("unlock",), "Unlock the vault once and hand it to the agent (started if none runs).",
        "kms_cli.cli.agent_cmds:unlock", opts=(_IDLE, _MAX),
        epilog="Every later command on this vault, by any process of yours, is served by the agent until "
               "`kms-cli lock`, `kms-cli agent stop`, --idle without use, or --max after unlocking "
               "(wall-clock time). The root key never leaves the agent.",
        examples=(("Unlock a passphrase vault for this session", "kms-cli unlock"),
                  ("Hold it for 8 hours, forgotten after 30 minutes unused", "kms-cli unlock --max 8h --idle 30m"))),
    Cmd(("lock",), "Make the agent forget this vault (or every vault); exit 0 even when it held nothing.",
        "kms_cli.cli.agent_cmds:lock",
        opts=(Opt(("--all",), "all", "Forget every vault the agent holds.", kind="flag"),),
        examples=(("Forget this vault", "kms-cli lock"), ("Forget every vault", "kms-cli lock --all"))),
    Cmd(("agent", "start"), "Start the agent in the background and return once it listens (exit 8 if one runs).",
        "kms_cli.cli.agent_cmds:start",
        opts=(_IDLE, _MAX, Opt(("--foreground",), "foreground", "Run in this process until stopped.",
                               kind="flag")),
        epilog="Socket: KMS_CLI_AGENT_SOCK, else $XDG_RUNTIME_DIR/kms-cli/agent.sock, else "
               "<tmp>/kms-cli-<uid>/agent.sock (directory 0700, socket 0600). Only your uid is served.",
        examples=(("Start the agent", "kms-cli agent start"),
                  ("Run it under a supervisor", "kms-cli agent start --foreground"))),
    Cmd(("agent", "status"), "Show the agent and the vaults it holds (exit 3 when none answers).",
        "kms_cli.cli.agent_cmds:status",
        examples=(("Is a vault held, and until when?", "kms-cli agent status"),
                  ("The same for a script", "kms-cli --json agent status"))),
    Cmd(("agent", "stop"), "Make the agent forget every vault and exit.", "kms_cli.cli.agent_cmds:stop",
        examples=(("Stop the agent", "kms-cli agent stop"),)),
    Cmd(("health",), "Check the vault, its slots, the audit chain, rotations and TTLs.",
        "kms_cli.cli.health_cmds:health",
        opts=(Opt(("--format",), "format", "text, json or prometheus.", metavar="FORMAT", default="text",
                  choices=("text", "json", "prometheus")),
              Opt(("--expiring-within",), "expiring_within",
                  "Warn about secrets whose TTL ends within DUR (0s turns the warning off).",
                  metavar="DUR", kind="dur", default_doc="7d"),),
        epilog="Exit 0 healthy, 10 degraded (warnings only), 4 no slot unlocks, 5 an integrity failure, "
               "7 a source is unreachable.",
        examples=(("Check the vault", "kms-cli health"),
                  ("Warn 30 days before a secret expires", "kms-cli health --expiring-within 30d"),
                  ("For a Prometheus textfile collector",
                   "kms-cli health --format prometheus > /var/lib/node_exporter/kms-cli.prom"))),
    Cmd(("backup",), "Write a consistent, still sealed copy of the vault.", "kms_cli.cli.backup_cmds:backup",
        opts=(Opt(("-o", "--out"), "output", "Backup file.", metavar="FILE", required=True),),
        examples=(("Back up, even while other commands write", "kms-cli backup -o vault-$(date +%F).db"),
                  ("Back up a vault at another path", "kms-cli --vault ./team.db backup -o team-backup.db"))),
    Cmd(("restore",), "Check a backup, then replace the vault with it.", "kms_cli.cli.backup_cmds:restore",
        args=(Arg("file", "Backup file.", metavar="FILE"),),
        opts=(Opt(("--force",), "force", "Replace an existing vault.", kind="flag"),),
        epilog="Crash-safe: killed at any point, it leaves the old or the new vault at the path, and the next "
               "command finishes or rolls back the interrupted restore (VAULT.restore-journal).",
        examples=(("Restore where there is no vault yet", "kms-cli restore vault-2026-01-31.db"),
                  ("Replace the current vault", "kms-cli restore --force vault-2026-01-31.db"))),
    Cmd(("vault", "copy"), "Copy a whole vault to a new place: a file and PostgreSQL, either way.",
        "kms_cli.cli.backup_cmds:copy",
        args=(Arg("src", "The vault to copy: a file path or postgresql://[user@]host[:port]/db[?vault=NAME].",
                  metavar="SRC"),
              Arg("dst", "Where the copy goes (must not hold a vault yet): a file path or a postgresql:// URI.",
                  metavar="DST")),
        epilog="The copy is the same vault (same id, slots, keys, secrets and audit chain) and opens with the "
               "same master key sources. SRC is unlocked as usual; DST's slots and whole audit chain are "
               "verified before success is reported, and a copy that fails is removed. Rows stream in "
               "bounded memory. An existing DST is refused (exit 8).",
        examples=(("Move a file vault to a team database", "kms-cli vault copy ~/.local/share/kms-cli/vault.db "
                   "'postgresql://kms@db.internal/secrets?vault=team&sslmode=verify-full'"),
                  ("Take a team vault home as a file", "kms-cli vault copy 'postgresql://kms@db.internal/secrets' "
                   "./team-copy.db"))),
    # -- API tokens ----------------------------------------------------------
    Cmd(("token", "create"), "Create a bearer token for the HTTP API and print it once.",
        "kms_cli.cli.token_cmds:create",
        args=(Arg("name", "The token's name (shown in token list and in audit entries).", metavar="NAME"),),
        opts=(Opt(("--allow",), "allow", "Operations it may do, comma-separated or repeated: secret.read, "
                  "secret.write, encrypt, decrypt, rewrap, datakey, sign, verify, key.read, key.rotate, health. "
                  "Default: all but secret.write and key.rotate.", kind="multi", metavar="OP[,OP]"),
              Opt(("--namespace",), "token_namespace", "Names it may use: inside NS only (default: the "
                  "global --namespace, or every name).", metavar="NS"),
              Opt(("--ttl",), "ttl", "Valid for DUR (default 32d).", metavar="DUR", kind="dur", default_doc="32d")),
        epilog="The token is printed once on stdout; the vault keeps only a keyed hash of it. Send it as "
               "`Authorization: Bearer TOKEN` or `X-Vault-Token: TOKEN`.",
        examples=(("A token for an app that decrypts under app/", "kms-cli token create billing --allow "
                   "decrypt,encrypt --namespace app --ttl 90d > billing.token"),
                  ("Read secrets of ci/ for a day", "kms-cli token create ci --allow secret.read --namespace ci "
                   "--ttl 1d"))),
    Cmd(("token", "list"), "List tokens: name, operations, namespace, expiry, last use (never the token).",
        "kms_cli.cli.token_cmds:list_",
        examples=(("List tokens", "kms-cli token list"), ("As JSON", "kms-cli --json token list"))),
    Cmd(("token", "revoke"), "Revoke a token: refused from its next request on.", "kms_cli.cli.token_cmds:revoke",
        args=(Arg("name", "The token's name.", metavar="NAME"),),
        examples=(("Revoke a token", "kms-cli token revoke billing"),)),
    # -- the HTTP API --------------------------------------------------------
    Cmd(("serve",), "Serve the vault over HTTPS with Vault's transit and KV v2 API, until SIGTERM.",
        "kms_cli.cli.serve_cmds:serve",
        opts=(Opt(("--listen",), "listen", "Address and port to listen on (port 0: any free port).",
                  metavar="HOST:PORT", default="127.0.0.1:8200"),
              Opt(("--tls-cert",), "tls_cert", "Certificate chain (PEM); read again on SIGHUP.", metavar="FILE"),
              Opt(("--tls-key",), "tls_key", "Its private key (PEM, unencrypted); read again on SIGHUP.",
                  metavar="FILE"),
              Opt(("--no-tls",), "no_tls", "Plain HTTP, only on a loopback address.", kind="flag"),
              Opt(("--rate-limit",), "rate_limit", "Requests per token, as N/s (or N/m); 0 turns it off.",
                  metavar="N/s", default_doc="100/s"),
              Opt(("--token-rate",), "token_rate", "Another rate for the token NAME (repeatable).", kind="multi",
                  metavar="NAME=N/s"),
              Opt(("--max-body",), "max_body", "Largest request body, e.g. 64KiB (larger: 413).", metavar="SIZE",
                  default_doc="1MiB")),
        epilog="TLS 1.3 only (older handshakes are refused). The vault is unlocked once at start and held until "
               "the server stops. Requests carry `Authorization: Bearer TOKEN` or `X-Vault-Token: TOKEN` (see "
               "token create); each is audited with the token's name and the client address, and answered only "
               "once its audit entry is on disk. SIGHUP reloads the certificate and key; SIGTERM or SIGINT stops "
               "accepting, answers the requests in flight and exits 0.",
        examples=(("Serve on Vault's port with a certificate", "kms-cli serve --tls-cert cert.pem --tls-key key.pem"),
                  ("Plain HTTP for a local test", "kms-cli serve --listen 127.0.0.1:8200 --no-tls"),
                  ("All interfaces, a higher rate for one token", "kms-cli serve --listen 0.0.0.0:8200 --tls-cert "
                   "cert.pem --tls-key key.pem --rate-limit 50/s --token-rate billing=500/s"))),
    # -- audit ---------------------------------------------------------------
    Cmd(("audit", "log"), "Show audit entries.", "kms_cli.cli.audit_cmds:log",
        opts=(Opt(("--since",), "since", "Only entries newer than DUR ago.", metavar="DUR", kind="dur"),
              Opt(("--target",), "target", "Only entries for this name.", metavar="NAME"),
              Opt(("--op",), "op", "Only this operation (e.g. secret.get).", metavar="OP"),
              Opt(("--follow", "-f"), "follow", "Keep printing new entries as they land.", kind="flag")),
        examples=(("The last day's entries", "kms-cli audit log --since 24h"),
                  ("Who read a secret", "kms-cli audit log --target acme/prod/db-password --op secret.get"),
                  ("Follow as JSON lines", "kms-cli --json audit log --follow"))),
    Cmd(("audit", "verify"), "Verify the whole audit chain and its head.", "kms_cli.cli.audit_cmds:verify",
        epilog="Exit 0 when the whole chain is intact, 5 naming the first bad entry otherwise.",
        examples=(("Verify the chain", "kms-cli audit verify"),
                  ("In a script", "kms-cli -q audit verify || echo 'audit chain broken' >&2"))),
    Cmd(("audit", "export"), "Export the audit log as JSON lines.", "kms_cli.cli.audit_cmds:export",
        opts=(_OUT,),
        examples=(("To a file", "kms-cli audit export -o audit.jsonl"),
                  ("Only what failed or was denied", "kms-cli audit export | jq -c 'select(.result != \"ok\")'"))),
    Cmd(("audit", "prune"), "Remove entries older than DUR, leaving a MACed checkpoint.",
        "kms_cli.cli.audit_cmds:prune",
        opts=(Opt(("--before",), "before", "Remove entries older than DUR.", metavar="DUR", required=True,
                  kind="dur"),),
        examples=(("Keep one year of entries", "kms-cli audit prune --before 365d"),
                  ("The rest still verifies", "kms-cli audit verify"))),
    # -- keys ----------------------------------------------------------------
    Cmd(("key", "create"), "Create a key.", "kms_cli.cli.key:create", args=(_NAME_KEY,),
        opts=(Opt(("--algorithm",), "algorithm", "Key algorithm (see the list below).", metavar="ALG",
                  default="aes-256-gcm"),
              Opt(("--rotate-every",), "rotate_every", "Rotation schedule, e.g. 90d or P90D (see key rotate --due).",
                  metavar="DUR", kind="dur"),
              Opt(("--description",), "description", "Free text.", metavar="TEXT", empty=True),
              Opt(("--label",), "label", "Label K=V (repeatable).", kind="multi", metavar="K=V")),
        epilog="Algorithms, by purpose: {algorithms}.",
        examples=(("An AES-256-GCM key for encrypt and decrypt", "kms-cli key create acme/prod/data"),
                  ("A signing key rotated every 90 days",
                   "kms-cli key create acme/release --algorithm ed25519 --rotate-every 90d"),
                  ("A post-quantum key with a label",
                   "kms-cli key create acme/pq --algorithm ml-kem-768 --label team=platform"))),
    Cmd(("key", "list"), "List keys.", "kms_cli.cli.key:list_",
        examples=(("List keys", "kms-cli key list"),
                  ("Those of one namespace, as JSON", "kms-cli --namespace acme/prod --json key list"))),
    Cmd(("key", "show"), "Show a key and every version's state (never material).", "kms_cli.cli.key:show",
        args=(_NAME_KEY,),
        examples=(("Versions and their states", "kms-cli key show acme/prod/data"),
                  ("As JSON", "kms-cli --json key show acme/prod/data"))),
    Cmd(("key", "rotate"), "Make a new primary version (or rotate every due key with --due).",
        "kms_cli.cli.key:rotate", args=(Arg("name", "Key name.", required=False, metavar="NAME"),),
        opts=(Opt(("--reason",), "reason", "scheduled, manual or compromise (revokes older versions).",
                  metavar="REASON", default="manual", choices=("scheduled", "manual", "compromise")),
              Opt(("--grace",), "grace", "Older versions stop decrypting and verifying after DUR.", metavar="DUR",
                  kind="dur"),
              Opt(("--due",), "due", "Rotate every key whose schedule (its own or its namespace's policy) has "
                  "elapsed, and carry out destructions that are due (for cron).", kind="flag"),
              Opt(("--dry-run",), "dry_run", "With --due: print what would be done, change nothing.", kind="flag")),
        epilog="The new version encrypts and signs from now on; the older ones become decrypt-only. Without "
               "--grace they keep decrypting and verifying until revoked (a deadline set by an earlier --grace "
               "stays). With --grace DUR they stop at the end of DUR (exit 6 after it; an earlier deadline is "
               "kept), so rewrap data before then. --reason compromise revokes them at once: they never "
               "decrypt or verify again. --due rotates with reason scheduled and, for a key whose period comes "
               "from a policy, that policy's --grace (else none); it prints one line per action (--json: a list).",
        examples=(("Rotate; data under older versions still decrypts", "kms-cli key rotate acme/prod/data"),
                  ("Older versions stop decrypting in 30 days: rewrap before then",
                   "kms-cli key rotate acme/prod/data --grace 30d"),
                  ("From cron: every key whose --rotate-every has elapsed", "kms-cli key rotate --due"))),
    Cmd(("key", "revoke"), "Revoke a version, or every version: it never encrypts or decrypts again.",
        "kms_cli.cli.key:revoke", args=(_NAME_KEY,),
        opts=(_VERSION, Opt(("--reason",), "reason", "Why (recorded).", metavar="TEXT", required=True)),
        examples=(("Revoke version 1 once its data is rewrapped",
                   "kms-cli key revoke acme/prod/data --version 1 --reason 'rewrapped to v2'"),
                  ("Revoke every version", "kms-cli key revoke acme/prod/data --reason 'key leaked'"))),
    Cmd(("key", "disable"), "Suspend a key (reversible).", "kms_cli.cli.key:disable", args=(_NAME_KEY,),
        examples=(("Suspend a key", "kms-cli key disable acme/prod/data"),
                  ("Resume it", "kms-cli key enable acme/prod/data"))),
    Cmd(("key", "enable"), "Resume a disabled key.", "kms_cli.cli.key:enable", args=(_NAME_KEY,),
        examples=(("Resume a disabled key", "kms-cli key enable acme/prod/data"),
                  ("Check its state", "kms-cli key show acme/prod/data"))),
    Cmd(("key", "destroy"), "Schedule deletion of a key's material.", "kms_cli.cli.key:destroy", args=(_NAME_KEY,),
        opts=(Opt(("--after",), "after", "Destroy window, e.g. 30d.", metavar="DUR", kind="dur",
                  default_doc="7d"),),
        examples=(("Destroy in 7 days", "kms-cli key destroy acme/old"),
                  ("Destroy in 30 days", "kms-cli key destroy acme/old --after 30d"),
                  ("Changed your mind", "kms-cli key cancel-destroy acme/old"))),
    Cmd(("key", "cancel-destroy"), "Cancel a scheduled destruction.", "kms_cli.cli.key:cancel_destroy",
        args=(_NAME_KEY,),
        examples=(("Cancel it", "kms-cli key cancel-destroy acme/old"),
                  ("Check its state", "kms-cli key show acme/old"))),
    Cmd(("key", "public"), "Export a key's public half.", "kms_cli.cli.sign:public",
        args=(_NAME_KEY,),
        opts=(_VERSION, Opt(("--format",), "format", "pem, jwk or raw.", metavar="FORMAT", default="pem",
                            choices=("pem", "jwk", "raw")), _OUT),
        examples=(("As PEM, for OpenSSL", "kms-cli key public acme/release -o release.pub.pem"),
                  ("Version 2 as a JWK", "kms-cli key public acme/release --version 2 --format jwk"))),
    # -- data ----------------------------------------------------------------
    Cmd(("encrypt",), "Encrypt a file or stream of any size.", "kms_cli.cli.data:encrypt",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME"), _CTX, _IN, _OUT,
              Opt(("--armor", "-a"), "armor", "Write a PEM-like text block.", kind="flag"),
              Opt(("--public-key",), "public_key", "Encrypt to an exported public key (RSA-OAEP, ML-KEM, "
                  "hybrid) without a vault.", metavar="FILE")),
        examples=(("Encrypt a file", "kms-cli encrypt --key acme/prod/data -i backup.tar -o backup.tar.kms"),
                  ("Bind a context and write text",
                   "kms-cli encrypt --key acme/prod/data --context app=billing --armor < notes.txt > notes.asc"),
                  ("Encrypt to an exported public key, without a vault",
                   "kms-cli encrypt --public-key pq.pub.pem -i report.pdf -o report.pdf.kms"))),
    Cmd(("decrypt",), "Decrypt a ciphertext made by encrypt (binary or armored).", "kms_cli.cli.data:decrypt",
        opts=(_CTX, _IN, _OUT),
        examples=(("Decrypt a file (the key is named inside it)", "kms-cli decrypt -i backup.tar.kms -o backup.tar"),
                  ("With the context it was encrypted with", "kms-cli decrypt --context app=billing < notes.asc"))),
    Cmd(("rewrap",), "Re-wrap a ciphertext to its key's current version (no plaintext written).",
        "kms_cli.cli.data:rewrap", args=(Arg("paths", "With --in-place: files, or directories with --recursive.",
                                             required=False, rest=True, metavar="PATH", interspersed=True),),
        opts=(_IN, _OUT,
              Opt(("--in-place",), "in_place", "Rewrap the files given, each replaced atomically (mode kept).",
                  kind="flag"),
              Opt(("--recursive", "-r"), "recursive", "With --in-place: every file under the directories given.",
                  kind="flag"),
              Opt(("--dry-run",), "dry_run", "With --in-place: count what would be rewrapped, change nothing.",
                  kind="flag")),
        epilog="With --in-place only the header changes (time proportional to the headers, not the payloads); "
               "files already current and files that are not this vault's ciphertexts are counted and left "
               "alone; a file that fails authentication is counted, left untouched, and makes the exit code 5. "
               "Interrupted, it can be run again: it finishes the job.",
        examples=(("Re-wrap a file", "kms-cli rewrap -i backup.tar.kms -o backup.tar.kms.new"),
                  ("Every ciphertext under a directory, in place", "kms-cli rewrap --in-place -r /srv/archive"),
                  ("What would change", "kms-cli rewrap --in-place -r --dry-run /srv/archive"))),
    Cmd(("sign",), "Sign a file or stream (the signature names its key and version).", "kms_cli.cli.sign:sign",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True), _IN,
              Opt(("-o", "--out"), "output", "Signature file ('-' for stdout).", metavar="SIG", default="-"),
              Opt(("--raw",), "raw", "Write the bare algorithm signature (verifiable with OpenSSL).", kind="flag"),
              _SIG_CTX),
        examples=(("Sign a release", "kms-cli sign --key acme/release -i app.tar.gz -o app.tar.gz.sig"),
                  ("A bare signature for OpenSSL (see key public)",
                   "kms-cli sign --key acme/release --raw -i app.tar.gz -o app.tar.gz.raw"))),
    Cmd(("verify",), "Verify a signature: exit 0 valid, 5 invalid, 6 revoked version.", "kms_cli.cli.sign:verify",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True),
              Opt(("--signature",), "signature", "Signature file.", metavar="SIG", required=True), _IN,
              _SIG_CTX),
        examples=(("Verify a release", "kms-cli verify --key acme/release --signature app.tar.gz.sig -i app.tar.gz"),
                  ("In a script",
                   "kms-cli -q verify --key acme/release --signature app.tar.gz.sig < app.tar.gz && echo valid"))),
    Cmd(("datakey",), "Print a fresh data key and its ciphertext as JSON.", "kms_cli.cli.data:datakey",
        opts=(Opt(("--key",), "key", "Key name.", metavar="NAME", required=True),),
        examples=(("A data key for envelope encryption", "kms-cli datakey --key acme/prod/data"),
                  ("Keep only its wrapped form", "kms-cli datakey --key acme/prod/data | jq -r .ciphertext"))),
    # -- secrets -------------------------------------------------------------
    Cmd(("secret", "put"), "Store a new version of a secret (value from stdin or a hidden prompt).",
        "kms_cli.cli.secret:put", args=(_NAME_SECRET,),
        opts=(Opt(("--from-file",), "from_file", "Read the value from this file.", metavar="F"),
              Opt(("--ttl",), "ttl", "The value expires after DUR.", metavar="DUR", kind="dur"),
              Opt(("--tag",), "tag", "Tag K=V (repeatable).", kind="multi", metavar="K=V"),
              Opt(("--rotate-every",), "rotate_every", "Regenerate it every DUR (`secret rotate --due`).",
                  metavar="DUR", kind="dur"),
              Opt(("--rotate-with",), "rotate_with", "The program that rotates it outside (e.g. a database "
                  "password): run without a shell by `secret rotate`, old value on its stdin, new value read "
                  "from its stdout.", metavar="CMD")),
        extra_arg_hint="values are never read from the command line: pipe it on stdin, "
                       "e.g. `printf %s \"$VALUE\" | kms-cli secret put NAME`, or use --from-file",
        examples=(("From stdin", 'printf %s "$DB_PASSWORD" | kms-cli secret put acme/prod/db-password'),
                  ("From a file, expiring in 90 days",
                   "kms-cli secret put acme/prod/tls-key --from-file tls.key --ttl 90d"),
                  ("Typed at a hidden prompt, with tags",
                   "kms-cli secret put acme/prod/api-token --tag team=web --tag env=prod"))),
    Cmd(("secret", "get"), "Print a secret's value, byte for byte.", "kms_cli.cli.secret:get",
        args=(_NAME_SECRET,), opts=(_VERSION,),
        examples=(("The current value", "kms-cli secret get acme/prod/db-password"),
                  ("An earlier version", "kms-cli secret get acme/prod/db-password --version 2"),
                  ("As JSON", "kms-cli --json secret get acme/prod/db-password"))),
    Cmd(("secret", "list"), "List secrets (never values).", "kms_cli.cli.secret:list_",
        opts=(Opt(("--tag",), "tag", "Only secrets with tag K=V (repeatable).", kind="multi", metavar="K=V"),),
        examples=(("Every secret", "kms-cli secret list"),
                  ("Those tagged env=prod", "kms-cli secret list --tag env=prod"),
                  ("Those of one namespace", "kms-cli --namespace acme/prod secret list"))),
    Cmd(("secret", "rotate"), "Store a fresh random value as a new version (or rotate every due secret with --due).",
        "kms_cli.cli.secret_rotate:rotate", args=(Arg("name", "Secret name.", required=False, metavar="NAME"),),
        opts=(Opt(("--length",), "length", "Characters (default 32; bytes for base64).", metavar="N", kind="int"),
              Opt(("--charset",), "charset", "alnum, hex, base64 or ascii (printable, no space).", metavar="SET",
                  choices=("alnum", "hex", "base64", "ascii")),
              Opt(("--rotate-every",), "rotate_every", "Regenerate it every DUR from now on.", metavar="DUR",
                  kind="dur"),
              Opt(("--due",), "due", "Regenerate every secret whose --rotate-every has elapsed (for cron); "
                  "a secret with --rotate-with gets its program's new value.", kind="flag"),
              Opt(("--dry-run",), "dry_run", "With --due: print what would be done, change nothing.", kind="flag")),
        epilog="The value comes from the operating system's random source. A secret stored with --rotate-with "
               "is rotated by that program: its new value is read from its stdout, the old value is on its "
               "stdin, and a non-zero exit leaves the secret unchanged (reported, exit 7).",
        examples=(("A new 32-character password", "kms-cli secret rotate acme/prod/session-key"),
                  ("64 hex characters, regenerated every 30 days",
                   "kms-cli secret rotate acme/prod/hmac-key --charset hex --length 64 --rotate-every 30d"),
                  ("From cron: every due secret", "kms-cli secret rotate --due"))),
    Cmd(("secret", "edit"), "Edit a secret's value in $VISUAL or $EDITOR; a new version only if it changed.",
        "kms_cli.cli.secret_edit:edit", args=(_NAME_SECRET,),
        epilog="The value is written to a 0600 file in a private 0700 directory (on /dev/shm or "
               "$XDG_RUNTIME_DIR where they exist, so it reaches no disk), overwritten and removed whatever "
               "happens (editor failure, ^C, SIGTERM). The editor runs without a shell.",
        examples=(("Change a certificate bundle", "kms-cli secret edit acme/prod/tls-chain"),
                  ("With another editor", "EDITOR='code --wait' kms-cli secret edit acme/prod/config"))),
    Cmd(("secret", "history"), "List a secret's versions.", "kms_cli.cli.secret:history", args=(_NAME_SECRET,),
        examples=(("Versions of a secret", "kms-cli secret history acme/prod/db-password"),
                  ("As JSON", "kms-cli --json secret history acme/prod/db-password"))),
    Cmd(("secret", "rm"), "Remove a secret (every version).", "kms_cli.cli.secret:rm", args=(_NAME_SECRET,),
        examples=(("Remove a secret", "kms-cli secret rm acme/old/api-token"),
                  ("Inside a namespace", "kms-cli --namespace acme/old secret rm api-token"))),
    Cmd(("secret", "import"), "Import secrets from a dotenv file.", "kms_cli.cli.secret:import_",
        args=(Arg("file", "Dotenv file ('-' for stdin).", metavar="FILE"),),
        examples=(("Import a .env file into a namespace", "kms-cli --namespace acme/prod secret import .env"),
                  ("From stdin", "kms-cli secret import - < prod.env"))),
    Cmd(("secret", "export"), "Export every secret of the namespace.", "kms_cli.cli.secret:export",
        opts=(Opt(("--format",), "format", "dotenv or json. dotenv is read back exactly by python-dotenv and sh; a "
                  "value or name neither can take literally is refused (exit 2).", metavar="FORMAT", default="dotenv",
                  choices=("dotenv", "json")), _OUT),
        examples=(("A namespace as a dotenv file", "kms-cli --namespace acme/prod secret export -o prod.env"),
                  ("As JSON", "kms-cli secret export --format json -o secrets.json"))),
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
                  "and export its path as KMS_CLI_ENV_FILE; a value dotenv cannot carry safely is refused "
                  "(exit 2) before CMD starts.", metavar="PATH")),
        epilog="VAR defaults to the last name segment upper-cased with '-' and '.' turned to '_', after --prefix. "
               "Everything after -- (or after CMD) is CMD's, -h and --help included.",
        examples=(("Run a program with DB_PASSWORD set", "kms-cli exec --secret acme/prod/db-password -- psql -h db"),
                  ("Every secret of a namespace, prefixed, masked in the output",
                   "kms-cli --namespace acme/prod exec --all --prefix APP_ --mask -- ./server"),
                  ("Choose the variable's name",
                   "kms-cli exec -s acme/prod/api-token=TOKEN -- sh -c 'curl -H \"Authorization: Bearer $TOKEN\" "
                   "https://api.example.com'"))),
    Cmd(("env",), "Print secrets as shell assignments (eval-safe), dotenv, JSON or GitHub Actions env.",
        "kms_cli.cli.process:env",
        opts=(_SECRET_VAR, _ALL, _PREFIX,
              Opt(("--format",), "format", "sh (any byte but NUL), dotenv, json or github.", metavar="FORMAT", default="sh",
                  choices=("sh", "dotenv", "json", "github"))),
        examples=(("Load a secret into the current shell", 'eval "$(kms-cli env --secret acme/prod/db-password)"'),
                  ("In a GitHub Actions step", "kms-cli --namespace ci env --all --format github"),
                  ("A namespace as JSON", "kms-cli --namespace acme/prod env --all --format json"))),
    Cmd(("inject",), "Render a template, replacing {{ kms://NAME }} references with secret values.",
        "kms_cli.cli.process:inject",
        opts=(Opt(("-i", "--in"), "input", "Template file ('-' for stdin).", metavar="TEMPLATE", default="-"),
              Opt(("-o", "--out"), "output", "Output file (written 0600; '-' for stdout).", metavar="OUT",
                  default="-")),
        examples=(("Render a configuration file", "kms-cli inject -i config.yaml.tpl -o config.yaml"),
                  ("From stdin", "echo 'password: {{ kms://acme/prod/db-password }}' | kms-cli inject"))),
    Cmd(("read",), "Print the secret a kms:// reference names (like secret get).", "kms_cli.cli.process:read",
        args=(Arg("reference", "kms://NAME or kms://NAME?version=N", metavar="REFERENCE"),),
        examples=(("Read by reference", "kms-cli read kms://acme/prod/db-password"),
                  ("A given version", "kms-cli read 'kms://acme/prod/db-password?version=2'"))),
)


def find(path: tuple[str, ...]) -> Cmd | None:
    for c in COMMANDS:
        if c.path == path:
            return c
    return None


def group_names() -> set[str]:
    return {c.path[0] for c in COMMANDS if len(c.path) > 1}


def expand(text: str | None) -> str | None:
    """Help text with "{algorithms}" replaced by the accepted algorithms by purpose (for help and the
    man page only: it imports the algorithm registry, which the parser never needs)."""
    if text and "{algorithms}" in text:
        from kms_cli.algorithms import describe

        text = text.replace("{algorithms}", describe())
    return text
