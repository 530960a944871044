"""Padded products: a matrix product whose rows or columns no good tile divides is computed on a padded domain.

A vision transformer's 197 tokens are a prime: the tile plans (schedules/tile_plans.py) take only divisors, so a
dense layer over 197 rows got a register tile of one row (two accumulators where the registers hold 28), and the
attention scores' 197 columns no vector at all (one lane of sixteen). TVM's `pad_einsum` pads the block's
iteration domain to a multiple of a chosen factor: the operands it pads are copied once into zero-filled
buffers and the padded rows are dropped on the way out, so the numerics are those of the unpadded product.

The factors are chosen with the tile plans themselves: each candidate padding (at most MAX_WASTE more work along
an axis) is planned as the default schedule would plan it, scored by the share of the register tile's work
that is multiply-adds on full vectors, and kept only when it beats the unpadded plan by MIN_GAIN. Only plain
products take part (every index a loop variable: convolutions' windows are not); integer products keep their
own schedules.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

MAX_WASTE = 1 / 16  # at most this much more work along a padded axis
MIN_GAIN = 1.1  # the padded plan's score over the unpadded one's, to pay for the operand copies
MAX_FACTOR = 32  # padding factors tried: 2 .. MAX_FACTOR (the plans' vector and register tiles)


def _product_block(sch):
    """The one float32 reduction block of the kernel (its product), or None."""
    from tvm.tirx import IterVar

    found = None
    for block_rv in sch.get_child_blocks(sch.get_sblock("root")):
        block = sch.get(block_rv)
        if any(iv.iter_type == IterVar.CommReduce for iv in block.iter_vars):
            if found is not None:
                return None  # two reductions (a layer norm's statistics, say): not a plain product
            found = block_rv
    if found is None or any(str(w.source.dtype) != "float32" for w in sch.get(found).writes):
        return None
    return found


def _innermost_iterator(block) -> Optional[int]:
    """The iterator that indexes the written buffer's innermost dimension (alone), or None."""
    from tvm.tirx import Var

    last = block.writes[0].region[-1].min
    for i, iv in enumerate(block.iter_vars):
        if isinstance(last, Var) and last.same_as(iv.var):
            return i
    return None


def _weight_iterators(sch, block) -> set:
    """Iterators that index a constant weight (a layout-free buffer): padding one would copy the weights on
    every call, where the prepacked build folds them once (a 1000-class head padded to 1008 ran 20x slower)."""
    from schedules.tile_plans import _layout_free_buffers, _vars_in

    weights = _layout_free_buffers(sch.mod["main"])
    used = set()
    for region in block.reads:
        if str(region.source.name) in weights:
            used |= {name for r in region.region for name in _vars_in(r.min)}
    return {i for i, iv in enumerate(block.iter_vars) if str(iv.var.name) in used}


def _score(plan, kinds: List[bool], lanes: int) -> float:
    """Share of one register-tile step that is multiply-adds on full vectors: lane use times FMAs over FMAs
    plus the step's loads (one broadcast per register row, one vector per vector of the tile)."""
    if plan is None:
        return 0.0
    spatial = [tile for tile, reduces in zip(plan.tiles, kinds) if not reduces]
    width = math.prod(t[3] for t in spatial)
    rows = math.prod(t[2] for t in spatial)
    vectors = math.ceil(width / lanes)
    fmas = rows * vectors
    score = (width / (vectors * lanes)) * fmas / (fmas + rows + vectors)
    # a tile of whole vectors and a part compiles to lane shuffles (a 40-lane tile on 16 lanes ran at a third
    # of the speed of a 16-lane one with more rows)
    return score / 2 if width > lanes and width % lanes else score


def _plan(mod, block_name: str, padding: List[int], machine):
    """The score of the default plan of the block padded by `padding` (factors per iterator, 1: unpadded)."""
    import tvm
    from tvm.tirx import IterVar

    from schedules.tile_plans import plan_block

    sch = tvm.s_tir.Schedule(mod)
    block_rv = sch.get_sblock(block_name)
    if any(p > 1 for p in padding):
        sch.pad_einsum(block_rv, padding)
        block_rv = sch.get_sblock(block_name)
    block = sch.get(block_rv)
    kinds = [iv.iter_type == IterVar.CommReduce for iv in block.iter_vars]
    plan = plan_block(sch, block_rv, machine, "SSRSRS")
    return _score(plan, kinds, machine.lanes)


def _useful(extents: List[int], padding: List[int]) -> float:
    """The share of the padded domain that is the product's own work."""
    return math.prod(e / (math.ceil(e / f) * f) for e, f in zip(extents, padding))


def _awkward(extent: int, lanes: int, innermost: bool) -> bool:
    """Whether an axis is worth padding: the written rows' axis when whole vectors do not divide it; any other
    axis when it has no divisor from 4 to 16 to make register rows of (197, 2 x 97, ...)."""
    if innermost:
        return extent > lanes and extent % lanes != 0
    return extent > 16 and not any(extent % d == 0 for d in range(4, 17))


def _padding_factors(extent: int) -> List[int]:
    """For each padded extent within MAX_WASTE, the smallest factor reaching it."""
    reached = {}
    for factor in range(2, MAX_FACTOR + 1):
        padded = math.ceil(extent / factor) * factor
        if extent < padded <= extent * (1 + MAX_WASTE):
            reached.setdefault(padded, factor)
    return list(reached.values())


def choose(mod, machine) -> Optional[Tuple[str, List[int], str]]:
    """(block name, padding factors per iterator, note) for a product worth padding, else None. Greedy: the best
    single axis first, then a second axis with the first kept."""
    import tvm
    from tvm.tirx import IterVar

    try:
        sch = tvm.s_tir.Schedule(mod)
        block_rv = _product_block(sch)
        if block_rv is None:
            return None
        block = sch.get(block_rv)
        name = str(block.name_hint)
        extents = [int(iv.dom.extent) for iv in block.iter_vars]
        innermost = _innermost_iterator(block)
        weights = _weight_iterators(sch, block)
        spatial = [i for i, iv in enumerate(block.iter_vars) if iv.iter_type == IterVar.DataPar and i not in weights
                   and _awkward(extents[i], machine.lanes, i == innermost)]
        if not spatial:
            return None
        padding = [1] * len(extents)
        best = _plan(mod, name, padding, machine)
        base = best
    except Exception:  # noqa: BLE001 - not an einsum (a convolution's window), or a plan that does not apply
        return None
    for _ in range(2):
        chosen = None
        for axis in spatial:
            if padding[axis] > 1:
                continue
            for factor in _padding_factors(extents[axis]):
                trial = list(padding)
                trial[axis] = factor
                try:
                    score = _plan(mod, name, trial, machine) * _useful(extents, trial)
                except Exception:  # noqa: BLE001 - pad_einsum refuses the block
                    return None
                if score > best * 1.05 and (chosen is None or score > chosen[0]):
                    chosen = (score, trial)
        if chosen is None:
            break
        best, padding = chosen
    if best < base * MIN_GAIN:
        return None
    note = "padded " + ",".join(f"{extents[i]}->{math.ceil(extents[i] / f) * f}"
                                for i, f in enumerate(padding) if f > 1)
    return name, padding, note
