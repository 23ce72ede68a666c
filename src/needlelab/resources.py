"""Where shipped data live: driver profiles and example configs, installed or in a source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE.parent.parent  # src/needlelab -> repository root in a source checkout


def _shipped(installed: str, source: str) -> Path:
    # A wheel carries the folders inside the package; an editable install points at the repo.
    inside = _PACKAGE / installed
    return inside if inside.is_dir() else _SOURCE_ROOT / source


def drivers_dir() -> Path:
    """The folder of shipped device driver profiles (TOML)."""
    return _shipped("_drivers", "drivers")


def configs_dir() -> Path:
    """The folder of shipped session configs (`demo.toml`, protocols/)."""
    return _shipped("_configs", "configs")
