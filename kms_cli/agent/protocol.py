"""The agent's wire format and where its socket lives. Imported by the thin client: stdlib only.

A message is a frame: 4 bytes of big-endian length, then that many bytes holding a sequence
of netstrings (`<decimal length>:<bytes>,`). Fields are bytes; the first names the message.
Netstrings carry any byte (argv, environment values and secret values included) and need no
parser beyond `int()` and slicing, so a garbage frame is a clean `ProtocolError`, never
anything else. Frames are at most `MAX_FRAME` bytes: a larger announced length is refused
before anything is read.

Client -> agent (the first frame of a connection). After `run`, once the agent has answered
`pid`, the client sends one more byte carrying its stdin, stdout and stderr descriptors
(SCM_RIGHTS): only a process that is about to run the command ever holds them, so an agent that
hangs before it answers keeps no pipe of the caller's open.
    run      VERSION cwd umask argc argv... envc K=V...
    hold     VERSION path vault_id root slot_id idle max slots-fingerprint
    status   VERSION
    lock     VERSION path|""                (empty path: every vault)
    stop     VERSION

Agent -> client:
    pid      PID                  a forked agent process runs the command (signals go to PID)
    exit     CODE                 the command's exit code: the client exits with it
    exec     ...                  exec's child is the client's to start (see `child.py`)
    fallback REASON               the agent does not hold this vault: run the command locally
    ok       JSON                 status / hold / lock / stop answers
    error    CODE MESSAGE         the request itself was refused (exit CODE)
"""

from __future__ import annotations

import os

VERSION = b"kms-cli-agent/1"
MAX_FRAME = 4 << 20  # an environment is at most a few hundred KiB; exec's payload holds secret values


class ProtocolError(Exception):
    """A frame that is not what the other side writes (garbage, oversized, cut short)."""


def encode(*fields) -> bytes:
    """One frame of netstrings; str fields are UTF-8 (surrogateescape: argv and env bytes survive)."""
    parts = []
    for f in fields:
        if isinstance(f, str):
            f = f.encode("utf-8", "surrogateescape")
        elif isinstance(f, int):
            f = str(f).encode()
        else:
            f = bytes(f)
        parts.append(b"%d:%s," % (len(f), f))
    body = b"".join(parts)
    if len(body) > MAX_FRAME:
        raise ProtocolError("message too large")
    return len(body).to_bytes(4, "big") + body


def decode(body: bytes) -> list[bytes]:
    """The fields of a frame's body; ProtocolError on anything malformed."""
    out = []
    i, n = 0, len(body)
    while i < n:
        colon = body.find(b":", i, i + 12)
        if colon < 0:
            raise ProtocolError("malformed message")
        digits = body[i:colon]
        if not digits.isdigit():
            raise ProtocolError("malformed message")
        size = int(digits)
        end = colon + 1 + size
        if end >= n + 1 or body[end:end + 1] != b",":
            raise ProtocolError("malformed message")
        out.append(body[colon + 1:end])
        i = end + 1
    if not out:
        raise ProtocolError("empty message")
    return out


def frame_length(header: bytes) -> int:
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ProtocolError(f"message of {size} bytes is larger than {MAX_FRAME}")
    return size


def recv_frame(sock) -> list[bytes]:
    """Read one whole frame from a blocking socket (EOF before it ends: ProtocolError)."""
    header = _recv_exact(sock, 4)
    return decode(_recv_exact(sock, frame_length(header)))


def _recv_exact(sock, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def socket_path(environ=None) -> str:
    """KMS_CLI_AGENT_SOCK, else $XDG_RUNTIME_DIR/kms-cli/agent.sock, else <tmp>/kms-cli-<uid>/agent.sock."""
    env = os.environ if environ is None else environ
    explicit = env.get("KMS_CLI_AGENT_SOCK")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "kms-cli", "agent.sock")
    tmp = env.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"kms-cli-{os.getuid()}", "agent.sock")


def disabled(argv, environ=None) -> bool:
    """--no-agent before `--`, or KMS_CLI_NO_AGENT set to anything but empty or 0."""
    env = os.environ if environ is None else environ
    if env.get("KMS_CLI_NO_AGENT", "") not in ("", "0"):
        return True
    for a in argv:
        if a == "--":
            return False
        if a == "--no-agent":
            return True
    return False
