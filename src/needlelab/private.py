"""Files and folders only their owner can read: recordings, exports and reports hold patient
data. Folders are created 0700 (every missing level, not only the last), files 0600."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents owner-only (0700); existing folders are left as
    they are."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a file owner-only (0600), its folder made with `private_dir`."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
