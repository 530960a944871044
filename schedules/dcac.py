"""Design space for the low-resolution convolutions inside a fused DC-AC kernel.

A DC-AC kernel (fusion mode "dcac") holds four small convolutions at a quarter of the block's
resolution (e.g. 176 -> 24 channels at 7x7), a max-pool and a full-resolution epilogue: sixteen blocks in
one PrimFunc. MetaSchedule's generic multi-level tiling searches an SSRSRS tiling and a compute
location for each of the four convolutions jointly; with a few dozen trials per task it rarely gets
near a good point. These convolutions are tiny (under 0.5 MFLOP each), so a small space suffices: tile
the output channels (the one sampled decision, mutated by the search), run channel tiles in parallel,
keep the reduction inside, and vectorise along the output row. Everything else in the kernel (pads,
bias, activation, resizes, epilogue) stays with the generic rules, except that each convolution's input
(the pooled tensor, the activation between the two convolutions of a branch) is computed once into its
own buffer: inlined into the convolution it would be recomputed for every output channel that reads it,
a sigmoid per multiply-add.
"""
from typing import Dict

# Which blocks of which kernels get which rule: (pattern name, block name prefixes) -> rule name. A kernel is
# found by the row of compiler/passes/dcac_patterns.TABLE that fused it (the fusion step records it in the module
# attribute PATTERN_OF_KERNEL), never by its name; adding a pattern with a rule is one row in
# each table. The two patterns with the max-pool condensation inside hold the four low-resolution convolutions.
LOWRES_CONVS = ("conv2d_nchw", "group_conv2d_nchw")  # the convolution blocks LegalizeOps writes
RULES: Dict[tuple, str] = {
    ("dcac.max_pool2d_2x_conv2d_add_act_conv2d_add_resize2d_sigmoid_multiply_multiply_add", LOWRES_CONVS):
        "dcac.lowres_conv",
    ("dcac.max_pool2d_conv2d_add_act_conv2d_add", LOWRES_CONVS): "dcac.lowres_conv",
}
PATTERN_OF_KERNEL = "pattern_of_kernel"  # module attribute the fusion step writes: {kernel: pattern row}
INPUT_RULE = "dcac.materialize"  # for the blocks that produce an annotated convolution's (padded) input
TARGET_KEYS = ("cpu",)  # aarch64 targets have keys ("arm_cpu", "cpu"): one registration covers both


def lowres_conv(sch, block) -> list:
    """Two spaces for an NCHW convolution block: vectorise along the output row, or along the whole plane."""
    spaces = []
    for whole_plane in (False, True):
        space = sch.copy()
        n, channel, row, col, *reduction = space.get_loops(block)
        outer, inner = space.split(channel, factors=space.sample_perfect_tile(channel, n=2, max_innermost_factor=16))
        if whole_plane:
            plane = space.fuse(row, col)
            space.reorder(n, outer, inner, *reduction, plane)
            space.vectorize(plane)
        else:
            space.reorder(n, outer, row, inner, *reduction, col)
            space.vectorize(col)
        space.parallel(space.fuse(n, outer))
        spaces.append(space)
    return spaces


def materialize(sch, block) -> list:
    """Leave the block where it is (not inlined); the root's parallel/vectorise annotation still applies."""
    return [sch]


FUNCTIONS = {"dcac.lowres_conv": lowres_conv, INPUT_RULE: materialize}


def register() -> None:
    import tvm

    for name, function in FUNCTIONS.items():
        for key in TARGET_KEYS:
            tvm.register_global_func(f"s_tir.meta_schedule.{key}.{name}", function, override=True)


def _input_producers(sch, block) -> list:
    """The blocks computing a convolution's input, looking through its padding block."""
    found = []
    for producer in sch.get_producers(block):
        if sch.get(producer).name_hint.startswith("pad_temp"):
            found.extend(sch.get_producers(producer))
        else:
            found.append(producer)
    return found


def annotate_pass():
    """A module pass (after FuseTIR) that marks the blocks of RULES with their schedule rule, in the kernels
    the fusion step says their pattern made; registers the rules, which tuning the marked blocks needs."""
    import tvm
    from tvm import s_tir

    register()

    @tvm.transform.module_pass(opt_level=0, name="AnnotateScheduleRules")
    def annotate(mod, _context):
        made_by = mod.attrs.get(PATTERN_OF_KERNEL, {}) if mod.attrs else {}
        updates = {}
        for gvar, func in mod.functions.items():
            pattern = made_by.get(gvar.name_hint)
            rules = [(blocks, rule) for (name, blocks), rule in RULES.items() if name == pattern]
            if not rules or not isinstance(func, tvm.tirx.PrimFunc):
                continue
            sch = s_tir.Schedule(tvm.IRModule({"main": func}))
            for block in sch.get_child_blocks(sch.get_sblock("root")):
                for block_prefixes, rule in rules:
                    if sch.get(block).name_hint.startswith(block_prefixes):
                        sch.annotate(block, "schedule_rule", rule)
                        for source in _input_producers(sch, block):
                            sch.annotate(source, "schedule_rule", INPUT_RULE)
            updates[gvar] = sch.mod["main"]
        if not updates:
            return mod
        mod = mod.clone()
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod
    return annotate
