"""A command run by the agent: in a process forked for it, with the client's descriptors.

The process takes the client's stdin, stdout and stderr (received with SCM_RIGHTS) as its own
0, 1 and 2, its working directory, umask and environment, and the client's pid as the audit
actor's; then it runs the command line through the same `entry.run` as the CLI. The only
difference is where the root key comes from: `vault.core.HELD` hands over the agent's copy
instead of unlocking. So stdout bytes, stderr lines, prompts, progress bars, exit codes and
audit entries are those of the command run without the agent.

Before anything of the command runs, the vault it names is checked: the file at that path must
hold a vault the agent holds (same id, same path, same slots). Otherwise the client is told to
run the command itself (`fallback`), and a vault whose file changed is forgotten.

`exec` is the exception that proves the rule: its CMD must be the client's child (its terminal,
its process group, its signals), so the audited read happens here and the client starts CMD
(`runner.DELEGATE`).
"""

from __future__ import annotations

import io
import os
import sys

from kms_cli.agent import protocol

FDS_TIMEOUT = 5.0  # seconds for the client to send its descriptors once told to

# Commands the agent never runs: they make a vault, talk to the agent, or unlock.
_NOT_SERVED = {("init",), ("master", "generate"), ("agent", "start"), ("agent", "status"), ("agent", "stop"),
               ("unlock",), ("lock",)}

# Commands whose success changes what the agent may hold: the vault is forgotten after them.
_FORGET_AFTER = {("master", "add"), ("master", "remove"), ("master", "rotate"), ("restore",)}


def _text_stream(fd: int, mode: str, errors: str):
    raw = io.FileIO(fd, mode, closefd=False)
    if mode == "rb":
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors=errors)
    tty = raw.isatty()
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors=errors, line_buffering=tty,
                            write_through=tty)


def _take_place(cwd: str, umask: int, env: dict) -> None:
    """The client's working directory, umask and environment."""
    os.chdir(cwd)
    os.umask(umask)
    os.environ.clear()
    os.environ.update(env)


def _take_streams(sock) -> None:
    """Receive the client's stdin, stdout and stderr and make them this process's 0, 1 and 2."""
    import socket

    sock.settimeout(FDS_TIMEOUT)
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1, 3)
    finally:
        sock.settimeout(None)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise protocol.ProtocolError("the client did not send its standard streams")
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = _text_stream(0, "rb", "strict")
    sys.stdout = _text_stream(1, "wb", "strict")
    sys.stderr = _text_stream(2, "wb", "backslashreplace")


def _fresh_signals() -> None:
    """The signal dispositions of a fresh kms-cli process, not the agent's (which stops on SIGTERM)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up


def _parse_run(fields: list[bytes]):
    def text(b: bytes) -> str:
        return b.decode("utf-8", "surrogateescape")

    cwd, umask = text(fields[0]), int(fields[1])
    argc = int(fields[2])
    argv = [text(f) for f in fields[3:3 + argc]]
    envc = int(fields[3 + argc])
    env = {}
    for item in fields[4 + argc:4 + argc + envc]:
        k, eq, v = text(item).partition("=")
        if eq:
            env[k] = v
    if len(argv) != argc or not 0 <= umask <= 0o777:
        raise protocol.ProtocolError("malformed run request")
    return cwd, umask, argv, env


def _held_for(argv: list[str], held: dict):
    """(path, Held) when the command's vault is one the agent holds and unchanged; (path, None)
    when it must run in the client; raises nothing the user would not see locally too."""
    from kms_cli.cli.parse import parse
    from kms_cli.config import resolve

    parsed = parse(argv)  # a usage error, --help or --version: raised or no command: run by the client
    if parsed.cmd is None or parsed.version or tuple(parsed.cmd.path) in _NOT_SERVED or parsed.globals.get("unlock"):
        return None, None, None
    settings = resolve(parsed.globals, os.environ)
    from kms_cli.locations import held_form, same_vault

    path = held_form(settings.vault)
    for h in held.values():
        if same_vault(h.path, path):
            return path, h, parsed.cmd
    return path, None, parsed.cmd


def _fingerprint(path: str, keep: bool = False) -> tuple[str, bytes] | None:
    """The vault id and slot set of the file at `path` now (None: not a readable vault). `keep`:
    the connection is handed to the command's own open_store (see store.adopt)."""
    from kms_cli.errors import KmsError
    from kms_cli.store import adopt, open_store
    from kms_cli.vault.session import identity

    try:
        store = open_store(path)
    except KmsError:
        return None
    try:
        with store.read():
            vault_id = store.get_meta("vault_id")
            found = vault_id, identity(path, store.slots())
    except (KmsError, OSError):
        store.close()
        return None
    if keep:
        adopt(path, store)
    else:
        store.close()
    return found


def serve(sock, fields: list[bytes], peer_pid: int, held: dict, events_fd: int) -> int:
    """Run one command for a client; returns this process's exit status (not the command's)."""
    events = os.fdopen(events_fd, "w", buffering=1)

    def tell(line: str) -> None:
        try:
            events.write(line + "\n")
        except OSError:
            pass

    try:
        cwd, umask, argv, env = _parse_run(fields)
    except (ValueError, IndexError, protocol.ProtocolError):
        sock.sendall(protocol.encode(b"error", 2, "malformed run request"))
        return 2
    sock.setblocking(True)
    sock.settimeout(None)
    _fresh_signals()
    try:
        _take_place(cwd, umask, env)
    except OSError:  # the client's directory is gone or not ours to enter: it runs the command itself
        sock.sendall(protocol.encode(b"fallback", "cannot enter the client's working directory"))
        return 0
    try:
        path, h, cmd = _held_for(argv, held)
    except Exception:  # noqa: BLE001 - a bad command line, a bad config: the client reports it itself
        path, h, cmd = None, None, None
    # `health` probes the vault file with a plain open()/close() (store/sqlite.probe): a close drops
    # every POSIX lock this process holds on the file, SQLite's included, so health gets no adopted
    # connection (it opens its own after the probe, as without the agent)
    keep = cmd is None or tuple(cmd.path) != ("health",)
    current = _fingerprint(path, keep=keep) if h is not None else None
    if h is None or current is None or current != (h.vault_id, h.fingerprint):
        if h is not None:
            tell(f"forget {h.vault_id}")  # the file at that path is another vault now, or its slots changed
        tell("miss -")
        sock.sendall(protocol.encode(b"fallback", "the agent does not hold this vault"))
        return 0
    tell(f"hit {h.vault_id}")
    _install_hooks(sock, h, peer_pid)
    from kms_cli.agent import client

    client.ENABLED = False
    sock.sendall(protocol.encode(b"pid", os.getpid()))
    try:
        _take_streams(sock)
    except (OSError, protocol.ProtocolError):
        return 0  # the client gave up (timed out, killed): nothing of the command has run
    from kms_cli.cli.entry import run

    code = run(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    if code == 0 and cmd is not None and tuple(cmd.path) in _FORGET_AFTER:
        tell(f"forget {h.vault_id}")
    tell(f"used {h.vault_id}")
    sock.sendall(protocol.encode(b"exit", code))
    return 0


def _install_hooks(sock, h, peer_pid: int) -> None:
    from kms_cli import actor, runner
    from kms_cli.vault import core

    actor.PID = peer_pid  # the audit entry names the calling process

    def held_root(vault_id: bytes, slots: list[dict]):  # core checks the slot's tag under it
        if vault_id.hex() != h.vault_id:
            return None
        for s in slots:
            if s["id"] == h.slot_id:
                return bytes(h.root), s
        return None

    core.HELD = held_root

    def delegate(argv, env, mask_values, env_file, dotenv_text) -> int:
        from kms_cli.agent.client import pack_exec

        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        sock.sendall(protocol.encode(b"exec", *pack_exec(argv, env, mask_values, env_file, dotenv_text)))
        os._exit(0)  # the client runs CMD; this process has nothing more to say

    runner.DELEGATE = delegate


def record_lock(h, reason: str, pid: int | None) -> None:
    """In a process forked by the agent: the `agent.lock` entry for a vault being forgotten."""
    from kms_cli import actor
    from kms_cli.vault import Options, core

    if pid:
        actor.PID = pid

    def held_root(vault_id, slots):
        for s in slots:
            if s["id"] == h.slot_id and vault_id.hex() == h.vault_id:
                return bytes(h.root), s
        return None

    core.HELD = held_root
    current = _fingerprint(h.path)
    if current != (h.vault_id, h.fingerprint):
        return  # another vault, or other slots, at that path now: nothing of ours to write into
    vault = core.Vault.open(Options(path=h.path))
    try:
        with vault.operation("agent.lock") as rec:
            rec.extra = {"reason": reason}
    finally:
        vault.close()
