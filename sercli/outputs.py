"""Writing output files the way a careful Unix tool does: torch-free, shared by every command.

A regular file (or a new path) is written to a temporary file beside it, flushed to disk and
renamed over the target, so a crash or a power cut leaves the old file or the new one, never
half of one. A symlink is followed and its target replaced the same way, so the link stays a
link. Anything that is not a regular file (a FIFO, /dev/null, /dev/stdout, a terminal, a
socket) is written straight through: renaming over it would replace the device or the pipe
its reader waits on. New files get 0666 & ~umask, as `>` in a shell gives them; a replaced file
keeps its mode (and, where we may, its owner).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO


class OutputError(OSError):
    """An output path that cannot be written; str() is one line naming the path and the cause."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask sets it to read it, which
    would race with threads that create files meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


DESCRIPTOR_FOLDERS = ("/dev/", "/proc/")  # /dev/stdout, /dev/fd/N, /proc/self/fd/N: the process's own


def resolve_target(path: str | os.PathLike) -> Path:
    """The path that is really written: a symlink's final target (even if that does not exist
    yet, as `echo > link` creates it), otherwise the path itself. /dev and /proc names are kept
    as given: /dev/stdout leads to whatever the shell redirected, which is the shell's to keep."""
    path = Path(path)
    if os.path.abspath(path).startswith(DESCRIPTOR_FOLDERS):
        return path
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _is_regular_or_new(target: Path) -> bool:
    if os.path.abspath(target).startswith(DESCRIPTOR_FOLDERS):
        return False  # written straight through, even when the descriptor is a regular file
    try:
        return stat.S_ISREG(os.stat(target).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return True


def _fail(target: Path, code: int, cause: str | None = None) -> OutputError:
    return OutputError(code, cause or os.strerror(code), str(target))


def check_writable(path: str | os.PathLike) -> None:
    """Raise OutputError unless an output could be written at `path` now: its folder exists and
    takes new files (a probe file is created and removed: permissions, read-only mounts and
    ACLs all show), it is not a folder, and a non-regular target such as a FIFO is writable."""
    target = resolve_target(path)
    if target.is_dir():
        raise _fail(target, errno.EISDIR, "is a folder, not a file")
    if not _is_regular_or_new(target):
        if not target.exists():
            raise _fail(target, errno.ENOENT)
        if not os.access(target, os.W_OK):
            raise _fail(target, errno.EACCES)
        return
    folder = target.parent
    if not folder.exists():
        raise _fail(target, errno.ENOENT, f"no such folder: {folder}")
    if not folder.is_dir():
        raise _fail(target, errno.ENOTDIR, f"{folder} is not a folder")
    _probe(folder, target)
    if target.exists() and not os.access(target, os.W_OK):
        raise _fail(target, errno.EACCES)  # we could replace it, but `>` would be refused too


def check_folder(folder: str | os.PathLike) -> None:
    """Raise OutputError unless `folder` takes new files, or could be created where it is
    missing; nothing is created (a probe file comes and goes in the nearest existing folder)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: the folder it names cannot be made here
            raise _fail(folder, errno.ENOENT, f"{existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file, not a folder" if existing == folder else f"{existing} is a file, not a folder"
        raise _fail(folder, errno.ENOTDIR, what)
    _probe(existing, folder)


def _probe(folder: Path, named: Path) -> None:
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".sercli.", suffix=".probe")
    except OSError as exc:
        raise _fail(named, exc.errno or errno.EACCES, exc.strerror) from None
    os.close(handle)
    os.unlink(probe)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some file systems do not open folders; the rename itself has happened
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class OutputFile:
    """An output opened for writing at `path`; `commit()` makes it appear, `discard()` drops it.

    Text mode (UTF-8, newlines as written) unless binary=True. Parent folders are created
    when make_parents is set (--output-dir trees, training runs); otherwise a missing folder
    is an error, as it is for `>` in a shell. Use as a context manager to discard on error.
    """

    def __init__(self, path: str | os.PathLike, binary: bool = False, make_parents: bool = False) -> None:
        self.path = Path(path)
        self.target = resolve_target(self.path)
        if self.target.is_dir():
            raise _fail(self.target, errno.EISDIR, "is a folder, not a file")
        self.temp: Path | None = None
        mode = "wb" if binary else "w"
        # A file name in another encoding is written as its own bytes, as `ls` prints it.
        text = {} if binary else {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
        if not _is_regular_or_new(self.target):
            self.handle: IO = open(self.target, mode, **text)  # a pipe, a device: straight through
            return
        if make_parents:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".part")
        self.temp = Path(temp)
        try:
            self._copy_permissions(descriptor)
            self.handle = os.fdopen(descriptor, mode, **text)
        except BaseException:
            os.close(descriptor)
            self.temp.unlink(missing_ok=True)
            raise

    def _copy_permissions(self, descriptor: int) -> None:
        try:
            old = os.stat(self.target)
        except FileNotFoundError:
            os.fchmod(descriptor, 0o666 & ~current_umask())
            return
        os.fchmod(descriptor, stat.S_IMODE(old.st_mode))
        if hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(descriptor, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # only root may give a file away; it then belongs to whoever replaced it

    def commit(self) -> None:
        """Flush and close; a regular file is synced to disk and renamed over the target."""
        if self.handle.closed:
            return
        self.handle.flush()
        if self.temp is None:
            self.handle.close()
            return
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.target)
        self.temp = None
        _fsync_folder(self.target.parent)

    def discard(self) -> None:
        """Close without replacing anything; the temporary file, if any, is removed."""
        if not self.handle.closed:
            try:
                self.handle.close()
            except OSError:
                pass  # disk full on the last flush: the file goes anyway
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None

    def __enter__(self) -> "OutputFile":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_bytes(path: str | os.PathLike, data: bytes, make_parents: bool = True) -> None:
    """Write `data` to `path` as an OutputFile does: whole or not at all, links and devices kept."""
    with OutputFile(path, binary=True, make_parents=make_parents) as out:
        out.handle.write(data)
