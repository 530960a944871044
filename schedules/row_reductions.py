"""The schedule of a kernel that reduces rows: a layer norm, a softmax, a mean over an image's pixels.

Such a kernel reduces the innermost, contiguous axes of its input (a token's channels, a channel's pixels), each
element read once, and then writes the rows back normalised or divided. MetaSchedule's design spaces for it
(with no tiled block to plan) leave each reduction a serial chain of scalar adds, one per element at the add's
latency, and split the output's fused loop into vectors that cross rows, so each lane recomputes its row and
channel with a division and a modulo and gathers its row's statistics: on 2 threads a layer norm over 40 channels
ran at 2.02x ONNX Runtime's time and a mean over 56x56 pixels at 3.12x; with this schedule 0.23x and 0.25x
(bench/results/row-reductions-znver4.md).

Here every row is one parallel job that does all the kernel's steps in turn: each reduction is split into
vector partial sums (up to four vectors of lanes, `rfactor`), then summed across the partial sums, and the
row's output is written in vectors along the row. The row statistics stay in registers; no index is divided.
A row that no partial sums divide (197 tokens) is summed in whole vectors and a partial last one, each step in
a row-parallel loop of its own (_separate_stages).
Kernels whose reductions read any element twice (products, convolutions: the tiled plans take those) or reduce
an axis that is not innermost are left to the generic schedules.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

MIN_ROW = 8  # shorter rows: a scalar chain costs about what a vector's horizontal sum does


def _iter_kinds(block) -> list:
    from tvm.tirx import IterVar

    return [iv.iter_type == IterVar.CommReduce for iv in block.iter_vars]


def _reduces_rows(block) -> Optional[int]:
    """The reduction's row length when `block` reduces the trailing axes of every buffer it reads with them,
    each element once; else None."""
    from tvm.tirx import Var

    kinds = _iter_kinds(block)
    if not any(kinds) or kinds != sorted(kinds):  # reduction iterators after all spatial ones
        return None
    spatial = [iv for iv, r in zip(block.iter_vars, kinds) if not r]
    reduction = [iv for iv, r in zip(block.iter_vars, kinds) if r]
    reduced = {iv.var for iv in reduction}
    rows = math.prod(int(iv.dom.extent) for iv in spatial)
    length = math.prod(int(iv.dom.extent) for iv in reduction)
    reads_rows = False
    for region in block.reads:
        indices = [r.min for r in region.region]
        used = [any(_uses(i, v) for v in reduced) for i in indices]
        if not any(used):
            continue
        leading = len(indices) - len(reduction)  # the row's own indices, before the reduced ones
        if (leading < 0 or not all(isinstance(i, Var) and i.same_as(iv.var)
                                   for i, iv in zip(indices[leading:], reduction))
                or any(used[:leading])
                or math.prod(int(d) for d in region.source.shape) != rows * length):
            return None
        reads_rows = True
    return length if reads_rows else None


def _uses(expr, var) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr))


def _partial_sums(length: int, lanes: int) -> Optional[int]:
    """Lanes of the partial sums of a row of `length`, a divisor of it: up to four whole vectors, else half or a
    quarter of one, else any divisor of at least 4 lanes that leaves two steps; None when none does."""
    for width in (4 * lanes, 2 * lanes, lanes, lanes // 2, lanes // 4):
        if width >= 4 and length % width == 0 and length // width >= 2:
            return width
    odd = [d for d in range(4, lanes + 1) if length % d == 0 and length // d >= 2]
    return max(odd) if odd else None


def _lanes_then_vectors(sch, loops, width: int) -> tuple:
    """The partial sums' two loops under the row as compute_at regenerates them (the block's iterators in order:
    rfactor puts the new lanes axis first, the loop over whole vectors last): (lanes loop, vectors loop)."""
    if len(loops) != 2:
        raise ValueError(f"expected the lanes and vectors loops under the row, found {len(loops)} loops")
    first, second = loops
    if int(sch.get(first).extent) != width and int(sch.get(second).extent) == width:
        return second, first
    return first, second


def _vectorise_tail(sch, loops, lanes: int) -> None:
    if not loops:
        return
    inner = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = int(sch.get(inner).extent)
    if extent <= 1:
        return
    if extent > 4 * lanes:
        inner = sch.split(inner, [None, 4 * lanes])[1]
    sch.vectorize(inner)


def _leading_loops(sch, loops, rows: int) -> Optional[int]:
    """How many leading loops cover exactly `rows` iterations (None when no prefix does)."""
    covered = 1
    for k, loop in enumerate(loops):
        covered *= int(sch.get(loop).extent)
        if covered == rows:
            return k + 1
        if covered > rows:
            return None
    return None


def _separate_stages(sch, blocks, reduces, row_axes: int, rows: int, lanes: int) -> None:
    """Rows that no partial sums divide (197 tokens): whole vectors of partial sums and a partial last one. The
    partial one's condition is a block predicate, which compute_at drops (it would read past the row), so every
    step keeps its own loop nest, parallel over the rows: a few more parallel launches per call, each step in
    vectors."""
    for block, reducing in zip(blocks, reduces):
        loops = list(sch.get_loops(block))
        if not reducing:
            leading = _leading_loops(sch, loops, rows)
            if leading is None:
                raise ValueError("a step whose leading loops do not run over the rows")
            sch.parallel(sch.fuse(*loops[:leading]) if leading > 1 else loops[0])
            _vectorise_tail(sch, list(sch.get_loops(block))[1:], lanes)
            continue
        if row_axes > 1:
            sch.fuse(*loops[:row_axes])
        reduction = loops[row_axes:]
        fused = sch.fuse(*reduction) if len(reduction) > 1 else reduction[0]
        inner = sch.split(fused, [None, lanes])[1]
        partial = sch.rfactor(inner, factor_axis=len(sch.get(block).writes[0].source.shape))
        _, vectors_loop, lanes_loop = sch.get_loops(partial)  # rfactor keeps the order: row, vectors, lanes
        sch.parallel(sch.get_loops(partial)[0])
        sch.vectorize(lanes_loop)
        init = sch.decompose_reduction(partial, vectors_loop)
        sch.vectorize(list(sch.get_loops(init))[-1])
        sch.parallel(sch.get_loops(block)[0])


def schedule(mod, lanes: int) -> Optional[Tuple[object, str]]:
    """(tvm.s_tir.Schedule, note) for a row-reducing task, None for any other or when a step does not apply."""
    import tvm

    sch = tvm.s_tir.Schedule(mod)
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    if len(blocks) < 2:
        return None
    steps = [sch.get(block) for block in blocks]
    reduces = [any(_iter_kinds(step)) for step in steps]
    if reduces[-1] or not any(reduces):
        return None
    lengths, spatial_counts, row_counts = [], set(), set()
    for step, reducing in zip(steps[:-1], reduces):
        if reducing:
            length = _reduces_rows(step)
            if length is None or length < MIN_ROW:
                return None
            lengths.append(length)
            spatial = [int(iv.dom.extent) for iv, r in zip(step.iter_vars, _iter_kinds(step)) if not r]
            spatial_counts.add(len(spatial))
            row_counts.add(math.prod(spatial))
    if len(spatial_counts) != 1 or len(row_counts) != 1:
        return None
    row_axes = spatial_counts.pop()
    row_count = row_counts.pop()
    if any(_partial_sums(length, lanes) is None for length in lengths):
        if min(lengths) < 2 * lanes:
            return None  # a scalar chain per row: the generic schedule's vectors over rows do better
        try:
            _separate_stages(sch, blocks, reduces, row_axes, row_count, lanes)
        except Exception:  # noqa: BLE001 - a step that does not fit the pattern: the generic schedules take it
            return None
        return sch, (f"row reductions: {len(lengths)} of rows of {lengths[0]}, each step its own parallel loop, "
                     f"partial sums of [{lanes}] lanes, the last vector partial")
    try:
        out_loops = sch.get_loops(blocks[-1])
        # the output's leading loops that run over the rows: the same count as the reductions' rows (a mean
        # kept as (1, C, 1, 1) scales a (1, C, H, W) map: its rows are the output's first two loops)
        out_axes = _leading_loops(sch, out_loops, row_count)
        if out_axes is None:
            return None
        rows = sch.fuse(*out_loops[:out_axes]) if out_axes > 1 else out_loops[0]
        _vectorise_tail(sch, list(sch.get_loops(blocks[-1]))[1:], lanes)
        widths, partials = [], []
        for block, step, reducing in reversed(list(zip(blocks[:-1], steps, reduces))):
            if not reducing:
                sch.compute_at(block, rows)
                _vectorise_tail(sch, list(sch.get_loops(block))[1:], lanes)
                continue
            reduction_loops = list(sch.get_loops(block))[row_axes:]
            fused = sch.fuse(*reduction_loops) if len(reduction_loops) > 1 else reduction_loops[0]
            width = _partial_sums(int(sch.get(fused).extent), lanes)
            if width is None:
                return None  # a scalar chain per row: the generic schedule's vectors over rows do better
            widths.append(width)
            inner = sch.split(fused, [None, width])[1]
            partial = sch.rfactor(inner, factor_axis=len(step.writes[0].source.shape))
            sch.compute_at(block, rows)
            sch.compute_at(partial, rows)
            lanes_loop, vectors_loop = _lanes_then_vectors(sch, list(sch.get_loops(partial))[1:], width)
            sch.reorder(vectors_loop, lanes_loop)
            sch.vectorize(lanes_loop)
            partials.append((partial, vectors_loop))
        sch.parallel(rows)
        # last: vectorize and parallel want every block under them a reduction with its init or a complete block
        for partial, vectors_loop in partials:
            init = sch.decompose_reduction(partial, vectors_loop)
            init_lanes = list(sch.get_loops(init))[-1]
            if str(sch.get(init_lanes).kind) != str(sch.get(list(sch.get_loops(partial))[-1]).kind):
                sch.vectorize(init_lanes)
    except Exception:  # noqa: BLE001 - a step that does not fit the pattern: the generic schedules take it
        return None
    return sch, f"row reductions: {len(lengths)} of rows of {lengths[0]}, partial sums of {sorted(set(widths))} lanes"
