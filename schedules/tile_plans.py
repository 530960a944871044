"""Tile plans: the register and vector tiles, parallel jobs and reduction chunks of one multi-level-tiled block
(MetaSchedule's SSRSRS structure on CPU), chosen from the machine model instead of sampled. A plan is the
decisions `schedules/defaults.py` feeds the block's design space, plus the rewrites the space cannot express
(a channel-last accumulator, a chunked channel reduction, operands read in lanes or packed per job)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Optional

from tvm import tirx
from tvm.sym.pattern import detect_linear_equation
from tvm.tirx.analysis import undefined_vars

from schedules.machine import Machine, divisors, largest_divisor_at_most, smallest_divisor_at_least


@dataclass
class TilePlan:
    tiles: List[List[int]]  # per block loop, the factors in the order MetaSchedule samples them
    unroll: int
    note: str = ""
    # (block name, write-buffer rank, dimension moved innermost): the accumulator (an intermediate buffer)
    # is stored channel-last so that the vectoriser, which only vectorises the written buffer's innermost
    # dimension, vectorises along the output channels
    transpose: Optional[tuple] = None
    # (block name, spatial loops per level, position of the channel reduction among the reduction loops, its
    # chunk): the reduction over input channels is cut into chunks whose outer loop is moved above the
    # block's S1 loops, so one parallel job's accumulators, weights and inputs of a chunk stay in L1
    k_block: Optional[tuple] = None
    # (block name, buffer name, its channel dimension, spatial loops per level, reduction loops): the broadcast
    # operand is read into a register-sized buffer per R0 step, L channels per vector (_lane_operand)
    lane_read: Optional[tuple] = None
    # (block name, buffer name, spatial loops per level): the vector operand, an activation whose channels are
    # planes apart (NCHW), is copied per parallel job into a contiguous buffer (_pack_per_job)
    packed: Optional[tuple] = None


L1_BYTES = 32 * 1024  # the L1 data cache a K-blocked working set is sized for (Cortex-A72/A76; x86 has 32-48 KiB)


def _k_block_tiles(spatial, extents, vec: dict, reg: dict, outer0: dict, pixels, c, k_chunks: int, r1: int):
    """(S0 tiles, chunks of R0 kept inside S1) for a K-blocked reduction, or None when blocking does not pay.
    One S0 job's accumulators take at most an eighth of L1 (S0 split along the pixel axes until they do); a
    chunk of the input channels is sized so its inputs, weights and those accumulators fill half of L1."""
    outer0 = dict(outer0)

    def region(i):  # extent one S0 job covers along iterator i
        return extents[i] // outer0.get(i, 1)
    for i in sorted(pixels, key=lambda i: -region(i)):  # the tallest pixel axis first (rows)
        while math.prod(region(j) for j in spatial) * 4 > L1_BYTES // 8:
            room = extents[i] // (vec.get(i, 1) * reg.get(i, 1))
            larger = [d for d in divisors(room) if d > outer0.get(i, 1)]
            if not larger:
                break
            outer0[i] = larger[0]
    pixels_per_job = math.prod(region(i) for i in pixels)
    channels_per_job = region(c)
    accumulators = pixels_per_job * channels_per_job * 4
    if accumulators > L1_BYTES // 4:
        return None
    per_chunk = [d for d in divisors(k_chunks)
                 if d * r1 * (pixels_per_job + channels_per_job) * 4 + accumulators <= L1_BYTES // 2]
    inner = max(per_chunk) if per_chunk else 1
    if inner == k_chunks:
        return None  # the whole reduction fits: nothing to block
    return outer0, inner


def _vars_in(expr) -> set:
    return {v.name for v in undefined_vars(expr)}


def _coefficient(expr, var) -> Optional[int]:
    """The constant coefficient of `var` in an affine index expression (None when not affine)."""
    try:
        coeffs = detect_linear_equation(expr, [var])
        if len(coeffs) == 2:
            c = coeffs[0]
            return int(c.value) if hasattr(c, "value") else None
    except Exception:  # noqa: BLE001
        pass
    return None


def _layout_free_buffers(func) -> set:
    out = set()
    if func.attrs is None or "layout_free_buffers" not in func.attrs:
        return out
    for index in func.attrs["layout_free_buffers"]:
        param = func.params[int(index)]
        buffer_map = getattr(func, "buffer_map", None)
        buf = buffer_map[param] if buffer_map is not None and param in buffer_map else param
        out.add(str(buf.name))
    return out


def plan_block(sch, block_rv, machine: Machine, tiling: str) -> Optional[TilePlan]:
    """Tile sizes for each loop of a block about to be multi-level tiled (structure `tiling`, e.g. SSRSRS)."""
    block = sch.get(block_rv)
    loops = sch.get_loops(block_rv)
    iters = list(block.iter_vars)
    if len(loops) != len(iters):
        return None
    extents = [int(sch.get(l).extent) for l in loops]
    kinds = ["S" if iv.iter_type == tirx.IterVar.DataPar else "R" for iv in iters]
    n_s = tiling.count("S")
    func = sch.mod["main"]
    layout_free = _layout_free_buffers(func)
    var_obj = [iv.var for iv in iters]
    var_of = [str(iv.var.name) for iv in iters]
    L = machine.lanes

    write = block.writes[0]
    write_dims = [_vars_in(r.min) for r in write.region]
    # Which write dimension each iterator indexes (None: none)
    write_dim_of = {}
    for d, vs in enumerate(write_dims):
        for v in vs:
            write_dim_of[v] = d

    reads = [(r, str(r.source.name) in layout_free) for r in block.reads if not r.source.same_as(write.source)]

    def read_penalty(i) -> float:
        """1.0 when every non-prepacked operand reads iterator i contiguously or not at all."""
        v = var_of[i]
        score = 1.0
        for region, free in reads:
            if free:
                continue
            dims = [d for d, r in enumerate(region.region) if v in _vars_in(r.min)]
            if not dims:
                continue  # broadcast along v
            if dims != [len(region.region) - 1]:
                score *= 0.25  # a gather
                continue
            c = _coefficient(region.region[-1].min, var_obj[i])
            if c is not None and c != 1:
                score *= 0.5  # strided
        return score

    spatial = [i for i in range(len(iters)) if kinds[i] == "S"]
    reduction = [i for i in range(len(iters)) if kinds[i] == "R"]
    has_reduction = any(extents[i] > 1 for i in reduction)

    if has_reduction and n_s == 4:
        plan = _plan_channel_vector(sch, block, func, machine, iters, extents, kinds, var_obj, var_of, write,
                                    write_dim_of, reads, spatial, reduction, n_s, read_penalty)
        if plan is not None:
            return plan

    # ---- the vector tile S3: candidates over each spatial iterator (plus merged rows for the output's last dim)
    best = None  # (score, axis, {iter: factor})
    for i in spatial:
        if extents[i] <= 1:
            continue
        penalty = read_penalty(i)
        d_i = write_dim_of.get(var_of[i])
        contiguous_store = d_i is not None and all(
            extents[j] == 1 for j in spatial if write_dim_of.get(var_of[j]) is not None and write_dim_of[var_of[j]] > d_i)
        if not contiguous_store:
            # RewriteParallelVectorizeUnroll only vectorises loops that index the written buffer's innermost
            # dimension: along any other axis the tile would stay scalar
            penalty *= 0.2
        options = []
        for d in divisors(extents[i]):
            if d > 4 * L:
                break
            options.append({i: d})
            # merge whole rows: the previous write dimension's iterator, when this one is taken whole
            if d == extents[i] and contiguous_store and d_i is not None and d_i > 0:
                prev = [j for j in spatial if write_dim_of.get(var_of[j]) == d_i - 1 and extents[j] > 1]
                if prev:
                    j = prev[0]
                    for k in divisors(extents[j])[1:]:
                        if d * k > 4 * L:
                            break
                        options.append({i: d, j: k})
        for opt in options:
            size = math.prod(opt.values())
            vectors = math.ceil(size / L)
            util = size / (vectors * L)
            # lane utilisation first; then prefer 1-2 vectors wide over wider (leaves the registers to S2)
            score = (round(penalty * util, 3), -abs(vectors - 2) if size >= L else -10, size)
            if best is None or score > best[0]:
                best = (score, i, opt)
    if best is None:
        vec = {}
        vec_axis = None
    else:
        _, vec_axis, vec = best
    vectors = max(1, math.ceil(math.prod(vec.values()) / L)) if vec else 1

    # ---- the register tile S2: axes whose iterator the vector operand does not read (it is reused across them)
    budget = machine.accumulators // vectors if has_reduction else max(1, 8 // vectors)
    arm_window = None
    if machine.is_arm and has_reduction:
        # Arm: S2 is outside R1, so R1's weights (a register per tap) and inputs (a vector per tap and vector)
        # stay live with the accumulators; a whole 3x3 window with 28 accumulators spills. Keep only the
        # innermost window axis in R1 and size the accumulators to the rest of the registers
        windows = [i for i in reduction if 1 < extents[i] <= 7]
        if windows:
            arm_window = max(windows)
            taps = extents[arm_window]
            budget = max(1, (machine.vector_registers + 1 - taps - taps * vectors) // (2 * vectors))
    vec_vars = {var_of[i] for i in vec}
    vector_operands = [region for region, free in reads if any(v in _vars_in(r.min) for r in region.region for v in vec_vars)]

    def reuse_rank(i):
        absent = all(var_of[i] not in _vars_in(r.min) for region in vector_operands for r in region.region)
        d = write_dim_of.get(var_of[i], -1)
        return (0 if absent else 1, -d)

    lanes = None
    if machine.is_arm and has_reduction and arm_window is None:
        lanes = _lane_operand(reads, vec_vars, var_obj, var_of, reduction, extents, L)
        if lanes is not None:
            # the broadcast operand comes as vectors of L channels, one per register-tile row: the accumulators,
            # those rows and a row of the vector operand must fit the registers together
            budget = max(1, (machine.vector_registers - 2 - vectors) // (vectors + 1))
    reg = {}
    for i in sorted([i for i in spatial if i not in vec and extents[i] > 1], key=reuse_rank):
        if budget < 2:
            break
        f = largest_divisor_at_most(extents[i], budget)
        if f > 1:
            reg[i] = f
            budget //= f

    # ---- the inner reduction tile R1: small kernel windows whole, channels a few
    inner_r = {}
    body = math.prod(reg.values()) * vectors
    r_budget = max(1, min(16, machine.max_unroll // max(1, body)))
    arm_inputs = machine.is_arm and has_reduction and arm_window is None
    if arm_inputs:
        # Arm: R1's input vectors stay live with the accumulators (and a weight register or two); a whole
        # vector of channels lets one load feed four by-element multiply-adds
        r_budget = max(1, min(r_budget, (machine.vector_registers - 2 - body) // vectors))
    for i in sorted(reduction, key=lambda i: extents[i]):  # windows (3, 3) before channels
        f = largest_divisor_at_most(extents[i], r_budget)
        if arm_inputs and f % L and f > L:
            f = largest_divisor_at_most(extents[i], f - f % L)
        inner_r[i] = f
        r_budget = max(1, r_budget // f)
    if arm_window is not None:
        inner_r = {i: (extents[i] if i == arm_window else 1) for i in reduction}
    if lanes is not None:
        inner_r = {i: (L if i == lanes[1] else 1) for i in reduction}

    # ---- outer tiles: S0 for >= 4 x cores parallel jobs, the rest S1; split first along the axes whose
    # jobs re-read the least: every job reads all of each operand that does not vary along its split axis
    order = sorted(spatial, key=lambda i: _operand_elements(reads, var_of[i], varying=False))
    outer0, got = _outer_tiles(order, extents, vec, reg, machine)
    if has_reduction:
        outer0, got = _jobs_within_l1(order, extents, vec, reg, outer0, reads, var_of)

    tiles = []
    for i in range(len(iters)):
        if kinds[i] == "S":
            s3, s2, s0 = vec.get(i, 1), reg.get(i, 1), outer0.get(i, 1)
            s1 = extents[i] // (s3 * s2 * s0)
            t = [s0, s1, s2, s3][:n_s] if n_s == 4 else None
            if t is None:
                return None
            tiles.append(t)
        else:
            r1 = inner_r.get(i, 1)
            tiles.append([extents[i] // r1, r1])
    unroll = machine.max_unroll if body * math.prod(inner_r.values()) <= machine.max_unroll else 64
    if arm_inputs:
        # unroll S2 x R1 and no more: unrolling R0 too (its iterations fit 256 when the tile is small) lets
        # LLVM hoist every chunk's loads at once, and the registers spill
        iterations = math.prod(reg.values()) * math.prod(inner_r.values())
        unroll = iterations if iterations <= machine.max_unroll else 32
    note = (f"vec={ {var_of[i]: f for i, f in vec.items()} } reg={ {var_of[i]: f for i, f in reg.items()} } "
            f"r1={ {var_of[i]: f for i, f in inner_r.items() if f > 1} } par={got}"
            + (f" lanes={lanes[0]}" if lanes is not None else ""))
    lane_read, packed = None, None
    if lanes is not None:
        lane_read = (str(block.name_hint), lanes[0], lanes[2], len(spatial), len(reduction))
        channel_planes = [str(region.source.name) for region, free in reads if not free
                          and any(v in _vars_in(r.min) for r in region.region for v in vec_vars)
                          and any(var_of[i] in _vars_in(r.min) for r in region.region[:-1] for i in reduction)]
        if channel_planes:
            packed = (str(block.name_hint), channel_planes[0], len(spatial))
            note += " packed"
    return TilePlan(tiles=tiles, unroll=unroll, note=note, lane_read=lane_read, packed=packed)


MIN_CHANNEL_ACCUMULATORS = 7
SHORTEST_LANE_REDUCTION = 6  # steps of L channels: MobileViT's 16-channel 1x1 convolution (4 steps) spilled


def _lane_operand(reads, vec_vars, var_obj, var_of, reduction, extents, lanes: int):
    """(buffer name, reduction iterator, buffer dimension it indexes) of the operand a NEON register tile
    broadcasts, when it can come as whole vectors: it does not vary along the vector tile, and its innermost
    varying dimension is a reduction axis read contiguously whose extent is a multiple of the lanes (and at least
    SHORTEST_LANE_REDUCTION vectors). Loaded L channels at a time into a register, each
    element feeds a by-element multiply-add (fmla v.4s, v.4s, v.s[k]): one load per L channels of a
    register-tile row instead of a scalar load (or a pair) per channel."""
    found = None
    for region, _ in reads:
        if any(v in _vars_in(r.min) for r in region.region for v in vec_vars):
            continue  # the vector operand
        if str(region.source.dtype) != "float32":
            return None  # the lanes are float32 lanes; integer products keep their plans
        varying = [d for d, r in enumerate(region.region)
                   if any(extents[i] > 1 for i in range(len(var_of)) if var_of[i] in _vars_in(r.min))]
        if not varying:
            return None
        last = region.region[varying[-1]].min  # the innermost dimension that varies (a 1x1 window's are unit)
        axes = [i for i in reduction if var_of[i] in _vars_in(last) and extents[i] > 1]
        if len(axes) != 1 or extents[axes[0]] % lanes or _coefficient(last, var_obj[axes[0]]) != 1:
            return None
        if extents[axes[0]] < SHORTEST_LANE_REDUCTION * lanes:
            return None  # LLVM unrolls a few steps completely, hoists every step's loads, and the registers spill
        if found is not None:
            return None  # two broadcast operands: not a product
        found = (str(region.source.name), axes[0], varying[-1])
    return found


def _operand_elements(reads, var: str, varying: bool) -> int:
    """Elements of the read operands whose index does (varying) or does not use iterator `var`."""
    return sum(math.prod(int(d) for d in region.source.shape) for region, _ in reads
               if any(var in _vars_in(r.min) for r in region.region) == varying)


def _jobs_within_l1(order, extents, vec: dict, reg: dict, outer0: dict, reads, var_of) -> tuple:
    """(S0 tiles, parallel jobs) with the first axis of `order` split further until one job's share of the
    operands that vary along it takes at most half of L1: a job's other loops then re-read that share from L1
    (a 1x1 convolution's input rows, once per tile of output channels) instead of from L2."""
    axis = next((i for i in order if extents[i] // (vec.get(i, 1) * reg.get(i, 1)) > 1), None)
    if axis is None:
        return outer0, math.prod(outer0.values())
    varying = _operand_elements(reads, var_of[axis], varying=True)
    outer0 = dict(outer0)
    room = extents[axis] // (vec.get(axis, 1) * reg.get(axis, 1))
    while varying * 4 // outer0.get(axis, 1) > L1_BYTES // 2:
        larger = [d for d in divisors(room) if d > outer0.get(axis, 1)]
        if not larger:
            break
        outer0[axis] = larger[0]
    return outer0, math.prod(outer0.values())


def _outer_tiles(spatial, extents, vec: dict, reg: dict, machine: Machine) -> tuple:
    """({spatial iterator: outermost tile}, parallel jobs): smallest factors that give >= 4 x cores jobs, taken
    along the iterators in the order given."""
    want, got, outer0 = 4 * machine.cores, 1, {}
    for i in spatial:
        rest = extents[i] // (vec.get(i, 1) * reg.get(i, 1))
        if got >= want:
            outer0[i] = 1
            continue
        f = smallest_divisor_at_least(rest, math.ceil(want / got))
        outer0[i] = f
        got *= f
    return outer0, got


def _lane_invariant(expr, var, factor: int, extent: int) -> bool:
    """Whether `expr` stays the same across `factor` consecutive aligned values of `var`: `var` absent, or
    only inside floor divisions by multiples of `factor` (a grouped convolution's input channel)."""
    if var.name not in _vars_in(expr):
        return True
    text = str(expr)
    name = re.escape(var.name)
    uses = len(re.findall(rf"\b{name}\b", text))
    divs = [int(g) for g in re.findall(rf"\b{name} // (?:T\.int64\()?(\d+)", text)]
    return uses == len(divs) and all(g % factor == 0 for g in divs)


def _plan_channel_vector(sch, block, func, machine, iters, extents, kinds, var_obj, var_of, write, write_dim_of,
                         reads, spatial, reduction, n_s, read_penalty) -> Optional[TilePlan]:
    """NCHW activations, prepacked weights: vectorise a reduction along the output channels, the weight
    operand's axis, with the activation broadcast, when the pixel rows do not split into whole vectors (14 or
    28 pixels: partial vectors compile to lane shuffles and spills) or are read with a stride (a stride-2
    convolution's row is a gather). The accumulator, an intermediate buffer, is stored channel-last
    (TilePlan.transpose); the fused epilogue reads it back."""
    L = machine.lanes
    params = {str(p.name) for p in func.params}  # TVM 0.27: a PrimFunc's parameters are its buffers
    if str(write.source.name) in params:
        return None  # the block writes the kernel's output: a transposed accumulator would change its signature
    nd = len(write.region)
    last = nd - 1
    def weight_axis(i) -> bool:
        return any(free and any(var_of[i] in _vars_in(r.min) for r in region.region) for region, free in reads)

    # the row the spatial plan would vectorise: the iterator of the write's innermost dimension
    row = [i for i in spatial if write_dim_of.get(var_of[i]) == last and extents[i] > 1]
    if row and extents[row[0]] % L == 0 and read_penalty(row[0]) == 1.0:
        return None  # whole vectors along the row, read contiguously: the spatial plan does well
    for c in spatial:
        d_c = write_dim_of.get(var_of[c])
        if d_c is None or d_c == last or extents[c] % L:
            continue
        if not weight_axis(c):
            continue
        pixels = [i for i in spatial if i != c and extents[i] > 1 and write_dim_of.get(var_of[i]) is not None]
        # the inner reduction tile R1: the innermost window axis (rx) whole, the rest of the window and the
        # channels in R0; without a window two channels. S2 is outside R1, so R1's weights (one vector per
        # tap) and inputs (one register per scalar, windows overlapping along the row) stay live together
        # with the accumulators: all must fit the registers, or LLVM spills
        windows = [i for i in reduction if 1 < extents[i] <= 7]
        taps, chan_axis = 1, None
        if windows:
            rx = max(windows)  # the last window axis: along the row
            taps = extents[rx]
        else:
            chan_axis = next((i for i in reduction if extents[i] % 2 == 0), None)
        chosen = None
        for vectors in (2, 1, 4):
            v = vectors * L
            if extents[c] % v:
                continue
            if not all(free or all(_lane_invariant(r.min, var_obj[c], v, extents[c]) for r in region.region)
                       for region, free in reads):
                continue
            for chans in ((2, 1) if chan_axis is not None else (1,)):
                reg = {}
                for i in sorted(pixels, key=lambda i: -write_dim_of[var_of[i]]):
                    have = math.prod(reg.values())
                    fits = [f for f in divisors(extents[i]) if vectors * (have * f + taps * chans)
                            + (have * f + taps - 1) * chans <= machine.vector_registers + 1]
                    f = max(fits) if fits else 1
                    if f > 1:
                        reg[i] = f
                acc = math.prod(reg.values())
                fmas = acc * vectors * taps * chans  # per R1 pass: FMAs, weight loads, input loads (paired), loop
                score = fmas / (fmas + vectors * taps * chans + (acc + taps - 1) * chans / 2 + 4)
                # seven: a 7x7 map's row of accumulators on one vector (else a 1x1 convolution over 368 channels
                # at 7x7 falls back to 49-lane pixel vectors: three vectors and one lane)
                if acc * vectors >= MIN_CHANNEL_ACCUMULATORS and (chosen is None or score > chosen[0]):
                    chosen = (score, v, vectors, reg, chans)
        if chosen is None:
            continue
        _, v, vectors, reg, chans = chosen
        vec = {c: v}
        inner_r = {i: 1 for i in reduction}
        if windows:
            inner_r[max(windows)] = taps
        elif chans > 1:
            inner_r[chan_axis] = chans
        outer0, got = _outer_tiles(spatial, extents, vec, reg, machine)
        k_block = None
        if not windows and chan_axis is not None:
            blocked = _k_block_tiles(spatial, extents, vec, reg, outer0, pixels, c,
                                     extents[chan_axis] // inner_r[chan_axis], inner_r[chan_axis])
            if blocked is not None:
                outer0, inner = blocked
                got = math.prod(outer0.values())
                k_block = (str(block.name_hint), len(spatial), reduction.index(chan_axis), inner)
        tiles = []
        for i in range(len(iters)):
            if kinds[i] == "S":
                s3, s2, s0 = vec.get(i, 1), reg.get(i, 1), outer0.get(i, 1)
                tiles.append([s0, extents[i] // (s3 * s2 * s0), s2, s3])
            else:
                r1 = inner_r.get(i, 1)
                tiles.append([extents[i] // r1, r1])
        note = (f"chan-vec={ {var_of[c]: v} } reg={ {var_of[i]: f for i, f in reg.items()} } "
                f"r1={ {var_of[i]: f for i, f in inner_r.items() if f > 1} } par={got}"
                + (f" k-chunk={k_block[3] * inner_r[chan_axis]}" if k_block else ""))
        return TilePlan(tiles=tiles, unroll=256, note=note, k_block=k_block,
                        transpose=(str(block.name_hint), nd, d_c, len(spatial), spatial.index(c)))
    return None
