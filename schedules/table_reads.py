"""The schedule of a kernel that reads a lookup table (compiler/passes/lookup_tables.py).

A table read is a gather: no CPU here loads 16 bytes from 16 computed addresses, so a vectorised loop over it
moves each lane in and out of a vector register, and MetaSchedule's injective schedule (every loop fused into
one, split into vectors) adds a division and a modulo per element for each axis a transpose or a padding
reindexes. For an integer kernel that reads a table through a transpose (a product's rows going back to
NCHW after their sigmoid or SiLU table), every step is inlined into the block writing the output, whose
loops stay as they are: all but the innermost fused into parallel jobs, the innermost a plain loop whose
indices LLVM strength-reduces (compare the two with `--count-instructions --per-kernel` on an int8 AttendNeXt).
"""
from typing import Optional, Tuple

LOOKUP = "lookup"  # the table read's block (compiler/passes/lookup_tables.py names it)
TRANSPOSE = "T_transpose"  # the blocks of TVM's transposes (topi names them)


def schedule(mod) -> Optional[Tuple[object, str]]:
    """(tvm.s_tir.Schedule, note) for a task that reads a table through a transpose, on integers only; None for
    any other (the generic schedules take it: a float step vectorises well beside the gather, and a table read
    along contiguous rows costs no index arithmetic), or when its steps do not all inline into one output."""
    import tvm

    sch = tvm.s_tir.Schedule(mod)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    steps = [sch.get(block) for block in blocks]
    if (not any(step.name_hint.startswith(TRANSPOSE) for step in steps)
            or any(str(write.source.dtype).startswith("float") for step in steps for write in step.writes)):
        return None
    try:
        for block in reversed(blocks[:-1]):
            sch.compute_inline(block)
    except Exception:  # noqa: BLE001 - a reduction or a second output: not a pure gather kernel
        return None
    output = blocks[-1]
    loops = sch.get_loops(output)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    return sch, f"table read, {len(loops)} loops, {len(blocks)} steps inlined"
