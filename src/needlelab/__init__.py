"""needlelab: acquisition workstation for instrumented dry-needling and e-stim sessions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("needlelab")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
