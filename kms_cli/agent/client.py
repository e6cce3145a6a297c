"""The thin client: hand a command to the agent, or say it must run here. Standard library only.

`run(argv)` is on the hot path (`secret get`, `read`, `env`, `exec` through the agent): it
imports `socket` and nothing of the vault, the crypto layer, SQLite, Typer or Rich. It sends
the command line, the environment, the working directory and umask, and the client's stdin,
stdout and stderr descriptors (SCM_RIGHTS); a process forked by the agent runs the command
exactly as this process would, writing to those descriptors, and sends back its exit code.

Returns None when the command must run here: no agent, the agent does not hold this vault
(`fallback`), or the agent does not answer in time (a one-line warning: a dead or hung agent
never blocks a user). Once the agent has started the command, this process waits for its end
(however long: prompts, large streams) and passes ^C on to it.
"""

from __future__ import annotations

import os
import sys

from kms_cli.agent import protocol

CONNECT_TIMEOUT = 2.0  # seconds for the agent to accept and to say it started the command
ENABLED = True  # False inside the agent's own processes (a command it runs never asks it again)
disabled = protocol.disabled


def _timeout(environ) -> float:
    try:
        return max(0.05, float(environ.get("KMS_CLI_AGENT_TIMEOUT", CONNECT_TIMEOUT)))
    except ValueError:
        return CONNECT_TIMEOUT


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"kms-cli: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def connect(path: str | None = None, *, quiet_if_absent: bool = True):
    """A connected socket to the agent, or None (no socket file: no agent; a dead one: warned)."""
    path = path or protocol.socket_path()
    if quiet_if_absent and not os.path.exists(path):
        return None
    # The C module, not `socket`: socket.py brings enum and selectors along (~3 ms on a path
    # whose whole budget is ~15 ms); a C socket object has every call used here.
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(_timeout(os.environ))
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        if quiet_if_absent:
            warn(f"the agent at {path} does not answer ({exc.strerror or exc}); unlocking without it")
        return None
    return s


def run(argv: list[str]) -> int | None:
    """Run a command through the agent; None when it must run in this process (no agent, or the
    agent does not serve it: not a held vault's command, a usage error, help)."""
    if not os.path.exists(protocol.socket_path()):
        return None  # no agent: one stat
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return None  # a closed standard stream: the local path reports it exactly
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    s = connect()
    if s is None:
        return None
    mask = os.umask(0o077)
    os.umask(mask)
    env = [f"{k}={v}" for k, v in os.environ.items()]
    msg = protocol.encode(b"run", protocol.VERSION, cwd, mask, len(argv), *argv, len(env), *env)
    try:
        s.sendall(msg)
        first = protocol.recv_frame(s)
    except (OSError, protocol.ProtocolError) as exc:  # includes the timeout: nothing started
        s.close()
        warn(f"the agent did not answer ({_why(exc)}); unlocking without it")
        return None
    kind = first[0]
    if kind == b"fallback":
        s.close()
        return None
    if kind == b"error":
        s.close()
        warn(f"the agent refused the request ({first[2].decode(errors='replace')}); unlocking without it")
        return None
    if kind != b"pid" or len(first) != 2 or not first[1].isdigit():
        s.close()
        warn("the agent answered something unexpected; unlocking without it")
        return None
    try:
        import _socket

        # SCM_RIGHTS with descriptors 0, 1, 2 (what socket.send_fds does, without importing socket.py)
        s.sendmsg([b"."], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, (0).to_bytes(4, sys.byteorder)
                            + (1).to_bytes(4, sys.byteorder) + (2).to_bytes(4, sys.byteorder))])
    except OSError as exc:
        s.close()
        warn(f"the agent did not take the command ({_why(exc)}); unlocking without it")
        return None
    return _wait(s, int(first[1]))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "timeout":
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _wait(s, pid: int) -> int:
    """The command runs in agent process `pid`: wait for its end, passing ^C, SIGTERM and SIGHUP on
    to it (the command then ends as it would here: temporary files removed, exit 128+N)."""
    import _signal  # the C module: `signal` imports enum

    def forward(signo, frame):
        try:
            os.kill(pid, signo)
        except OSError:
            pass

    for signo in (_signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(signo, forward)
    s.settimeout(None)
    while True:
        try:
            frame = protocol.recv_frame(s)
            break
        except KeyboardInterrupt:
            try:
                os.kill(pid, 2)  # SIGINT: the command stops as it would here (exit 130)
            except OSError:
                pass
        except (OSError, protocol.ProtocolError):
            s.close()
            sys.stderr.write("kms-cli: error: the agent stopped while it ran the command; its outcome is "
                             "unknown\nkms-cli: hint: check with `kms-cli audit log`, then run it again "
                             "(or pass --no-agent)\n")
            return 7
    s.close()
    if frame[0] == b"exit" and len(frame) == 2 and frame[1].lstrip(b"-").isdigit():
        return int(frame[1])
    if frame[0] == b"exec":
        return _exec(frame[1:])
    sys.stderr.write("kms-cli: error: the agent answered something unexpected\n")
    return 7


def _exec(fields: list[bytes]) -> int:
    """exec's child is started here, in the caller's process group and terminal: the agent
    read the secrets (and wrote the audit entry); this process runs CMD as `exec` does."""
    from kms_cli import runner

    argv, env, mask, env_file, dotenv_text = unpack_exec(fields)
    return runner.run(argv, env, mask_values=mask, env_file=env_file, dotenv_text=dotenv_text)


def pack_exec(argv, env, mask_values, env_file, dotenv_text) -> list:
    def raw(v):
        return v.reveal() if hasattr(v, "reveal") else (v.encode() if isinstance(v, str) else bytes(v))

    fields = [len(argv), *argv, len(env)]
    for k, v in env.items():
        fields += [k, v]
    fields += [b"-" if mask_values is None else b"+", len(mask_values or ()), *[raw(v) for v in mask_values or ()]]
    fields += [b"" if env_file is None else b"+" + env_file.encode("utf-8", "surrogateescape"),
               b"" if dotenv_text is None else b"+" + raw(dotenv_text)]
    return fields


def unpack_exec(fields: list[bytes]):
    def text(b: bytes) -> str:
        return b.decode("utf-8", "surrogateescape")

    it = iter(fields)
    argv = [text(next(it)) for _ in range(int(next(it)))]
    env = {}
    for _ in range(int(next(it))):
        k = text(next(it))
        env[k] = text(next(it))
    masked = next(it) == b"+"
    values = [next(it) for _ in range(int(next(it)))]
    env_file, dotenv_text = next(it), next(it)
    return (argv, env, values if masked else None, text(env_file[1:]) if env_file else None,
            text(dotenv_text[1:]) if dotenv_text else None)


def request(kind: bytes, *fields, path: str | None = None) -> list[bytes] | None:
    """One request to the agent (status, hold, lock, stop): the answer's fields, or None when no
    agent runs (no socket, or nothing listens on it). An agent that accepts but does not answer
    (hung, stopped) raises UnavailableError; an `error` answer raises the kms_cli error it names."""
    s = connect(path, quiet_if_absent=False)
    if s is None:
        return None
    try:
        s.sendall(protocol.encode(kind, protocol.VERSION, *fields))
        answer = protocol.recv_frame(s)
    except (OSError, protocol.ProtocolError) as exc:
        from kms_cli.errors import UnavailableError

        raise UnavailableError(f"the agent at {path or protocol.socket_path()} does not answer ({_why(exc)})",
                               hint="`kms-cli agent status`; kill the agent's process if it stays so") from None
    finally:
        s.close()
    if answer[0] == b"error":
        from kms_cli.errors import KmsError

        err = KmsError(answer[2].decode(errors="replace"))
        err.exit_code = int(answer[1]) if answer[1].isdigit() else 1
        raise err
    return answer[1:]
