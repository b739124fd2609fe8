"""Output paths checked before the work that fills them is done, so a wrong ``--out``/``--csv``/``--png``
costs one line, not a traceback after minutes of computing."""

from __future__ import annotations

import os
from pathlib import Path

from alignbench.errors import AlignbenchError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_creatable(path: Path, option: str) -> None:
    """The missing directories above ``path`` can be created: the nearest existing one is a writable directory."""
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise AlignbenchError(f"{option} {path}: {ancestor} is a file, not a directory; give a path in a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AlignbenchError(f"{option} {path}: directory {ancestor} is not writable by you; give another path")


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` can be written as a file (its missing directories created); AlignbenchError otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AlignbenchError(f"{option} {path} is a directory; give a file path")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise AlignbenchError(f"{option} {path} is not writable by you; give another path")
        return path
    _check_creatable(path, option)
    return path


def check_output_dir(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` is, or can be created as, a writable directory; AlignbenchError otherwise."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AlignbenchError(f"{option} {path} is a file; give a directory (it is created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise AlignbenchError(f"{option} {path} is not writable by you; give another directory")
        return path
    _check_creatable(path, option)
    return path
