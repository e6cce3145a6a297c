"""Handlers for sessions: `unlock`, `lock`, `agent start|status|stop` (spec section 6)."""

from __future__ import annotations

import json
import os
import sys
import time

from kms_cli.errors import AlreadyExistsError, NotFoundError, UnavailableError

# What the agent process keeps of the environment it was started from: never a master key, a
# passphrase or a cloud credential (each command brings its own caller's environment).
_AGENT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_STATE_HOME",
              "XDG_DATA_HOME", "XDG_CONFIG_HOME", "KMS_CLI_AGENT_SOCK", "PYTHONPATH", "VIRTUAL_ENV")
START_WAIT = 10.0  # seconds for a new agent to listen


def _seconds(value, default: int) -> int:
    from kms_cli.durations import parse_duration

    if value is None:
        return default
    seconds = parse_duration(value)
    if seconds <= 0:
        from kms_cli.errors import UsageError

        raise UsageError(f"the duration {value} must be more than zero")
    return seconds


def _socket(ctx) -> str:
    from kms_cli.agent.protocol import socket_path

    return socket_path(ctx.environ)


def _log_path(ctx) -> str:
    from kms_cli.pending import pending_dir

    base = os.path.dirname(pending_dir(ctx.environ) or os.path.join("/tmp", f"kms-cli-{os.getuid()}", "x"))
    os.makedirs(base, mode=0o700, exist_ok=True)
    return os.path.join(base, "agent.log")


def _spawn(ctx, idle: int, max_: int) -> int:
    """Start `kms-cli agent start --foreground` detached; return its pid once it answers."""
    import subprocess

    from kms_cli.agent.server import answering

    path = _socket(ctx)
    env = {k: v for k, v in ctx.environ.items() if k in _AGENT_ENV or k.startswith("LC_")}
    log = _log_path(ctx)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # From "/" and with -P (3.11+): `-m` would put the caller's directory first on the import
        # path, and a `kms_cli/` there would be the code that receives every root key.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        proc = subprocess.Popen([sys.executable, *safe_path, "-m", "kms_cli", "agent", "start", "--foreground",
                                 "--idle", f"{idle}s", "--max", f"{max_}s"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd, env=env,
                                cwd="/", start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UnavailableError(f"the agent did not start (exit {proc.returncode})", hint=f"see {log}")
        if answering(path):
            return proc.pid
        time.sleep(0.02)
    proc.kill()
    raise UnavailableError("the agent did not start listening in time", hint=f"see {log}")


def _status(ctx, *, hung_is_absent: bool = True) -> dict | None:
    """The agent's status, None when none answers (a hung one too, unless `hung_is_absent` is False:
    then UnavailableError)."""
    from kms_cli.agent import client

    try:
        answer = client.request(b"status", path=_socket(ctx))
    except UnavailableError:
        if not hung_is_absent:
            raise
        return None
    return None if answer is None else json.loads(answer[0])


def start(ctx, idle, max, foreground) -> int:  # noqa: A002
    from kms_cli.agent import server

    idle_s, max_s = _seconds(idle, server.DEFAULT_IDLE), _seconds(max, server.DEFAULT_MAX)
    path = _socket(ctx)
    running = _status(ctx, hung_is_absent=False)
    if running is not None:
        raise AlreadyExistsError(f"an agent already runs (pid {running['pid']}) on {path}",
                                 hint="`kms-cli agent stop` first to start another")
    if not foreground:
        pid = _spawn(ctx, idle_s, max_s)
        if ctx.json:
            ctx.emit_json({"socket": path, "pid": pid})
        else:
            ctx.info(f"agent started (pid {pid}) on {path}")
        return 0
    from kms_cli.hardening import no_core_dumps

    no_core_dumps()
    agent = server.Agent(path, idle_s, max_s, log=sys.stderr)
    lock = _single_instance(path)
    agent.preload()
    agent.listen()
    ctx.info(f"agent listening on {path} (pid {os.getpid()})")
    try:
        agent.serve_forever()
    finally:
        os.close(lock)
    return 0


def _single_instance(path: str) -> int:
    """Hold `<socket>.lock` (flock) for the agent's life: a second agent on the same socket stops."""
    import fcntl

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AlreadyExistsError(f"another agent is starting on {path}") from None
    return fd


def status(ctx) -> int:
    info = _status(ctx)
    if info is None:
        raise NotFoundError(f"no agent answers on {_socket(ctx)}", hint="start one with `kms-cli unlock`")
    shown = {"socket": info["socket"], "pid": info["pid"], "vaults": info["vaults"]}
    if ctx.json:
        ctx.emit_json(shown)
        return 0
    lines = [f"agent pid {info['pid']} on {info['socket']}"]
    if not info["vaults"]:
        lines.append("  holds no vault")
    for v in info["vaults"]:
        lines.append(f"  {v['vault']}  (id {v['id']})  unlocked {v['unlocked']}, forgotten at {v['idle_expires']} "
                     f"unless used, at the latest {v['expires']}")
    ctx.stdout.write(("\n".join(lines) + "\n").encode())
    return 0


def stop(ctx) -> int:
    from kms_cli.agent import client

    answer = client.request(b"stop", path=_socket(ctx))
    if answer is None:
        ctx.info("no agent is running")
        return 0
    from kms_cli.cli.output import plural

    n = json.loads(answer[0])["forgotten"]
    ctx.info(f"agent stopped ({plural(n, 'vault')} forgotten)")
    return 0


def lock(ctx, all) -> int:  # noqa: A002
    from kms_cli.agent import client

    from kms_cli.locations import held_form

    path = "" if all else held_form(ctx.settings.vault)
    answer = client.request(b"lock", path, path=_socket(ctx))
    n = 0 if answer is None else json.loads(answer[0])["forgotten"]
    if ctx.json:
        ctx.emit_json({"forgotten": n})
    elif answer is None:
        ctx.info("no agent is running: nothing to forget")
    else:
        from kms_cli.cli.output import plural

        ctx.info(f"the agent forgot {plural(n, 'vault')}")
    return 0


def unlock(ctx, idle, max) -> int:  # noqa: A002
    from kms_cli.agent import client, server
    from kms_cli.vault import session

    # without --idle/--max the agent's own (`agent start --idle/--max`, else 5m and 1h) apply
    idle_s, max_s = _seconds(idle, 0), _seconds(max, 0)
    if _status(ctx, hung_is_absent=False) is None:
        _spawn(ctx, server.DEFAULT_IDLE, server.DEFAULT_MAX)
    with ctx.vault() as vault:
        info = session.hand_over(vault, idle_s or None, max_s or None)
    answer = client.request(b"hold", info["path"], info["vault_id"], info["root"], info["slot_id"],
                            idle_s or b"", max_s or b"", info["fingerprint"], path=_socket(ctx))
    if answer is None:
        raise UnavailableError("the agent stopped before it took the vault", hint="run `kms-cli unlock` again")
    held = json.loads(answer[0])
    if not held.get("memory_locked", True):
        ctx.warn("the agent could not lock the root key's memory against swap (mlock: raise RLIMIT_MEMLOCK, "
                 "`ulimit -l`); it holds the vault anyway")
    if ctx.json:
        ctx.emit_json({"vault": held["vault"], "id": held["id"], "idle_expires": held["idle_expires"],
                       "expires": held["expires"]})
    else:
        ctx.info(f"the agent holds {held['vault']} until {held['expires']} "
                 f"(forgotten at {held['idle_expires']} unless used)")
    return 0
