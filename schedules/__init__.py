"""Schedule rules of this project for MetaSchedule: design spaces for kernels the generic rules handle poorly.

A block annotated `schedule_rule = "<name>"` is scheduled by the global function
`s_tir.meta_schedule.<target key>.<name>` instead of MetaSchedule's generic rules (ApplyCustomRule comes
first in the default CPU rule lists). Importing this package registers the rules; `annotate_pass` marks
the blocks. Both run inside the compiler's phase 1, so tuning and building see the same workloads.
"""
from .dcac import RULES, annotate_pass, register

register()

__all__ = ["RULES", "annotate_pass", "register"]
