"""Fusion modes: which pattern-based fusion runs before TVM's stock FuseOps."""
from .errors import UserError

MODES = ("stock",)


def passes(mode: str) -> list:
    """The Relax passes of fusion `mode`; "stock" adds nothing (TVM's FuseOps alone)."""
    if mode not in MODES:
        raise UserError(f"unknown fusion mode '{mode}': choose one of {', '.join(MODES)}")
    return []
