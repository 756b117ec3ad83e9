"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

import json
import os
from pathlib import Path
from typing import Any, Union

# The worker's exclusive temp file (the worker imports nothing of nexa): tempfile would add
# shutil, bz2, lzma and random to the start-up of every command that writes.
from .worker import create_exclusive

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write_text(path: PathLike, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_bytes(path: PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_exclusive(str(path.parent), f".{path.name}", mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path: PathLike, data: Any, indent: Union[int, None] = 2) -> Path:
    """Serialise ``data`` as UTF-8 JSON and write it atomically."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")
