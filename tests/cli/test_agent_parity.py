"""A command through the agent is indistinguishable from one without it (issue 12, spec 6): the
CLI suite's core cases run both ways, compared byte for byte.

Two identical vaults (one file copied after the fixtures were made: same id, keys, secrets and
ciphertexts): A runs every case with --no-agent and the master key; B is held by an agent and runs
every case WITHOUT the master key in its environment, so a case that silently fell back to a
local unlock would exit 4 and be caught. Stdout bytes, stderr lines and exit codes must match
(only the vault's path differs), and so must the audit entries each run appended (op, target,
version, result, error, detail, actor user/host/ci; the pid is the caller's, so it differs)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest

from agenthelp import stop_agent
from kmshelp import MASTER_KEY, Kms, base_env

BINARY = bytes(range(256)) * 2
TEMPLATE = "user=app\npass={{ kms://app/db }}\ntok={{ kms://app/api-token?version=1 }}\n"


def _prepare(tmp):
    """The fixtures every case reads, made once in A, then A copied to B."""
    env = base_env(tmp)
    a = Kms(tmp, {**env, "KMS_CLI_VAULT": str(tmp / "a.db")})
    a.ok("init")
    a.ok("secret", "put", "app/db", input=b"pw-1")
    a.ok("secret", "put", "app/db", input=b"pw-2 'quoted' $HOME")
    a.ok("secret", "put", "app/api-token", input=b"tok-123")
    a.ok("secret", "put", "bin", input=BINARY)
    a.ok("secret", "put", "other/x", input=b"x", env=None)
    a.ok("secret", "put", "tagged", "--tag", "env=prod", input=b"t")
    a.ok("key", "create", "k")
    a.ok("key", "create", "k2", "--algorithm", "chacha20-poly1305")
    a.ok("key", "create", "sig", "--algorithm", "ed25519")
    a.ok("key", "create", "rev")
    a.ok("key", "create", "gone-soon")
    (tmp / "plain.txt").write_bytes(b"the plaintext\n")
    (tmp / "msg").write_bytes(b"a message to sign")
    a.ok("encrypt", "--key", "k", "-i", "plain.txt", "-o", "ct.bin")
    a.ok("encrypt", "--key", "k", "--context", "app=web", "-i", "plain.txt", "-o", "ct-ctx.bin")
    a.ok("encrypt", "--key", "k2", "--armor", "-i", "plain.txt", "-o", "ct2.asc")
    a.ok("encrypt", "--key", "rev", "-i", "plain.txt", "-o", "ct-rev.bin")
    a.ok("key", "revoke", "rev", "--reason", "test")
    a.ok("sign", "--key", "sig", "-i", "msg", "-o", "msg.sig")
    ct = bytearray((tmp / "ct.bin").read_bytes())
    ct[-5] ^= 1
    (tmp / "ct-tampered.bin").write_bytes(bytes(ct))
    (tmp / "bad.sig").write_bytes(bytes(b ^ 0xFF for b in (tmp / "msg.sig").read_bytes()))
    (tmp / "tmpl").write_text(TEMPLATE)
    (tmp / "tmpl-bad").write_text("x={{ kms://app/nope }}\n")
    for suffix in ("", "-wal", "-shm"):
        if (tmp / f"a.db{suffix}").exists():
            shutil.copy2(tmp / f"a.db{suffix}", tmp / f"b.db{suffix}")
    b = Kms(tmp, {**env, "KMS_CLI_VAULT": str(tmp / "b.db")})
    a.env["KMS_CLI_NO_AGENT"] = "1"
    b.ok("unlock")  # with the master key, once
    b.env.pop("KMS_CLI_MASTER_KEY")  # from now on only the agent can open B
    return a, b


RANDOM = "random"  # stdout differs by design (fresh nonce / data key): compare its length only
COUNTS = "counts"  # counts the log's entries: B holds one more (its agent.unlock)

# (id, argv, stdin, expected exit, stdout check)
CASES = [
    ("get", ["secret", "get", "app/db"], None, 0, None),
    ("get-version", ["secret", "get", "app/db", "--version", "1"], None, 0, None),
    ("get-json", ["--json", "secret", "get", "app/db"], None, 0, None),
    ("get-binary-json", ["--json", "secret", "get", "bin"], None, 0, None),
    ("get-binary", ["secret", "get", "bin"], None, 0, None),
    ("get-missing", ["secret", "get", "app/nope"], None, 3, None),
    ("get-missing-json", ["--json", "secret", "get", "app/nope"], None, 3, None),
    ("get-missing-version", ["secret", "get", "app/db", "--version", "9"], None, 3, None),
    ("get-namespace", ["--namespace", "app", "secret", "get", "db"], None, 0, None),
    ("get-outside-namespace", ["--namespace", "app", "secret", "get", "other/x"], None, 3, None),
    ("list", ["secret", "list"], None, 0, None),
    ("list-json", ["--json", "secret", "list"], None, 0, None),
    ("list-tag", ["secret", "list", "--tag", "env=prod"], None, 0, None),
    ("list-namespace", ["--namespace", "app", "secret", "list"], None, 0, None),
    ("history", ["secret", "history", "app/db"], None, 0, None),
    ("history-json", ["--json", "secret", "history", "app/db"], None, 0, None),
    ("read", ["read", "kms://app/db"], None, 0, None),
    ("read-version", ["read", "kms://app/db?version=1"], None, 0, None),
    ("read-missing", ["read", "kms://app/nope"], None, 3, None),
    ("env-sh", ["env", "--secret", "app/db", "--format", "sh"], None, 0, None),
    ("env-json", ["env", "--secret", "app/db", "--secret", "app/api-token=TOK", "--format", "json"], None, 0, None),
    ("env-all-dotenv-unsafe", ["--namespace", "app", "env", "--all", "--prefix", "X_", "--format", "dotenv"], None, 2,
     None),
    ("env-dotenv", ["env", "--secret", "app/api-token", "--format", "dotenv"], None, 0, None),
    ("env-missing", ["env", "--secret", "app/nope"], None, 3, None),
    ("inject-stdin", ["inject"], TEMPLATE.encode(), 0, None),
    ("inject-file", ["inject", "-i", "tmpl"], None, 0, None),
    ("inject-unknown", ["inject", "-i", "tmpl-bad"], None, 3, None),
    ("exec", ["exec", "-s", "app/db", "--", "sh", "-c", 'printf "%s|%s" "$DB" "${KMS_CLI_MASTER_KEY-unset}"'],
     None, 0, None),
    ("exec-exit", ["exec", "-s", "app/db", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None, 3, None),
    ("exec-missing-secret", ["exec", "-s", "app/nope", "--", "true"], None, 3, None),
    ("key-list", ["key", "list"], None, 0, None),
    ("key-list-json", ["--json", "key", "list"], None, 0, None),
    ("key-show-json", ["--json", "key", "show", "k"], None, 0, None),
    ("key-show", ["key", "show", "rev"], None, 0, None),
    ("key-show-missing", ["key", "show", "nope"], None, 3, None),
    ("key-public", ["key", "public", "sig", "--format", "jwk"], None, 0, None),
    ("decrypt", ["decrypt", "-i", "ct.bin"], None, 0, None),
    ("decrypt-stdin-armor", ["decrypt"], "ct2.asc", 0, None),
    ("decrypt-context", ["decrypt", "--context", "app=web", "-i", "ct-ctx.bin"], None, 0, None),
    ("decrypt-wrong-context", ["decrypt", "--context", "app=api", "-i", "ct-ctx.bin"], None, 5, None),
    ("decrypt-tampered", ["decrypt", "-i", "ct-tampered.bin"], None, 5, None),
    ("decrypt-tampered-json", ["--json", "decrypt", "-i", "ct-tampered.bin"], None, 5, None),
    ("decrypt-revoked", ["decrypt", "-i", "ct-rev.bin"], None, 6, None),
    ("decrypt-empty", ["decrypt"], b"", 5, None),
    ("encrypt", ["encrypt", "--key", "k"], b"x" * 1000, 0, RANDOM),
    ("encrypt-revoked", ["encrypt", "--key", "rev"], b"x", 6, None),
    ("encrypt-wrong-purpose", ["encrypt", "--key", "sig"], b"x", 6, None),
    ("encrypt-missing-key", ["encrypt", "--key", "nope"], b"x", 3, None),
    ("sign", ["sign", "--key", "sig", "-i", "msg"], None, 0, None),
    ("verify", ["verify", "--key", "sig", "--signature", "msg.sig", "-i", "msg"], None, 0, None),
    ("verify-bad", ["verify", "--key", "sig", "--signature", "bad.sig", "-i", "msg"], None, 5, None),
    ("datakey", ["datakey", "--key", "k"], None, 0, RANDOM),
    ("usage-missing-arg", ["secret", "get"], None, 2, None),
    ("usage-bad-name", ["secret", "get", "../x"], None, 2, None),
    ("usage-bad-algorithm", ["key", "create", "x", "--algorithm", "nope"], None, 2, None),
    ("usage-unknown-option", ["secret", "list", "--frobnicate"], None, 2, None),
    # writes: each vault changes the same way
    ("put", ["secret", "put", "app/new"], b"new value", 0, None),
    ("put-again", ["secret", "put", "app/new", "--tag", "a=b"], b"newer", 0, None),
    ("get-new", ["secret", "get", "app/new"], None, 0, None),
    ("rm", ["secret", "rm", "app/new"], None, 0, None),
    ("get-removed", ["secret", "get", "app/new"], None, 3, None),
    ("key-create-exists", ["key", "create", "k"], None, 8, None),
    ("key-disable", ["key", "disable", "k2"], None, 0, None),
    ("decrypt-disabled", ["decrypt"], "ct2.asc", 6, None),
    ("key-enable", ["key", "enable", "k2"], None, 0, None),
    ("key-rotate", ["key", "rotate", "gone-soon"], None, 0, None),
    ("key-revoke", ["key", "revoke", "gone-soon", "--version", "1", "--reason", "parity"], None, 0, None),
    ("audit-verify", ["audit", "verify"], None, 0, "counts"),
]

LOG_LENGTHS: dict = {}  # carried from one case to the next (one export per vault per case)
TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _norm(data: bytes, a: Kms, b: Kms, *, times: bool) -> bytes:
    data = data.replace(str(a.vault).encode(), b"<vault>").replace(str(b.vault).encode(), b"<vault>")
    return TIME.sub(b"<time>", data) if times else data


def _entries(kms: Kms) -> list[dict]:
    r = kms.ok("--no-agent", "--json", "audit", "export", env={"KMS_CLI_MASTER_KEY": MASTER_KEY})
    return r.json_lines()


def _comparable(e: dict) -> dict:
    keep = {k: v for k, v in e.items() if k not in ("seq", "time", "prev", "mac")}
    keep["actor"] = {k: v for k, v in e["actor"].items() if k != "pid"}
    if e["op"] in ("audit.export", "audit.verify"):  # they count the entries: B has its agent.unlock more
        keep.pop("detail", None)
    return keep


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    a, b = _prepare(tmp)
    try:
        yield a, b
    finally:
        stop_agent(b)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_through_agent(pair, case):
    a, b = pair
    name, argv, stdin, code, check = case
    if isinstance(stdin, str):
        stdin = (a.tmp / stdin).read_bytes()
    # the log lengths after the previous case (its exports' own entries included) or, first, now
    before_a, before_b = LOG_LENGTHS.get("a") or len(_entries(a)), LOG_LENGTHS.get("b") or len(_entries(b))
    LOG_LENGTHS.clear()
    local = a(*argv, input=stdin)
    via = b(*argv, input=stdin)
    assert local.code == code, f"without the agent: exit {local.code}: {local.err}"
    assert via.code == local.code, f"through the agent: exit {via.code} (without: {local.code}): {via.err}"
    # time stamps of rows written by this very case (key rotate) may fall in another second
    times = name in ("key-rotate", "key-revoke")
    if check == RANDOM:
        assert len(via.out) == len(local.out) and via.out != local.out
    elif check == COUNTS:
        assert re.sub(rb"\d+", b"N", via.out) == re.sub(rb"\d+", b"N", local.out)
    else:
        assert _norm(via.out, a, b, times=times) == _norm(local.out, a, b, times=times)
    assert _norm(via.err.encode(), a, b, times=times).splitlines() == \
        _norm(local.err.encode(), a, b, times=times).splitlines()
    assert "warning" not in via.err or "warning" in local.err
    # the audit entries this case appended: the same in both vaults
    all_a, all_b = _entries(a), _entries(b)
    new_a, new_b = all_a[before_a:], all_b[before_b:]
    assert [_comparable(e) for e in new_b] == [_comparable(e) for e in new_a]
    if code != 2:
        assert new_a, "every operation on an unlocked vault appends an entry"
    LOG_LENGTHS.update(a=len(all_a) + 1, b=len(all_b) + 1)  # + the export that listed them


def test_whole_logs_match(pair):
    """After every case, B's log is A's plus the agent.unlock entry (actors' pids aside)."""
    a, b = pair
    la, lb = _entries(a), _entries(b)
    lb = [e for e in lb if e["op"] != "agent.unlock"]
    assert [_comparable(e) for e in lb] == [_comparable(e) for e in la]
    assert "ok" in {e["result"] for e in la} and len({e["result"] for e in la}) > 1  # refusals are audited too
    assert b.ok("audit", "verify").code == 0
    assert json.loads(b.ok("--json", "agent", "status").out)["vaults"][0]["vault"] == os.path.realpath(b.vault)


def test_ciphertexts_interchangeable(pair):
    """What B's agent encrypts, A decrypts without it (and back): the same vault, the same keys."""
    a, b = pair
    ct = b.ok("encrypt", "--key", "k", input=b"via agent").out
    assert a.ok("decrypt", input=ct).out == b"via agent"
    ct = a.ok("encrypt", "--key", "k", input=b"without").out
    assert b.ok("decrypt", input=ct).out == b"without"
    dk = b.ok("datakey", "--key", "k").json()
    assert set(dk) == {"plaintext", "ciphertext", "key", "version"} and len(base64.b64decode(dk["plaintext"])) == 32
