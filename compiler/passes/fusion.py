"""Fusion modes: which pattern-based fusion runs before TVM's stock FuseOps.

"stock" adds nothing (TVM's FuseOps alone). "dcac" first groups each DC-AC block's condensed branches and
its full-resolution epilogue with the patterns of compiler/passes/dcac_patterns.py (FuseOpsByPattern). Each group
becomes a Relax function marked Primitive; phase 1's LegalizeOps lowers the ops inside it to TIR and FuseTIR
merges them into ONE PrimFunc per group, while stock FuseOps handles everything the patterns left alone.
After FuseTIR, "dcac" also marks the blocks of those kernels with the project's MetaSchedule rules
(schedules/), so tuning searches their design space instead of the generic one. Those rules find their
kernels by pattern name, which `record_patterns` keeps for them: FuseTIR drops a group's `Composite` attribute.
"""
from typing import Optional

import schedules  # the DC-AC schedule rules: importing registers them with MetaSchedule
from compiler.errors import UserError
from schedules import PATTERN_OF_KERNEL

MODES = ("stock", "dcac")


def passes(mode: str, rejections: Optional[list] = None) -> list:
    """The Relax passes of fusion `mode`, run after FoldConstant and before LegalizeOps; pattern checks
    append why they rejected a match to `rejections` (for `--explain`)."""
    if mode not in MODES:
        raise UserError(f"unknown fusion mode '{mode}': choose one of {', '.join(MODES)}")
    if mode == "stock":
        return []
    from tvm import relax

    # Waits until needed: dcac_patterns loads TVM's pattern language, and a command refusing bad input must not.
    from compiler.passes import dcac_patterns

    # bind_constants=False: weights, biases and s become parameters of each group, as stock FuseOps does it;
    # FuseTIR rejects tensor constants inside a primitive function ("Tensor constants are not supported").
    return [relax.transform.FuseOpsByPattern(dcac_patterns.as_fusion_patterns(rejections), bind_constants=False,
                                             annotate_codegen=False),
            record_patterns()]


def record_patterns():
    """A module pass run right after FuseOpsByPattern: the pattern name of every group, kept in the module
    attribute PATTERN_OF_KERNEL, because FuseTIR drops the group's own `Composite` attribute."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="RecordFusionPatterns")
    def record(mod, _context):
        made = {gvar.name_hint: str(func.attrs["Composite"]) for gvar, func in mod.functions.items()
                if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs}
        return mod.with_attr(PATTERN_OF_KERNEL, made) if made else mod
    return record


def schedule_passes(mode: str) -> list:
    """Passes run after FuseTIR: mark blocks of the mode's kernels with the schedule rules of schedules/."""
    if mode != "dcac":
        return []
    return [schedules.annotate_pass()]
