"""Where big reusable things live (emulated device, aarch64 wheels): outside the clone, shared by runs."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """~/.cache/dcac-compiler, or $DCAC_CACHE_DIR; created on first use."""
    root = os.environ.get("DCAC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcac-compiler")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
