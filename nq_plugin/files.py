"""Writing files so that an interrupted command never leaves a half-written file behind, and
hashing them: every file the plugin writes goes to a temporary name in the same folder and is
renamed into place (``os.replace`` is atomic on one file system)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from typing import Iterator, Optional

from .errors import UserError


class OutputError(UserError):
    """Writing an output failed (no space, no permission, ...); the message names the path and
    what it needs."""


def write_error(err: OSError, path: str, needed: Optional[int] = None) -> OutputError:
    """One line for an OS error while writing ``path``: the reason and, for a full disk, the
    space needed beside the space free."""
    where = os.path.abspath(path)
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        probe = where if os.path.exists(where) else os.path.dirname(where)
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            free = None
        need = f"about {needed / 1e6:.1f} MB" if needed else "more space"
        have = f", {free / 1e6:.1f} MB are free there" if free is not None else ""
        message = (f"cannot write {where}: {reason} (it needs {need}{have}); free some space "
                   "or choose a folder on another disk")
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message = f"cannot write {where}: {reason}; choose a folder you can write to"
    else:
        message = f"cannot write {where}: {reason}"
    out = OutputError(message)
    out.os_errno, out.path = err.errno, where
    return out


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(path: str) -> None:
    """Give a temporary file or folder (``tempfile`` makes them private: 0600 / 0700) the mode
    a plain ``open`` or ``mkdir`` would have, so that what is renamed into place is readable as
    the user's other files are."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def temporary_folder(parent: str, prefix: str) -> str:
    """A new folder in ``parent`` (for building what is renamed into place), with the usual
    mode."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    usual_mode(tmp)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error
    removed (``path`` itself is never partly written)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_copy(src: str, dst: str) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a new temporary folder beside ``path``; on success it is renamed to ``path``
    (which must not exist, or be empty), on error removed."""
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"{path} exists and is not empty; choose a new folder")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = temporary_folder(parent, "." + os.path.basename(os.path.abspath(path)) + ".")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(path):
        os.rmdir(path)
    os.replace(tmp, path)
