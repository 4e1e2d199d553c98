"""Atomic file writes: every file rlft writes appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from rlft.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary directory with ``write(tmp_dir)``, then rename it onto ``path`` (replacing it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        for f in tmp.rglob("*"):  # some writers (safetensors) create 0600 files
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def refuse_overwrite(path: str | Path, force: bool, how: str) -> None:
    """A ConfigError if ``path`` exists and ``force`` is off: nothing a user made is replaced by accident.
    ``how``: how to say force on this command (``--force``, ``force=true``)."""
    if Path(path).exists() and not force:
        raise ConfigError(f"{path} already exists; choose another output or add {how} to replace it")


def remove_leftovers(folder: str | Path, pattern: str) -> None:
    """Remove the temporary files and folders that an interrupted :func:`atomic_write` / :func:`atomic_write_dir`
    left in ``folder`` for targets named like ``pattern`` (a glob, ``step_*``)."""
    for leftover in Path(folder).glob(f".{pattern}.*.tmp") if Path(folder).is_dir() else []:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
