"""The one way localscore writes a file: bytes go to a temporary file next to the target, which is fsynced, renamed
onto the target, and whose folder is fsynced, so a file either is complete under its name or is not there. A whole
file is one call (`write_file`); a growing output is a `Sink` on `OUT.partial`, committed onto `OUT` at the end.
A failed write is one OutputError line (a full disk its own), a reader that went away OutputClosed; `OutputLock`
keeps a second run off an output that one is writing."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import sqlite3
import sys
from pathlib import Path

from ..errors import LocalscoreError, OutputClosed, OutputError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# SQLite's primary result codes for a write the file system refused, as the errno write_error maps.
_SQLITE_ERRNO = {13: errno.ENOSPC, 8: errno.EACCES, 3: errno.EACCES}  # SQLITE_FULL, SQLITE_READONLY, SQLITE_PERM
LOCK_SUFFIX = ".lock"
_CHUNK = 1 << 20


def write_error(name: object, error: OSError, *, resumable: bool = False,
                advice: str | None = None) -> LocalscoreError:
    """The one line for a write to `name` that failed with `error`. A full disk says to free some space and what
    to do then: `advice` when given, else rerun, with `resume` when the output is `resumable`."""
    if error.errno == errno.EPIPE:
        return OutputClosed(f"the reader of {name} went away")
    if error.errno in DISK_FULL:
        if advice is not None:
            return OutputError(f"disk full writing {name}; free some space, then {advice}")
        if resumable:
            return OutputError(f"disk full writing {name}; free some space, then rerun with {{resume}} to continue",
                               options=["resume"])
        return OutputError(f"disk full writing {name}; free some space and rerun")
    return OutputError(f"cannot write {error.filename or name}: {error.strerror}")


def database_write_error(name: object, error: sqlite3.DatabaseError, *, advice: str) -> LocalscoreError:
    """write_error for a write SQLite made: its result code says what the file system refused."""
    number = _SQLITE_ERRNO.get(getattr(error, "sqlite_errorcode", 0) & 0xFF)
    if number is None:
        return OutputError(f"cannot write {name}: {error}")
    return write_error(name, OSError(number, os.strerror(number)), advice=advice)


class Sink:
    """An open output file descriptor (or stdout) as a minimal binary file. Every byte goes through `write`, so a
    reader that went away and a full disk each become one error, wherever they happen. `resumable`: whether a
    full disk can be continued with `resume`, or `advice`: what to do then (see write_error)."""

    def __init__(self, name: str, fd: int | None, *, resumable: bool, advice: str | None = None):
        self.name = name
        self._fd = fd  # None: sys.stdout, whatever it is at write time (tests swap it)
        self._resumable = resumable
        self._advice = advice
        self._position = 0
        self.closed = False

    @classmethod
    def open(cls, path: Path, flags: int, *, resumable: bool, advice: str | None = None) -> Sink:
        try:
            fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as e:
            raise write_error(path, e, resumable=resumable, advice=advice) from None
        return cls(str(path), fd, resumable=resumable, advice=advice)

    @classmethod
    def stdout(cls) -> Sink:
        return cls("stdout", None, resumable=False)

    def write(self, data: bytes) -> int:
        try:
            if self._fd is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as e:
            raise self._error(e) from None
        self._position += len(data)
        return len(data)

    def write_at(self, offset: int, data: bytes) -> None:
        """Overwrite `data` at `offset` of the file (a header completed at the end), leaving the position."""
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as e:
            raise self._error(e) from None

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes (what a resumed run keeps)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            raise self._error(e) from None

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Everything is written through at once; this is for file-like callers (pyarrow)."""

    def sync(self) -> None:
        """Make what was written durable (fsync), for a regular file."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise self._error(e) from None

    def commit(self, path: Path) -> None:
        """The stream is complete: fsync it, close it, and rename it onto `path` durably."""
        self.sync()
        self.close()
        publish(Path(self.name), path)

    def close(self) -> None:
        if not self.closed and self._fd is not None:
            os.close(self._fd)
        self.closed = True

    def _error(self, error: OSError) -> LocalscoreError:
        return write_error(self.name, error, resumable=self._resumable, advice=self._advice)


def write_file(path: str | os.PathLike, data: bytes, *, resumable: bool = False) -> None:
    """Write the whole file `path` durably: a temporary file next to it, fsynced, renamed onto it. `resumable`:
    it is part of an output that resuming continues (a full disk says so)."""
    sink = _temporary(Path(path), resumable)
    try:
        sink.write(data)
        sink.commit(Path(path))
    except BaseException:
        _discard(sink)
        raise


def copy_file(source: Path, destination: Path) -> None:
    """Copy `source` onto `destination` durably, a chunk at a time."""
    sink = _temporary(destination, False)
    try:
        with open(source, "rb") as f:
            while chunk := f.read(_CHUNK):
                sink.write(chunk)
        sink.commit(destination)
    except OSError as e:
        _discard(sink)
        raise OutputError(f"cannot read {source}: {e.strerror}") from None
    except BaseException:
        _discard(sink)
        raise


def publish_written(partial: Path, path: Path) -> None:
    """Publish a file that a library wrote whole from its path (gguf-py's GGUFWriter, llama.cpp's quantizer):
    fsync it, then rename it onto `path` durably."""
    try:
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise write_error(partial, e) from None
    publish(partial, path)


def publish(partial: Path, path: Path) -> None:
    """Rename the complete, fsynced `partial` onto `path` durably."""
    try:
        os.replace(partial, path)
        fsync_folder(path.parent)
    except OSError as e:
        raise write_error(path, e) from None


def fsync_folder(folder: Path) -> None:
    # The rename is only durable once the folder entry is on disk; Windows cannot open a folder to fsync it.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path, resumable: bool) -> Sink:
    """A new file next to `path`, with the permissions a plain new file gets (tempfile's would be 0600)."""
    name = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    return Sink.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, resumable=resumable)


def _discard(sink: Sink) -> None:
    sink.close()
    Path(sink.name).unlink(missing_ok=True)


class OutputLock:
    """An exclusive lock on the output `path`, held by this process from `acquire` to `release`: the file
    `path.lock` next to it, flock-ed and naming its holder (pid, host), removed on release. A second run that
    wants the same output gets one line naming the holder, before touching anything."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; outputs are not guarded there
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:  # named as the output, which is what the user gave
                raise write_error(self._output, OSError(e.errno, e.strerror)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip()
                os.close(fd)
                raise OutputError(f"{self._output} is being written by another run"
                                  f"{f' ({holder})' if holder else ''}; wait for it to finish, or give another output"
                                  ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder removed the file between our open and our lock: take the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    @property
    def _output(self) -> str:
        return str(self.path)[:-len(LOCK_SUFFIX)]

    def release(self) -> None:
        if self._fd is None:
            return
        Path(self.path).unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
