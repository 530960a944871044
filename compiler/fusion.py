"""Fusion modes: which pattern-based fusion runs before TVM's stock FuseOps.

"stock" adds nothing (TVM's FuseOps alone). "dcac" first groups each DC-AC block's condensed branches and
its full-resolution epilogue with the patterns of compiler/dcac_patterns.py (FuseOpsByPattern). Each group
becomes a Relax function marked Primitive; phase 1's LegalizeOps lowers the ops inside it to TIR and FuseTIR
merges them into ONE PrimFunc per group, while stock FuseOps handles everything the patterns left alone.
After FuseTIR, "dcac" also marks the blocks of those kernels with the project's MetaSchedule rules
(schedules/), so tuning searches their design space instead of the generic one.
"""
from typing import Optional

from .errors import UserError

MODES = ("stock", "dcac")


def passes(mode: str, rejections: Optional[list] = None) -> list:
    """The Relax passes of fusion `mode`, run after FoldConstant and before LegalizeOps; pattern checks
    append why they rejected a match to `rejections` (for `--explain`)."""
    if mode not in MODES:
        raise UserError(f"unknown fusion mode '{mode}': choose one of {', '.join(MODES)}")
    if mode == "stock":
        return []
    from tvm import relax

    from . import dcac_patterns

    # bind_constants=False: weights, biases and s become parameters of each group, as stock FuseOps does it;
    # FuseTIR rejects tensor constants inside a primitive function ("Tensor constants are not supported").
    return [relax.transform.FuseOpsByPattern(dcac_patterns.as_fusion_patterns(rejections), bind_constants=False,
                                             annotate_codegen=False)]


def schedule_passes(mode: str) -> list:
    """Passes run after FuseTIR: mark blocks of the mode's kernels with the schedule rules of schedules/."""
    if mode != "dcac":
        return []
    import schedules  # registers the rules with MetaSchedule

    return [schedules.annotate_pass()]
