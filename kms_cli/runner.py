"""Running a program with secrets: its environment, exec or a supervised child, signals, env file.

Nothing here touches the vault: callers hand in already-decrypted values.

Two ways to run CMD (never through a shell):

- **exec** (no ``--mask``, no ``--env-file-out``): kms-cli replaces itself with CMD
  (``os.execvpe``), so signals, exit status and job control are CMD's own.
- **supervised**: CMD is started with ``os.posix_spawn`` (no fork of the Python process,
  no shell) and kms-cli stays as its parent: it forwards SIGINT, SIGTERM, SIGHUP,
  SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH, relays and masks the output, deletes the env
  file when CMD is gone, and returns CMD's exit code (128+N when a signal N killed it).

Signals are received synchronously (blocked, then collected with ``sigtimedwait``) so
that each carries its origin. One that the terminal sent to the whole foreground
process group (Ctrl-C, Ctrl-\\, a resize, a hangup) has already reached a child that
shares kms-cli's process group and is not sent twice; one sent to kms-cli alone
(``kill``, a CI runner cancelling the job) is forwarded. A signal sent to the whole
process group by ``kill -- -PGID`` reaches the child twice, as with every supervisor.
Where ``sigtimedwait`` does not exist (macOS), every signal is forwarded.

Masking (``--mask``): the child's stdout and stderr go through kms-cli and every
occurrence of a value is replaced by ``***``; see `kms_cli.masking` for the forms masked
and how values split across reads are caught. When kms-cli's stdout is a
terminal the child gets a pseudo-terminal of the same size (kept in sync) so colours,
progress bars and line editing work; if stdin is that terminal too and kms-cli is in
the foreground, the terminal is put in raw mode and keystrokes pass through the pty
(Ctrl-C and Ctrl-\\ become the child's signals there), except Ctrl-Z, which stops the
child and kms-cli together so that the shell's ``fg`` resumes both.

Limits: a SIGKILL to kms-cli cannot be handled, so the env file then stays behind until
the child is gone too: it is registered with `kms_cli.leftovers` (a marker naming the file,
kms-cli and, once started, the child), and the next kms-cli command after both have ended
removes it (choose a directory on tmpfs all the same). `run` must be called from the main
thread of a process without other threads that leave these signals unblocked.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping

try:  # POSIX terminals; absent on Windows, where only exec without --mask is meaningful
    import fcntl
    import termios
    import tty
except ImportError:  # pragma: no cover
    fcntl = termios = tty = None

from kms_cli.errors import AlreadyExistsError, UsageError
from kms_cli.names import ENV_NAME_PATTERN
from kms_cli.masking import Masker, mask_patterns
from kms_cli.secretvalue import SecretValue

DEFAULT_SCRUB = ("KMS_CLI_MASTER_KEY", "KMS_CLI_PASSPHRASE", "KMS_CLI_UNLOCK")
PRISTINE_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "TMPDIR")
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
)
ENV_FILE_VAR = "KMS_CLI_ENV_FILE"

_ENV_NAME = re.compile(ENV_NAME_PATTERN)  # the one pattern, in names.py
_SI_KERNEL = 0x80  # si_code of a signal the kernel raised (terminal keys, resize, hangup)
_TICK = 0.05  # seconds between checks for signals and child exit while relaying output
_GRACE = 0.5  # seconds to keep relaying after the child exited, for output still in flight


def _stderr_line(prefix: str, message: str) -> None:
    try:
        sys.stderr.flush()
        os.write(2, f"kms-cli: {prefix}: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass


# ---------------------------------------------------------------------------- environment


def build_env(
    base_env: Mapping[str, str],
    secrets: Mapping[str, SecretValue | bytes],
    *,
    pristine: bool = False,
    no_clobber: bool = False,
    scrub: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """The child's environment: `base_env` (or its allowlisted part), minus scrubbed names, plus secrets.

    `pristine` keeps only PATH, HOME, USER, LOGNAME, SHELL, TERM, LANG, LC_*, TZ and
    TMPDIR. DEFAULT_SCRUB and `scrub` (e.g. the variable of an ``env:VAR`` slot or a
    ``pin-source=env:`` variable) are removed from the base before secrets are added.
    A secret whose variable is still present either overwrites it, calling
    ``warn(message)`` (default: a ``kms-cli: warning:`` line on stderr), or with
    `no_clobber` raises. Values may be any bytes but NUL; they reach the child exactly
    (decoded with ``os.fsdecode`` so that ``execve`` re-encodes the same bytes).

    Raises:
        AlreadyExistsError: `no_clobber` and a variable already exists (names it).
        UsageError: an illegal variable name, or a value holding a NUL byte (names the
            variable, never the value).
    """
    if warn is None:
        def warn(message: str) -> None:
            _stderr_line("warning", message)

    if pristine:
        env = {k: v for k, v in base_env.items() if k in PRISTINE_ALLOW or k.startswith("LC_")}
    else:
        env = dict(base_env)
    for name in (*DEFAULT_SCRUB, *scrub):
        env.pop(name, None)
    for var, value in secrets.items():
        if not _ENV_NAME.match(var):
            raise UsageError(f"{var!r} is not a valid variable name")
        raw = value.reveal() if isinstance(value, SecretValue) else bytes(value)
        if b"\0" in raw:
            raise UsageError(
                f"the value of {var} holds a NUL byte, which an environment variable cannot carry",
                hint="use --env-file-out or kms-cli inject to pass it as a file",
            )
        if var in env:
            if no_clobber:
                raise AlreadyExistsError(
                    f"variable {var} already exists in the environment",
                    hint="unset it, map the secret to another name (--secret NAME=OTHER), or drop --no-clobber",
                )
            warn(f"overwriting variable {var} from the environment")
        env[var] = os.fsdecode(raw)
    return env


# ---------------------------------------------------------------------------- commands


class _CommandError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_command(cmd: str, path: str | None) -> str:
    """The file ``execvp`` would run for `cmd`, searching `path` (the child's PATH) like a shell.

    Raises:
        _CommandError: 127 when nothing is found, 126 when only a non-executable file is.
    """
    if not cmd:
        raise _CommandError(127, "command not found: ''")
    if "/" in cmd:
        try:
            st = os.stat(cmd)
        except OSError:
            raise _CommandError(127, f"no such file or directory: {cmd}") from None
        if stat.S_ISDIR(st.st_mode):
            raise _CommandError(126, f"is a directory: {cmd}")
        if not os.access(cmd, os.X_OK):
            raise _CommandError(126, f"permission denied: {cmd}")
        return cmd
    denied = None
    for directory in (path if path is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", cmd)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        raise _CommandError(126, f"permission denied: {denied}")
    raise _CommandError(127, f"command not found: {cmd}")


def check_command(argv: list[str], path: str | None) -> None:
    """Raise what `run` would report for a CMD that cannot be started, as a KmsError.

    `exec` calls this before it reads any secret, inside its audited operation, so that the
    entry of a missing (127) or non-executable (126) CMD says "error", as the user sees it.

    Raises:
        CommandNotFoundError, CommandNotExecutableError: `argv[0]` resolved over `path`
            (the child's PATH) as `resolve_command` does.
    """
    from kms_cli.errors import CommandNotExecutableError, CommandNotFoundError

    if not argv:
        return
    try:
        resolve_command(argv[0], path)
    except _CommandError as exc:
        raise (CommandNotFoundError if exc.code == 127 else CommandNotExecutableError)(exc.message) from None


def _exec_error(cmd: str, exc: OSError) -> _CommandError:
    if exc.errno == errno.ENOENT:  # also a missing interpreter or loader, as bash reports it
        return _CommandError(127, f"cannot execute {cmd}: required file not found")
    return _CommandError(126, f"cannot execute {cmd}: {os.strerror(exc.errno or errno.EACCES).lower()}")


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# Set in a process the agent forked to run `exec` for a client: (argv, env, mask_values, env_file,
# dotenv_text) -> exit code, handing CMD to the client to start.
DELEGATE = None


def run(
    argv: list[str],
    env: Mapping[str, str],
    *,
    mask_values: list[bytes | SecretValue] | None = None,
    env_file: str | None = None,
    dotenv_text: str | None = None,
    report: Callable[[str], None] | None = None,
) -> int:
    """Run ``argv`` with environment `env`; return the exit code for kms-cli.

    Without `mask_values` and `env_file` this replaces the process (``os.execvpe``) and
    returns only if CMD cannot be started. Otherwise CMD runs as a supervised child (see
    the module docstring). `mask_values` (even an empty list) turns on masking of those
    values; `env_file` is a path to create, or an existing directory in which a private
    0700 directory is made, and receives `dotenv_text` (0600) for the child's lifetime,
    its absolute path exported as ``KMS_CLI_ENV_FILE``.

    A CMD that cannot be found is 127, one that cannot be executed 126, reported by
    ``report(message)`` (default: one ``kms-cli: error:`` line on stderr).

    Raises:
        UsageError: `argv` is empty, or the env file cannot be created where asked.
        AlreadyExistsError: the env file path already exists (never overwritten).
    """
    if not argv:
        raise UsageError("missing command to run", hint="kms-cli exec [OPTIONS] -- CMD [ARGS...]")
    if DELEGATE is not None:  # a command run by the agent: the client starts CMD (kms_cli/agent/child.py)
        return DELEGATE(argv, env, mask_values, env_file, dotenv_text)
    if report is None:
        def report(message: str) -> None:
            _stderr_line("error", message)

    try:
        path = resolve_command(argv[0], env.get("PATH"))
    except _CommandError as exc:
        report(exc.message)
        return exc.code
    if mask_values is None and env_file is None:
        return _exec(path, list(argv), dict(env), report)
    return _Supervisor(
        path, list(argv), dict(env),
        patterns=None if mask_values is None else mask_patterns(mask_values),
        env_file=env_file, dotenv_text=dotenv_text or "", report=report,
    ).run()


def _exec(path: str, argv: list[str], env: dict[str, str], report) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec,
    # and a program expects the default (`yes | head` must end `yes`).
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGPIPE, signal.SIGXFSZ)}
    try:
        os.execvpe(path, argv, env)
    except OSError as exc:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        error = _exec_error(argv[0], exc)
        report(error.message)
        return error.code
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- env file


def _write_env_file(target: str, text: str):
    """Create the env file; return its absolute path, a function that removes it, and its
    `leftovers` marker (or None), registered before any value is written."""
    from kms_cli import leftovers

    private_dir = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if os.path.isdir(target):
            private_dir = tempfile.mkdtemp(prefix="kms-cli-", dir=target)  # 0700
            path = os.path.join(private_dir, ".env")
        else:
            path = target
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise AlreadyExistsError(
            f"env file {target} already exists", hint="kms-cli never overwrites it; name a new file or a directory"
        ) from None
    except OSError as exc:
        if private_dir:
            os.rmdir(private_dir)
        raise UsageError(f"cannot create env file {target}: {os.strerror(exc.errno).lower()}") from None
    path = os.path.abspath(path)
    marker = None

    def remove() -> None:
        for fn, p in ((os.unlink, path), (os.rmdir, private_dir)):
            if p:
                try:
                    fn(p)
                except OSError:
                    pass
        if marker is not None:
            marker.release()

    try:
        marker = leftovers.register([(path, "file")] + ([(private_dir, "dir")] if private_dir else []))
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        remove()
        raise
    finally:
        os.close(fd)
    if marker is not None:
        marker.stamp(path)  # written to disk with the child's pid, by add_process
    return path, remove, marker


# ---------------------------------------------------------------------------- signals


class _Signals:
    """The forwarded signals and SIGCHLD, received as (signo, sent_by_kernel) pairs."""

    def __init__(self, extra: tuple[int, ...] = ()):
        self.SET = frozenset((*FORWARDED, signal.SIGCHLD, *extra))
        self.synchronous = hasattr(signal, "sigtimedwait")
        self._queue: list[tuple[int, bool]] = []
        self._handlers: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if self.synchronous:
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SET)
        else:  # pragma: no cover - platforms without sigtimedwait
            for sig in self.SET:
                self._handlers[sig] = signal.signal(sig, lambda s, _f: self._queue.append((s, False)))
        return self

    def wait(self, timeout: float) -> list[tuple[int, bool]]:
        """Signals received so far, waiting up to `timeout` seconds for the first one."""
        if self.synchronous:
            info = signal.sigtimedwait(self.SET, timeout)
            return [] if info is None else [(info.si_signo, info.si_code == _SI_KERNEL)] + self.pending()
        if not self._queue:  # pragma: no cover
            time.sleep(timeout)
        return self.pending()  # pragma: no cover

    def pending(self) -> list[tuple[int, bool]]:
        if self.synchronous:
            got = []
            while (info := signal.sigtimedwait(self.SET, 0)) is not None:
                got.append((info.si_signo, info.si_code == _SI_KERNEL))
            return got
        got, self._queue = self._queue, []  # pragma: no cover
        return got  # pragma: no cover

    def __exit__(self, *exc) -> None:
        if self.synchronous:
            # Signals that arrived after the child's end are dropped, not delivered to
            # kms-cli as it returns the child's code (a late SIGINT would otherwise
            # surface as KeyboardInterrupt in the caller).
            self.pending()
            main = threading.current_thread() is threading.main_thread()
            ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in self.SET} if main else {}
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            for sig, handler in ignored.items():
                signal.signal(sig, handler)
        else:  # pragma: no cover
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)


# ---------------------------------------------------------------------------- supervision


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


def _same_tty(fd_a: int, fd_b: int) -> bool:
    try:
        return os.isatty(fd_a) and os.isatty(fd_b) and os.ttyname(fd_a) == os.ttyname(fd_b)
    except OSError:
        return False


def _is_foreground(fd: int) -> bool:
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


class _Supervisor:
    def __init__(self, path, argv, env, *, patterns, env_file, dotenv_text, report):
        self.path, self.argv, self.env = path, argv, env
        self.patterns = patterns
        self.env_file, self.dotenv_text = env_file, dotenv_text
        self.report = report
        self.pid: int | None = None
        self.status: int | None = None
        self.use_pty = patterns is not None and os.isatty(1)
        # Keystrokes go through the child's pty when stdin is the same terminal and ours.
        self.proxy_stdin = self.use_pty and _same_tty(0, 1) and _is_foreground(0)
        self.own_session = self.proxy_stdin
        self.master: int | None = None
        self.saved_tty = None
        self.sources: dict[int, tuple[Masker, int]] = {}  # fd read -> (masker, fd written)
        self.to_child = bytearray()  # keystrokes waiting for the pty

    def run(self) -> int:
        for stream in (sys.stdout, sys.stderr):  # what the caller printed goes before the child's output
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        remove_env_file = env_marker = None
        # Signals stay blocked until everything is cleaned up: a SIGTERM now is for the
        # child, and must not stop kms-cli between the child's end and the env file's.
        # With keystrokes relayed, Ctrl-Z reaches kms-cli as SIGTSTP: handled, not obeyed.
        with _Signals((signal.SIGTSTP,) if self.proxy_stdin else ()) as signals:
            try:
                if self.env_file is not None:
                    path, remove_env_file, env_marker = _write_env_file(self.env_file, self.dotenv_text)
                    self.env[ENV_FILE_VAR] = path
                child_fds: list[int] = []
                try:
                    self._spawn(child_fds)
                except _CommandError as exc:
                    self.report(exc.message)
                    return exc.code
                finally:
                    for fd in child_fds:  # the child's ends of the pipes and the pty
                        os.close(fd)
                if env_marker is not None:  # the file is the child's too: stale only once it is gone
                    env_marker.add_process(self.pid)
                for sig, by_kernel in signals.pending():  # arrived while starting
                    self._on_signal(sig, by_kernel)
                self._loop(signals)
                return _exit_code(self.status)
            finally:
                self._restore_tty()
                for fd in list(self.sources):
                    self._close_source(fd, flush=True)
                if self.master is not None:
                    os.close(self.master)
                if remove_env_file is not None:
                    remove_env_file()

    # -- starting the child

    def _spawn(self, child_fds: list[int]) -> None:
        actions = []
        kwargs = {}
        if self.use_pty:
            self.master, slave = os.openpty()
            child_fds.append(slave)
            os.set_blocking(self.master, False)
            try:
                attrs = termios.tcgetattr(1)
                if not self.own_session:
                    # Our terminal still turns "\n" into "\r\n": the pty must not do it as well.
                    attrs[1] &= ~termios.OPOST
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            except OSError:
                pass
            self._sync_winsize()
            if self.own_session:
                # In a session of its own, the child opening the pty makes it its
                # controlling terminal (Linux): Ctrl-C, Ctrl-Z and /dev/tty work as usual.
                kwargs["setsid"] = True
                actions.append((os.POSIX_SPAWN_OPEN, 1, os.ttyname(slave), os.O_RDWR, 0))
                actions.append((os.POSIX_SPAWN_DUP2, 1, 0))
            else:
                # Input is not the terminal (or kms-cli runs in the background): the child
                # stays in kms-cli's process group, so job control and terminal signals
                # reach it as they would without kms-cli; the pty only carries its output.
                actions.append((os.POSIX_SPAWN_DUP2, slave, 1))
            self.sources[self.master] = (Masker(self.patterns), 1)
            if _same_tty(1, 2):
                actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
            else:
                self._pipe_output(2, actions, child_fds)
        elif self.patterns is not None:
            self._pipe_output(1, actions, child_fds)
            self._pipe_output(2, actions, child_fds)
        try:
            self.pid = os.posix_spawn(
                self.path, self.argv, self.env,
                file_actions=actions,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                **kwargs,
            )
        except OSError as exc:
            raise _exec_error(self.argv[0], exc) from None
        if self.proxy_stdin:
            self.saved_tty = termios.tcgetattr(0)
            self._set_raw()

    def _set_raw(self) -> None:
        """Raw mode on our terminal, except that Ctrl-Z still signals kms-cli (see _suspend).

        Every other key, Ctrl-C and Ctrl-\\ included, goes to the child's pty, whose own
        line discipline turns it into the child's signal or input.
        """
        try:
            tty.setraw(0, termios.TCSANOW)
            attrs = termios.tcgetattr(0)
            attrs[3] |= termios.ISIG
            for key in (termios.VINTR, termios.VQUIT):
                attrs[6][key] = b"\0"  # _POSIX_VDISABLE
            termios.tcsetattr(0, termios.TCSANOW, attrs)
        except OSError:
            pass

    def _pipe_output(self, target: int, actions: list, child_fds: list[int]) -> None:
        read_end, write_end = os.pipe()
        child_fds.append(write_end)
        actions.append((os.POSIX_SPAWN_DUP2, write_end, target))
        self.sources[read_end] = (Masker(self.patterns), target)

    def _sync_winsize(self) -> None:
        try:
            size = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)  # the kernel sends SIGWINCH
        except OSError:
            pass

    def _restore_tty(self) -> None:
        if self.saved_tty is not None:
            try:
                termios.tcsetattr(0, termios.TCSADRAIN, self.saved_tty)
            except OSError:
                pass

    # -- the loop

    def _loop(self, signals: _Signals) -> None:
        exited_at = None
        while True:
            self._reap()
            if self.status is not None:
                if not self.sources:
                    return
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > _GRACE:
                    return  # something the child started still holds its output open
            if not self.sources:
                for sig, by_kernel in signals.wait(1.0):
                    self._on_signal(sig, by_kernel)
                continue
            readers = list(self.sources)
            if self.proxy_stdin and len(self.to_child) < 65536:
                readers.append(0)
            writers = [self.master] if self.to_child and self.master is not None else []
            try:
                readable, writable, _ = select.select(readers, writers, [], _TICK)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
                readable, writable = [], []
            for fd in readable:
                if fd == 0:
                    self._read_stdin()
                elif fd in self.sources:
                    self._relay(fd)
            if writable and self.to_child:
                try:
                    del self.to_child[: os.write(self.master, self.to_child)]
                except BlockingIOError:
                    pass
                except OSError:
                    self.to_child.clear()
            for sig, by_kernel in signals.pending():
                self._on_signal(sig, by_kernel)

    def _reap(self) -> None:
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored by the caller)
            self.status = 0
            return
        if pid != 0:
            self.status = status

    def _suspend(self) -> None:
        """Ctrl-Z: stop the child's job and kms-cli, so the shell gets the terminal back; resume both on fg."""
        groups = {self.pid}
        try:
            groups.add(os.tcgetpgrp(self.master))  # the job in the child's terminal, if it runs one
        except OSError:
            pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGSTOP)
            except OSError:
                pass
        self._restore_tty()
        os.kill(os.getpid(), signal.SIGSTOP)
        # Continued (fg): take the terminal again and wake the child's job up.
        if _is_foreground(0):
            self._set_raw()
        self._sync_winsize()
        for group in groups:
            try:
                os.killpg(group, signal.SIGCONT)
            except OSError:
                pass

    def _on_signal(self, sig: int, by_kernel: bool) -> None:
        if sig == signal.SIGCHLD or self.status is not None:
            return
        if sig == signal.SIGTSTP:
            self._suspend()
            return
        if self.use_pty and sig == signal.SIGWINCH:
            self._sync_winsize()  # the kernel signals the pty's foreground group, if it has one
            if self.own_session:
                return
            by_kernel = False  # the child may have read the size before this resize: tell it again
        if by_kernel and not self.own_session:
            return  # the terminal signalled the whole process group: the child has it already
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _read_stdin(self) -> None:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if data:
            self.to_child += data
        else:
            self.proxy_stdin = False  # keep relaying output; the child sees no more input

    def _relay(self, fd: int) -> None:
        masker, target = self.sources[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if not data:
            self._close_source(fd, flush=True)
            return
        try:
            _write_all(target, masker.feed(data))
        except BrokenPipeError:
            # Our reader is gone: close the child's pipe too, so it sees EPIPE/SIGPIPE
            # just as it would have writing there directly.
            self._close_source(fd, flush=False)

    def _close_source(self, fd: int, *, flush: bool) -> None:
        masker, target = self.sources.pop(fd)
        if flush:
            try:
                _write_all(target, masker.flush())
            except OSError:
                pass
        if fd != self.master:
            os.close(fd)
