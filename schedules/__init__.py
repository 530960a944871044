"""Schedule rules of this project for MetaSchedule: design spaces for kernels the generic rules handle poorly.

A block annotated `schedule_rule = "<name>"` is scheduled by the global function
`s_tir.meta_schedule.<target key>.<name>` instead of MetaSchedule's generic rules (ApplyCustomRule comes
first in the default CPU rule lists). `register()` registers the rules with TVM (it loads TVM, so importing
this package does not); `annotate_pass` marks the blocks and registers them too. Both run inside the
compiler's phase 1, so tuning and building see the same workloads. TOPI's pooling rules, which TVM leaves
unregistered for CPUs, are registered with them as the generic rules they fall back to (topi_rules.py).
"""
from . import dcac, topi_rules
from .dcac import PATTERN_OF_KERNEL, RULES, annotate_pass


def register() -> None:
    """The project's rules (schedules/dcac.py) and TOPI's pooling rules (schedules/topi_rules.py), with TVM."""
    dcac.register()
    topi_rules.register()


__all__ = ["PATTERN_OF_KERNEL", "RULES", "annotate_pass", "register"]
