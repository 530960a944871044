"""Fusion modes: which pattern-based fusion runs before TVM's stock FuseOps.

"stock" adds nothing (TVM's FuseOps alone). "dcac" first groups each DC-AC block's condensed branches and
its full-resolution epilogue with the patterns of compiler/dcac_patterns.py (FuseOpsByPattern). Each group
becomes a Relax function marked Primitive; phase 1's LegalizeOps lowers the ops inside it to TIR and FuseTIR
merges them into ONE PrimFunc per group, while stock FuseOps handles everything the patterns left alone.
"""
from .errors import UserError

MODES = ("stock", "dcac")


def passes(mode: str) -> list:
    """The Relax passes of fusion `mode`, run after FoldConstant and before LegalizeOps."""
    if mode not in MODES:
        raise UserError(f"unknown fusion mode '{mode}': choose one of {', '.join(MODES)}")
    if mode == "stock":
        return []
    from tvm import relax

    from . import dcac_patterns

    # bind_constants=False: weights, biases and s become parameters of each group, as stock FuseOps does it;
    # FuseTIR rejects tensor constants inside a primitive function ("Tensor constants are not supported").
    return [relax.transform.FuseOpsByPattern(dcac_patterns.as_fusion_patterns(), bind_constants=False,
                                             annotate_codegen=False)]
