"""Where rlft's own files live: the config groups and the shipped assets (datasets, policies, experts)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
# The wheel ships configs/ as rlft/configs; a source checkout keeps it at the repository root.
CONFIG_DIR = _PKG / "configs" if (_PKG / "configs").is_dir() else _PKG.parent / "configs"
ASSETS_DIR = _PKG / "assets"
DATASETS_DIR = ASSETS_DIR / "data"
POLICIES_DIR = ASSETS_DIR / "policies"
EXPERTS_DIR = ASSETS_DIR / "experts"
