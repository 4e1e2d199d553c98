"""Where rlft's own files live: the config groups and the shipped assets (datasets, policies, experts)."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent
# The wheel ships configs/ as rlft/configs; a source checkout keeps it at the repository root.
CONFIG_DIR = _PKG / "configs" if (_PKG / "configs").is_dir() else _PKG.parent / "configs"
ASSETS_DIR = _PKG / "assets"
DATASETS_DIR = ASSETS_DIR / "data"
POLICIES_DIR = ASSETS_DIR / "policies"
EXPERTS_DIR = ASSETS_DIR / "experts"


def is_bare_name(path: str | Path) -> bool:
    """Whether ``path`` is a plain name without a folder (``hopper-v5-medium``): only such names may mean a
    shipped asset; a path with a separator means that path and nothing else."""
    text = str(path)
    return not any(sep and sep in text for sep in ("/", os.sep, os.altsep))
