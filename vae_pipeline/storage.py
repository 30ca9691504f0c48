"""The output folder's storage: creating the folder, and what a failed write to it means.

A write that fails because of the storage itself (a full disk, a quota, a read-only or failing file system) would
fail every window after it too, and it is no fault of the window or its frames: it stops the run with
``OutputError``, one line naming the file and the error, and the CLI exits with 2. The windows finished before
are kept, and the same command continues the run once the storage is fixed. Any failed write to the run state
stops the run the same way; other failed writes of one window (a name the file system refuses) fail only that
window.

No torch here: CPU worker processes raise ``OutputError`` from the finish stage.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

# Errors of the storage rather than of one file: the next write would fail the same way.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})

_WHAT_TO_DO = {
    errno.ENOSPC: "free space on that disk or choose another --output-dir",
    errno.EDQUOT: "free space within your disk quota or choose another --output-dir",
    errno.EROFS: "that file system is read-only: choose another --output-dir",
    errno.EIO: "the storage reports an I/O error: check that disk, or choose another --output-dir",
    errno.EACCES: "no permission to write there: choose another --output-dir, or make it writable",
    errno.EPERM: "no permission to write there: choose another --output-dir, or make it writable",
    errno.ENOTDIR: "part of that path is a file, not a folder: choose another --output-dir",
    errno.EEXIST: "a file of that name is in the way: choose another --output-dir",
}
_OTHERWISE = "choose another --output-dir"


class OutputError(OSError):
    """The output folder (or its run state) cannot be created or written; the message is one line for the user."""


def describe_write_failure(exc: OSError, path: Path | str | None = None) -> str:
    """One line: the file (``path``, else the one the error names), the error with its errno name, what to do."""
    where = path if path is not None else exc.filename if exc.filename is not None else "the output folder"
    name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    reason = f"{exc.strerror or exc}" + (f" ({name})" if name else "")
    return f"cannot write {where}: {reason}; {_WHAT_TO_DO.get(exc.errno, _OTHERWISE)}"


@contextlib.contextmanager
def writing(path: Path | str | None = None, *, any_error: bool = False) -> Iterator[None]:
    """Writes to the output folder: an ``OSError`` of the storage (``STORAGE_ERRNOS``; with ``any_error``, any
    ``OSError``) becomes ``OutputError`` naming ``path`` (else the file the error names). Other errors pass.

    Also a decorator, for methods whose every write is to the output folder.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if any_error or exc.errno in STORAGE_ERRNOS:
            raise OutputError(describe_write_failure(exc, path)) from exc
        raise


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder and prove that it takes a file, before any work is spent.

    The probe holds a byte, not nothing: an empty file needs no free space on most file systems, so only a write
    finds a full disk. If the folder cannot be used, the folders this call created are removed again.
    """
    path = Path(path)
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise OutputError(describe_write_failure(exc, path)) from None
    return path
