"""The files that are ours alone: the data folder (0700), the SQLite database and the secret key (0600).

Made with these modes, and an existing one with wider permissions is tightened: it holds card-code
hashes, encrypted codes and the key that opens them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
# permissions for anyone but the owner
_OTHERS = 0o077


def private_folder(path: Path) -> None:
    """Make `path` a folder only its owner can enter (its missing parents too), or tighten it."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    tighten(path)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists; an existing one loses its group and
    other permissions (a read-only file stays read-only). The folder it is in is made 0700 if absent."""
    if not path.parent.is_dir():
        # a folder we make ourselves; an existing one may be the user's own, so it is left as it is
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    # O_RDONLY: an existing read-only file must not make this fail (the caller reports it read-only)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    tighten_file(path)


def tighten_file(path: Path) -> None:
    """`tighten` for a file that may be read-only: one whose mode we may not change (immutable, on a
    read-only mount, someone else's) is not ours to write either, which the write check reports."""
    try:
        tighten(path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
            raise


def tighten(path: Path) -> None:
    """Take the group's and others' permissions off `path`; nothing if it does not exist."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & _OTHERS:
        os.chmod(path, mode & ~_OTHERS)
