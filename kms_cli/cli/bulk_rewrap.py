"""`rewrap --in-place PATH... [--recursive] [--dry-run]`: rewrap many ciphertext files where they are.

For each file whose key has a newer primary version, only the header changes (`vault.bulk` does
the key part, as `rewrap` does for one stream); the payload is copied unchanged, never decrypted.
Each file is replaced atomically: a temporary file in the same directory (new header, then the
payload copied in the kernel with copy_file_range, which clones extents where the file system
can, e.g. XFS and Btrfs reflinks), its mode and owner set to the original's, fsync, rename over
the original; the directory is fsynced once per batch. So a run costs per file: an open, one read
of the header, the key work, a create, a copy of the payload by the kernel, an fsync and a rename.
No cryptography touches a payload. Armored files are rewrapped and stay armored: their payload is
decoded and encoded again on the way (base64, no decryption), so they cost in proportion to their size.

Files already current, files that are not this vault's ciphertexts (another format, another vault,
a key outside the namespace) and anything that is not a regular file are counted and left alone.
A file that fails (the header's wrapped key fails authentication, its key version is revoked, the
file changed while it was being rewritten, its owner cannot be kept) is counted, named on stderr
and left untouched; any failure makes the exit code non-zero, 5 when one failed authentication.

Symlinks: a path given on the command line is followed (a file named through a symlink is replaced
at its real path, the link stays); symlinks met while walking a directory are never followed,
to a file or a directory, and are counted as skipped. Hard links: the file is replaced by a new
one, so another name of the same file keeps the old (still valid) ciphertext until it is rewrapped
in turn. Only the mode and the owner are kept, not ACLs or extended attributes.

Interruption: the temporary files of a batch are registered with `leftovers` before any byte is
written to them (SIGINT/SIGTERM remove them on the way out, the next command after a SIGKILL), and
an original is only ever replaced by a complete, fsynced file: every file is at any moment either
its old ciphertext or its new one, and a second run rewraps what the first did not reach.

Audit: `vault.bulk` commits the entries of a batch (one per key and version rewrapped, with the
number of files; one per failure) before any file of that batch is replaced.
"""

from __future__ import annotations

import os
import stat

from kms_cli import armor
from kms_cli.errors import IntegrityError, KmsError, NotFoundError, StateError, UsageError
from kms_cli.wording import plural

BATCH = 256  # files per audit entry / leftovers marker / directory fsync
_HEADER_READ = 16384  # one read holds any header (at most ~12.6 KiB)
_TMP_PREFIX, _TMP_SUFFIX = ".kms-cli-", ".tmp"


class _Counts:
    __slots__ = ("rewrapped", "current", "skipped", "failed", "errors")

    def __init__(self):
        self.rewrapped = self.current = self.skipped = self.failed = 0
        self.errors: list[KmsError] = []

    def as_dict(self) -> dict:
        return {"rewrapped": self.rewrapped, "current": self.current, "skipped": self.skipped,
                "failed": self.failed}


class _File:
    __slots__ = ("path", "size", "f", "stream", "st", "armored", "header", "header_len")

    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self.f = self.stream = self.st = self.header = None
        self.armored = False
        self.header_len = 0

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = self.stream = None


def _check_args(paths: list[str], recursive: bool, input, output) -> None:  # noqa: A002
    if input not in (None, "-") or output not in (None, "-"):
        raise UsageError("--in-place rewrites the files given: it takes no -i or -o",
                         hint="kms-cli rewrap --in-place [-r] PATH...  (or rewrap -i IN -o OUT for one stream)")
    if not paths:
        raise UsageError("rewrap --in-place needs at least one PATH")


def _collect(ctx, paths: list[str], recursive: bool, counts: _Counts) -> list[tuple[str, int]]:
    """Every regular file to look at, (path, size), in a stable order; nothing is opened yet.
    Every PATH is checked before anything else happens (exit 3 / 2 before any work)."""
    tops = []
    for p in paths:
        try:
            st = os.stat(p)  # a path given on the command line is followed
        except FileNotFoundError:
            raise NotFoundError(f"no such file or directory: {p}") from None
        except PermissionError:
            raise UsageError(f"permission denied: {p}") from None
        if stat.S_ISDIR(st.st_mode) and not recursive:
            raise UsageError(f"{p} is a directory", hint="add --recursive (-r) to rewrap every file under it")
        tops.append((p, st))
    files: list[tuple[str, int]] = []
    seen: set[str] = set()

    def add(path: str, size: int) -> None:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            files.append((path, size))

    for p, st in tops:
        if stat.S_ISREG(st.st_mode):
            add(os.path.realpath(p), st.st_size)
        elif stat.S_ISDIR(st.st_mode):
            _walk(ctx, p, add, counts)
        else:
            counts.skipped += 1  # a device, FIFO or socket
    return files


def _walk(ctx, top: str, add, counts: _Counts) -> None:
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            counts.failed += 1
            counts.errors.append(UsageError(f"cannot read directory {d}: {exc.strerror or exc}"))
            ctx.warn(f"{d}: cannot read the directory ({exc.strerror or exc})")
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_symlink():
                    counts.skipped += 1  # never followed inside a tree
                elif e.is_dir(follow_symlinks=False):
                    subdirs.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    if e.name.startswith(_TMP_PREFIX) and e.name.endswith(_TMP_SUFFIX):
                        continue  # a temporary file of a kms-cli command (running, or swept next)
                    add(e.path, e.stat(follow_symlinks=False).st_size)
                else:
                    counts.skipped += 1
            except OSError:
                counts.skipped += 1  # vanished meanwhile
        stack.extend(reversed(subdirs))


def _open(item: _File) -> None:
    """Open `item` and read its header (None when it is not a kms-cli ciphertext)."""
    from kms_cli.vault import bulk

    try:
        fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return  # vanished, a symlink now, unreadable: skipped
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        os.set_blocking(fd, True)
        item.f = open(fd, "rb", buffering=_HEADER_READ)
    except OSError:
        os.close(fd)
        return
    item.st = st
    try:
        item.stream = armor.open_input(item.f)
    except (IntegrityError, ValueError, OSError):
        item.close()  # "-----BEGIN" of something else (PEM, PGP): not ours
        return
    item.armored = isinstance(getattr(item.stream, "raw", None), armor.ArmorReader)
    try:
        item.header = bulk.read_header(item.stream)
    except (ValueError, OSError):
        item.header = None
    if item.header is None:
        item.close()
        return
    if not item.armored:  # armored: the payload is read on from the decoding stream
        item.header_len = item.stream.tell()


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int, advance) -> None:
    """`count` bytes of `src_fd` from `offset` to `dst_fd`'s position, by the kernel where it can."""
    done = 0
    step = 1 << 26  # 64 MiB per call, so the bar moves on a large file
    use = "copy_file_range" if hasattr(os, "copy_file_range") else "sendfile"
    while done < count:
        n = min(step, count - done)
        try:
            if use == "copy_file_range":
                got = os.copy_file_range(src_fd, dst_fd, n, offset + done)
            elif use == "sendfile":
                got = os.sendfile(dst_fd, src_fd, offset + done, n)
            else:
                data = os.pread(src_fd, min(n, 1 << 20), offset + done)
                got = len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(dst_fd, view):]
        except OSError as exc:
            import errno

            if use != "pread" and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                                errno.ENOTSUP):
                use = "sendfile" if use == "copy_file_range" else "pread"
                continue
            raise
        if got == 0:
            raise _Changed("the file shrank while it was being rewrapped")
        done += got
        advance(got)


class _Changed(Exception):
    """The file changed under the command (exit 6 when nothing worse failed): run it again."""


def _write_new(item: _File, fd: int, new_header: bytes, advance) -> None:
    """The new file: `new_header`, then the payload unchanged (armored files stay armored)."""
    if item.armored:
        with open(os.dup(fd), "wb", buffering=1 << 20) as out:
            w = armor.ArmorWriter(out)
            w.write(new_header)
            while True:
                chunk = item.stream.read(1 << 20)
                if not chunk:
                    break
                w.write(chunk)
            w.finish()
        advance(item.st.st_size)
        return
    view = memoryview(new_header)
    while view:
        view = view[os.write(fd, view):]
    _crash_hook("payload")
    _copy_range(item.f.fileno(), fd, item.header_len, item.st.st_size - item.header_len, advance)


def _keep_mode_and_owner(fd: int, st) -> None:
    mine = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (mine.st_uid, mine.st_gid):
        try:
            os.fchown(fd, st.st_uid, st.st_gid)  # before the mode: a chown clears set-id bits
        except PermissionError:
            raise UsageError("cannot keep the file's owner and group (not permitted): left as it was") from None
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def _unchanged(item: _File) -> bool:
    """Whether `item.path` is still the very file read, unmodified since."""
    try:
        now = os.lstat(item.path)
        cur = os.fstat(item.f.fileno())
    except OSError:
        return False
    before = item.st
    return ((now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)
            and (cur.st_size, cur.st_mtime_ns, cur.st_ctime_ns) == (before.st_size, before.st_mtime_ns,
                                                                    before.st_ctime_ns))


_crash = {"at": None, "renamed": 0}


def _crash_hook(step: str) -> None:
    """KMS_CLI_TEST_CRASH_AT=rewrap:N: a test-only hook, harmless unless set: the process SIGKILLs
    itself once N files were replaced, half-way through writing the next one (its header written,
    its payload not)."""
    at = _crash["at"]
    if at is not None and step == "payload" and _crash["renamed"] >= at:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _fail(ctx, counts: _Counts, item: _File, exc: KmsError) -> None:
    counts.failed += 1
    counts.errors.append(exc)
    ctx.warn(f"{item.path}: {exc.message}")


def _replace_batch(ctx, items: list[tuple[_File, bytes]], counts: _Counts, advance) -> None:
    """Write each file's replacement beside it and rename it over the original, atomically."""
    import tempfile

    from kms_cli import leftovers

    with leftovers.guard():
        temps: list[str | None] = []
        fds: list[int | None] = []
        marker = None
        try:
            for item, _ in items:  # created empty, registered before any byte is written
                try:
                    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX,
                                               dir=os.path.dirname(item.path) or ".")
                except OSError as exc:
                    _fail(ctx, counts, item, _os_failure(exc, os.path.dirname(item.path) or "."))
                    advance(item.size)
                    fd = tmp = None
                temps.append(tmp)
                fds.append(fd)
            marker = leftovers.register([(t, "file") for t in temps if t is not None])
            dirs = set()
            for k, (item, new_header) in enumerate(items):
                tmp, fd = temps[k], fds[k]
                if tmp is None:
                    continue
                try:
                    try:
                        _write_new(item, fd, new_header, advance)
                        _keep_mode_and_owner(fd, item.st)
                        os.fsync(fd)
                    finally:
                        fds[k] = None
                        os.close(fd)
                    if not _unchanged(item):
                        raise _Changed("the file changed while it was being rewrapped: left as it is now")
                    os.rename(tmp, item.path)
                except (_Changed, KmsError, OSError) as exc:
                    if isinstance(exc, KmsError):
                        err = exc
                    elif isinstance(exc, _Changed):
                        err = StateError(str(exc))
                    else:
                        err = _os_failure(exc, item.path)
                    _unlink(tmp)
                    temps[k] = None
                    _fail(ctx, counts, item, err)
                    continue
                temps[k] = None
                _crash["renamed"] += 1
                try:  # the temporary file's leftovers tag, now on the real file
                    os.removexattr(item.path, "user.kms-cli", follow_symlinks=False)
                except (OSError, AttributeError):
                    pass
                counts.rewrapped += 1
                dirs.add(os.path.dirname(item.path) or ".")
            for d in dirs:  # the renames durable
                try:
                    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
                except OSError:
                    pass
        finally:
            with leftovers.deferred():
                for fd in fds:
                    if fd is not None:
                        os.close(fd)
                for tmp in temps:
                    if tmp is not None:
                        _unlink(tmp)
                if marker is not None:
                    marker.release()


def _os_failure(exc: OSError, where: str) -> KmsError:
    from kms_cli.cli.entry import os_error

    if exc.filename is None:
        exc.filename = where
    return os_error(exc) or KmsError(f"could not rewrite {where}: {exc.strerror or exc}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _run_batch(ctx, vault, batch: list[_File], counts: _Counts, dry_run: bool, advance) -> None:
    from kms_cli.vault import bulk

    try:
        for item in batch:
            _open(item)
        opened = [item for item in batch if item.header is not None]
        for item in batch:
            if item.header is None:
                counts.skipped += 1
                advance(item.size)
        if not opened:
            return
        outcomes = bulk.rewrap_headers(vault, [item.header for item in opened], dry_run=dry_run)
        todo = []
        for item, oc in zip(opened, outcomes):
            if oc.status == bulk.STALE:
                if dry_run:
                    counts.rewrapped += 1
                    advance(item.size)
                else:
                    todo.append((item, oc.new_header))
                continue
            if oc.status == bulk.CURRENT:
                counts.current += 1
            elif oc.status == bulk.SKIPPED:
                counts.skipped += 1
            else:
                _fail(ctx, counts, item, oc.error)
            advance(item.size)
        if todo:
            _replace_batch(ctx, todo, counts, advance)
    finally:
        for item in batch:
            item.close()


def rewrap_in_place(ctx, paths, *, recursive=False, dry_run=False, input=None, output=None) -> int:  # noqa: A002
    from kms_cli.cli.progress import progress

    paths = list(paths or [])
    _check_args(paths, recursive, input, output)
    crash = ctx.environ.get("KMS_CLI_TEST_CRASH_AT", "")
    if crash.startswith("rewrap:") and crash[7:].isdigit():
        _crash["at"] = int(crash[7:])
    counts = _Counts()
    files = _collect(ctx, paths, recursive, counts)
    total = sum(size for _, size in files)
    with ctx.vault() as vault, \
            progress(ctx, total, "checking" if dry_run else "rewrapping") as bar:
        for start in range(0, len(files), BATCH):
            batch = [_File(p, size) for p, size in files[start:start + BATCH]]
            _run_batch(ctx, vault, batch, counts, dry_run, bar)
    _report(ctx, counts, dry_run)
    if counts.failed:
        integrity = sum(isinstance(e, IntegrityError) for e in counts.errors)
        what = plural(counts.failed, "file")
        if integrity:
            raise IntegrityError(f"{plural(integrity, 'file')} failed authentication"
                                 + (f" ({what} failed in all)" if integrity != counts.failed else "")
                                 + (", left untouched" if not dry_run else ""))
        first = counts.errors[0]
        err = type(first)(f"{what} could not be rewrapped (the first: {first.message})")
        err.hint = first.hint
        raise err
    return 0


def _report(ctx, counts: _Counts, dry_run: bool) -> None:
    if ctx.json:
        ctx.emit_json(counts.as_dict())
        return
    lead = (f"would rewrap {plural(counts.rewrapped, 'file')}" if dry_run
            else f"rewrapped {plural(counts.rewrapped, 'file')}")
    ctx.info(f"{lead}; {counts.current} already current, {counts.skipped} skipped "
             f"(not this vault's ciphertexts), {counts.failed} failed")
