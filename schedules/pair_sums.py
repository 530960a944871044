"""The schedules of an int8 product written as pair sums (compiler/passes/dot_products.py), on Arm CPUs without
sdot, and of the window copies (im2col) that feed a convolution's windows to it.

One parallel job computes R rows x NN output channels. For every 16 bytes of the reduction it loads R
activation vectors and NN weight vectors once and calls the pair-sums intrinsic (smull, smlal2, sadalp:
schedules/intrinsics.py) for each row and channel, into R x NN accumulators that stay in registers; then it
adds each accumulator's 4 lanes and runs the requantization fused after the product on its R x NN outputs,
vectorised along the channels. R x NN is the largest tile whose accumulators, operands and two temporaries
fit the vector registers; XNNPACK's Cortex-A72 int8 GEMMs use the same plan (2 x 8, 16 bytes per step).
R divides the innermost row axis, so a job's rows are one rectangle the requantization is placed under.
"""
from typing import Optional, Tuple

from schedules.intrinsics import LANE_TOTALS, PAIR_LANES as LANES, PAIR_SUMS

BLOCK, TOTAL = "pair_sums", "pair_total"  # the partial sums' block and the block adding each output's four
WINDOWS, WINDOW = "windows", "window"  # the window copy's block and its annotation [Cg, KH, KW]
TEMPORARIES = 2  # the 16-bit product sums in flight
MAX_ROWS, MAX_CHANNELS = 8, 16


def has_block(mod, name: str) -> bool:
    """Whether the task has a block named `name` (the pass names the blocks it writes: BLOCK, WINDOWS)."""
    import tvm

    try:
        tvm.s_tir.Schedule(mod).get_sblock(name)
    except Exception:  # noqa: BLE001 - no such block
        return False
    return True


def register_tile(rows: int, channels: int, registers: int) -> Tuple[int, int]:
    """(R, NN): the most multiply-adds per 16 bytes of reduction, then the fewest loads per multiply-add, among
    the tiles whose R x NN accumulators, R activations, NN weights and the temporaries fit `registers`."""
    best: Optional[tuple] = None
    for r in (d for d in range(1, min(rows, MAX_ROWS) + 1) if rows % d == 0):
        for n in (d for d in range(1, min(channels, MAX_CHANNELS) + 1) if channels % d == 0):
            if r * n + r + n + TEMPORARIES > registers:
                continue
            key = (r * n, -(r + n))
            if best is None or key > best[0]:
                best = (key, (r, n))
    return best[1]


def schedule(mod, registers: int):
    """(tvm.s_tir.Schedule, note) for a task with a pair-sums block."""
    import tvm

    sch = tvm.s_tir.Schedule(mod)
    sums = sch.get_sblock(BLOCK)
    total = sch.get_sblock(TOTAL)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(block).name_hint for block in blocks]
    output = blocks[-1]
    for block in blocks[names.index(TOTAL) + 1:-1]:  # the requantization, into the block writing the output
        sch.compute_inline(block)
    *row_loops, channel, lane, kb, r = sch.get_loops(sums)
    extent = [int(sch.get(loop).extent) for loop in (*row_loops, channel)]
    rows, nn = register_tile(extent[-2], extent[-1], registers)
    row_outer, row_inner = sch.split(row_loops[-1], [None, rows])
    channel_outer, channel_inner = sch.split(channel, [None, nn])
    sch.reorder(*row_loops[:-1], row_outer, channel_outer, kb, row_inner, channel_inner, lane, r)
    job = sch.fuse(*row_loops[:-1], row_outer, channel_outer)
    sch.parallel(job)
    sch.unroll(row_inner)
    sch.unroll(channel_inner)
    sch.reverse_compute_at(total, job)
    if names[-1] != TOTAL:  # the requantization, vectorised along the channels
        sch.reverse_compute_at(output, job)
        sch.vectorize(sch.get_loops(output)[-1])
    *_, total_channel, total_lane = sch.get_loops(total)
    if nn % LANES == 0:  # each 4 accumulators' lanes added into one vector of totals (three addp)
        quad, channel_in_quad = sch.split(total_channel, [None, LANES])
        total_init = sch.decompose_reduction(total, channel_in_quad)
        sch.vectorize(sch.get_loops(total_init)[-1])
        sch.tensorize(channel_in_quad, LANE_TOTALS)
    else:
        sch.reorder(total_lane, total_channel)
        sch.vectorize(total_channel)
    init = sch.decompose_reduction(sums, kb)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane, PAIR_SUMS)
    return sch, f"pair sums {rows}x{nn} par={int(sch.get(job).extent)}"


def schedule_windows(mod):
    """(tvm.s_tir.Schedule, note): the zero tail of every row (if any) in 16-byte stores, then the windows copied with
    the row index split into (channel, ky, kx), so no element divides its index; rows of (group, y) in parallel."""
    import tvm

    sch = tvm.s_tir.Schedule(mod)
    block = sch.get_sblock(WINDOWS)
    per_group, kh, kw = (int(v) for v in sch.get(block).annotations[WINDOW])
    group, y, col, k = sch.get_loops(block)
    padded = int(sch.get(k).extent) > per_group * kh * kw
    job = sch.fuse(group, y)
    sch.parallel(job)
    if padded:
        fill = sch.decompose_padding(block, col)
        fill_col, fill_k = sch.get_loops(fill)[-2:]
        sch.vectorize(sch.split(sch.fuse(fill_col, fill_k), [None, 16])[1])
    k = sch.get_loops(block)[-1]
    _, ky, kx = sch.split(k, [per_group, kh, kw])
    sch.unroll(ky)
    sch.unroll(kx)
    return sch, f"windows {per_group}x{kh}x{kw} par={int(sch.get(job).extent)}"
