"""The schedule rules TOPI's pooling kernels ask for, kept as MetaSchedule's generic rules.

TOPI annotates its pooling blocks `schedule_rule = "meta_schedule.pool_max"` (and `pool_avg`,
`adaptive_pool_max`, `adaptive_pool_avg`), but TVM 0.27 registers those rules for no CPU target key. MetaSchedule
then logs "Unknown schedule rule" with its list of checked functions, drops the annotation and schedules the
block with its generic rules. Each name registered here does exactly that, silently: the same design spaces
and the same traces (an `Unannotate` step) as before, so every database still replays, and a build prints
only the project's own lines.
"""
POOLING_RULES = ("meta_schedule.pool_max", "meta_schedule.pool_avg", "meta_schedule.adaptive_pool_max",
                 "meta_schedule.adaptive_pool_avg")
TARGET_KEY = "cpu"  # aarch64 targets have keys ("arm_cpu", "cpu"): one registration covers both


def generic_rules(sch, block) -> list:
    """What MetaSchedule does for a rule it cannot find: drop the annotation, leave the block to the generic rules."""
    sch.unannotate(block, "schedule_rule")
    return [sch]


def register() -> None:
    """Register each pooling rule TVM itself leaves unregistered for CPU targets (TVM's own, should it gain one,
    is kept)."""
    import tvm

    for name in POOLING_RULES:
        function_name = f"s_tir.meta_schedule.{TARGET_KEY}.{name}"
        if tvm.get_global_func(function_name, allow_missing=True) is None:
            tvm.register_global_func(function_name, generic_rules)
