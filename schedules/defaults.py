"""Default schedules: every kernel without a database record gets a deterministic schedule for its target.

TVM 0.27 has no default CPU schedules for Relax: a kernel no database covers would run as the bare loop nest
LegalizeOps wrote (one thread, little vectorisation; 10-35x ONNX Runtime's time on x86). Here, for each task of
the tunable module, MetaSchedule's own design space for the target (DefaultLLVM/DefaultX86 rules on x86,
DefaultARM("neon") on aarch64) is generated, and instead of searching it every sampled decision is chosen from
the target's machine model (vector lanes, vector registers, cores):
  - the vector tile along the output's contiguous axis (whole short rows merged), as wide as 1-4 vectors,
    avoiding axes read by gathers or strides and axes the vectoriser would leave scalar; a convolution whose
    rows are not whole vectors or are read with a stride is vectorised along its output channels instead;
  - the register tile over the axes the vector operand is reused across, up to (vector registers - 4)
    accumulators;
  - small kernel windows whole inside, channels up to 16; outer tiles giving >= 4 x cores parallel jobs;
  - unrolling of the register tile when its body is small; producers kept at root;
  - padded input copies split into a vector fill and a branch-free copy; on NEON, a product's broadcast
    operand read four channels to a register, each a lane of by-element multiply-adds;
  - int8 products in NEON pair sums, and the window copies that feed them, scheduled by hand
    (schedules/pair_sums.py); products on a dot-product intrinsic take MetaSchedule's tensorized space.
The target's postprocessors (parallelise/vectorise/unroll rewrite, reduction rewrite, weight layout rewrite)
then run as they do for tuned schedules, and the traces go into an in-memory database that the pipeline
applies like a tuned one. Kernels a tuned database already scheduled are left alone. docs/arm-without-a-board.md
has the measurements that chose this.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import List, Optional

import tvm
from tvm import tirx
from tvm.s_tir import meta_schedule as ms
from tvm.sym.pattern import detect_linear_equation
from tvm.tirx.analysis import undefined_vars

from schedules import intrinsics as intrinsics_module, pair_sums, table_reads, tensorized_loops


# --------------------------------------------------------------------------------------------------------
# The machine model: all a heuristic needs from the target


@dataclass(frozen=True)
class Machine:
    lanes: int  # float32 lanes of one vector register
    vector_registers: int
    cores: int
    is_arm: bool

    @property
    def max_unroll(self) -> int:
        """The largest explicit unroll MetaSchedule's rules offer the target (DefaultARM: 256; x86: 512). A
        register tile is fully unrolled only within it: past it, the reduction loop stays innermost and each
        accumulator becomes one long dependency chain."""
        return 256 if self.is_arm else 512

    @property
    def accumulators(self) -> int:
        """Vector accumulators of a register tile: the registers less a few for operands and broadcasts."""
        return max(4, self.vector_registers - 4)


def machine_of(target) -> Machine:
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    width = int(tvm.target.codegen.llvm_get_vector_width(target))  # bits; 128 on NEON, 512 on AVX-512
    triple = str(target.attrs.get("mtriple", "") or tvm.target.codegen.llvm_get_system_triple())
    is_arm = triple.startswith("aarch64") or triple.startswith("arm")
    if width <= 0:
        width = 128
    lanes = max(1, width // 32)
    if is_arm:
        registers = 32  # AArch64 NEON: v0-v31
    else:
        features = set()
        try:
            features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target)}
        except Exception:  # noqa: BLE001
            pass
        registers = 32 if ("avx512f" in features or width >= 512) else 16
    cores = int(target.attrs.get("num-cores", 1) or 1)
    return Machine(lanes=lanes, vector_registers=registers, cores=cores, is_arm=is_arm)


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _largest_divisor_at_most(n: int, cap: int) -> int:
    cap = max(1, cap)
    return max(d for d in _divisors(n) if d <= cap)


def _smallest_divisor_at_least(n: int, floor: int) -> int:
    cands = [d for d in _divisors(n) if d >= floor]
    return min(cands) if cands else n


# --------------------------------------------------------------------------------------------------------
# A tiling plan for one multi-level-tiled block (SSRSRS on CPU)


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
            larger = [d for d in _divisors(room) if d > outer0.get(i, 1)]
            if not larger:
                break
            outer0[i] = larger[0]
    pixels_per_job = math.prod(region(i) for i in pixels)
    channels_per_job = region(c)
    accumulators = pixels_per_job * channels_per_job * 4
    if accumulators > L1_BYTES // 4:
        return None
    per_chunk = [d for d in _divisors(k_chunks)
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
        for d in _divisors(extents[i]):
            if d > 4 * L:
                break
            options.append({i: d})
            # merge whole rows: the previous write dimension's iterator, when this one is taken whole
            if d == extents[i] and contiguous_store and d_i is not None and d_i > 0:
                prev = [j for j in spatial if write_dim_of.get(var_of[j]) == d_i - 1 and extents[j] > 1]
                if prev:
                    j = prev[0]
                    for k in _divisors(extents[j])[1:]:
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
        f = _largest_divisor_at_most(extents[i], budget)
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
        f = _largest_divisor_at_most(extents[i], r_budget)
        if arm_inputs and f % L and f > L:
            f = _largest_divisor_at_most(extents[i], f - f % L)
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
        larger = [d for d in _divisors(room) if d > outer0.get(axis, 1)]
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
        f = _smallest_divisor_at_least(rest, math.ceil(want / got))
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
                    fits = [f for f in _divisors(extents[i]) if vectors * (have * f + taps * chans)
                            + (have * f + taps - 1) * chans <= machine.vector_registers + 1]
                    f = max(fits) if fits else 1
                    if f > 1:
                        reg[i] = f
                acc = math.prod(reg.values())
                fmas = acc * vectors * taps * chans  # per R1 pass: FMAs, weight loads, input loads (paired), loop
                score = fmas / (fmas + vectors * taps * chans + (acc + taps - 1) * chans / 2 + 4)
                if acc * vectors >= 8 and (chosen is None or score > chosen[0]):
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


# --------------------------------------------------------------------------------------------------------
# Replaying a design space with chosen decisions


@dataclass
class Options:
    space: str = "deepest"  # which design space: the one fusing the epilogue deepest
    unroll_elementwise: int = 16  # unroll_explicit for kernels without a tiled block
    compute_location: int = -1  # SampleComputeLocation: -1 root (keep producer materialised)
    max_unroll: int = 512  # cap on unroll_explicit (64 builds x86 libraries ~20x faster and runs them ~2x slower)


class _Decider:
    def __init__(self, sch, machine: Machine, options: Options):
        self.sch, self.machine, self.options = sch, machine, options
        self.queue: List[List[int]] = []
        self.plans: List[TilePlan] = []
        self.unroll: Optional[int] = None

    def __call__(self, inst, inputs, attrs, decision):
        kind = inst.kind.name
        if kind == "Annotate" and str(attrs[0]) == "meta_schedule.tiling_structure":
            plan = plan_block(self.sch, inputs[0], self.machine, str(inputs[1]))
            if plan is not None:
                self.plans.append(plan)
                self.queue = list(plan.tiles)
                self.unroll = plan.unroll if self.unroll is None else max(self.unroll, plan.unroll)
            return decision
        if kind == "SamplePerfectTile":
            if self.queue:
                tile = self.queue.pop(0)
                extent = int(self.sch.get(inputs[0]).extent)
                if len(tile) == int(attrs[0]) and math.prod(tile) == extent:
                    return [int(t) for t in tile]
            return decision
        if kind == "SampleCategorical":
            candidates = [int(c) for c in attrs[0]]
            if self.unroll is None:  # no tiled block: the step closest to the elementwise choice
                want = min(self.options.unroll_elementwise, self.options.max_unroll)
                return int(min(range(len(candidates)), key=lambda k: (abs(candidates[k] - want), -candidates[k])))
            # a tiled block: the smallest step that unrolls the plan's iterations (the largest when none does)
            want = min(self.unroll, self.options.max_unroll)
            fits = [k for k in range(len(candidates)) if candidates[k] >= want]
            return int(min(fits, key=lambda k: candidates[k]) if fits
                       else max(range(len(candidates)), key=lambda k: candidates[k]))
        if kind == "SampleComputeLocation":
            return decision if self.options.compute_location is None else int(self.options.compute_location)
        return decision


def _space_rank(space) -> tuple:
    """Prefer spaces with a tiled block; among them the epilogue fused deepest (MetaSchedule's order: none,
    at the inner tile, at the outer tile); avoid rfactor spaces."""
    names = [inst.kind.name for inst in space.trace.insts]
    tiled = any(inst.kind.name == "Annotate" and str(inst.attrs[0]) == "meta_schedule.tiling_structure"
                for inst in space.trace.insts)
    rfactor = "RFactor" in names
    fused = names.count("ReverseComputeAt")
    return (tiled, not rfactor, fused)


def _block_reduction(sch, name: str, n_spatial: int, r_position: int, inner: int) -> None:
    """Cut the channel reduction's R0 loop into (outer, `inner`) and move the outer loop above the block's S1
    loops; the fused epilogue moves out to the S0 loop, to run once the last chunk is summed."""
    block_rv = sch.get_sblock(name)
    loops = list(sch.get_loops(block_rv))
    s0_last, s1 = loops[n_spatial - 1], loops[n_spatial:2 * n_spatial]
    for consumer in sch.get_consumers(block_rv):
        sch.reverse_compute_at(consumer, s0_last, preserve_unit_loops=True)
    outer, _ = sch.split(loops[2 * n_spatial + r_position], [None, inner])
    sch.reorder(outer, *s1)


def _stack_copy(sch, name: str, buffer: str) -> tuple:
    """(block, copy block): block `name` reads `buffer` through a copy in "global" scope. TVM 0.27 keeps a
    constant-size "global" buffer under 1 KiB on the stack (an alloca LLVM can promote to registers), a larger
    one in the workspace allocator, and every "local" one in the workspace allocator."""
    block_rv = sch.get_sblock(name)
    index = next(k for k, region in enumerate(sch.get(block_rv).reads) if str(region.source.name) == buffer)
    return block_rv, sch.cache_read(block_rv, index, "global")


def _pack_per_job(sch, name: str, buffer: str, n_spatial: int, machine: Machine) -> None:
    """Copy one parallel job's share of `buffer` into a buffer of its own at the last S0 loop of block `name`,
    its rows vectorised. In NCHW the channel planes of a large map lie a multiple of the L1 way size apart, so
    the channels of one pixel tile all fall in one cache set and evict each other (the A76's 64 KiB 4-way L1D:
    16 KiB a way, one 64x64 plane); packed, a job's rows are contiguous and stay in L1 across its tiles of
    output channels."""
    block_rv, cache = _stack_copy(sch, name, buffer)
    sch.compute_at(cache, list(sch.get_loops(block_rv))[n_spatial - 1], preserve_unit_loops=True)
    _vector_split(sch, list(sch.get_loops(cache))[-1], machine)


def _read_in_lanes(sch, name: str, buffer: str, dim: int, n_spatial: int, n_reduction: int) -> None:
    """Read `buffer` into a small buffer at the last R0 loop of block `name`, its channel dimension `dim`
    vectorised: LLVM keeps that buffer in vector registers and turns each element read into a lane."""
    block_rv, cache = _stack_copy(sch, name, buffer)
    r0_last = list(sch.get_loops(block_rv))[2 * n_spatial + n_reduction - 1]
    sch.compute_at(cache, r0_last, preserve_unit_loops=True)
    own = list(sch.get_loops(cache))[2 * n_spatial + n_reduction:]
    channel = sch.fuse(*own[dim:]) if len(own) > dim + 1 else own[dim]
    sch.vectorize(channel)


@dataclass
class KernelResult:
    name: str
    ok: bool
    space: int = -1
    note: str = ""
    seconds: float = 0.0


def _context(mod, target, name, intrinsics: bool = True):
    """A TuneContext without TuneContext.__init__'s `import tvm.s_tir.tensor_intrin`: that import registers every
    tensor intrinsic of every backend (CUDA's included) and takes ~30 s on this host; float32 CPU spaces need none.
    `intrinsics=False` leaves out the target's tensor-intrinsic tiling rules (VNNI, NEON dot products)."""
    from tvm.s_tir.meta_schedule import _ffi_api
    from tvm.s_tir.meta_schedule.logging import get_logger, get_logging_func
    from tvm.s_tir.meta_schedule.space_generator import PostOrderApply, SpaceGenerator

    intrinsics_module.register()

    def make(generator):
        ctx = ms.TuneContext.__new__(ms.TuneContext)
        ctx.__init_handle_by_constructor__(_ffi_api.TuneContext, mod, target, generator, None, name, 1, 1,
                                           get_logging_func(get_logger("default_schedules")))
        _ffi_api.TuneContextInitialize(ctx)
        return ctx

    ctx = make(SpaceGenerator.create("post-order-apply"))
    if intrinsics:
        return ctx
    generator = ctx.space_generator
    rules = [rule for rule in generator.sch_rules if "WithIntrin" not in type(rule).__name__]
    return make(PostOrderApply(sch_rules=rules, postprocs=list(generator.postprocs),
                               mutator_probs=dict(generator.mutator_probs)))


def _tensorized(space) -> bool:
    return any(inst.kind.name == "Annotate" and str(inst.attrs[0]) == "meta_schedule.auto_tensorize"
               for inst in space.trace.insts)


def _postprocess(sch, postprocs) -> Optional[str]:
    """Run the target's postprocessors on a replayed schedule; None, or why it was refused."""
    sch.enter_postproc()
    return None if all(p.apply(sch) for p in postprocs) else "a postprocessor refused"


def _vector_split(sch, loop, machine: Machine) -> None:
    """Vectorise `loop`: whole when it is at most four vectors, else in pieces of the largest divisor of its
    extent that is a whole number of vectors (at most four); left scalar when no such piece exists."""
    extent, lanes = int(sch.get(loop).extent), machine.lanes
    if extent <= 4 * lanes:
        sch.vectorize(loop)
        return
    pieces = [d for d in _divisors(extent) if d % lanes == 0 and d <= 4 * lanes]
    if pieces:
        sch.vectorize(sch.split(loop, [None, max(pieces)])[1])


def _split_padding(sch, machine: Machine) -> int:
    """Split every padding block at the root (`pad[..] = if_then_else(inside, x[..], c)`) into a fill of the
    whole buffer with `c` and a copy of the inside, both vectorised; returns how many were split. The
    vectoriser scalarises an if_then_else with a vector condition, so a convolution's padded copy of its
    input otherwise runs one element at a time (a compare, a branch, a load and a store each), most of a
    depthwise convolution's instructions. The fill is a run of vector stores; the copy has no branch."""
    split = 0
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = list(sch.get_loops(block))
        kinds = [sch.get(loop).kind for loop in loops]
        inner = next((k for k, kind in enumerate(kinds) if kind != tirx.ForKind.PARALLEL), None)
        if inner is None or not sch.can_decompose_padding(block, loops[inner]):
            continue
        fill = sch.decompose_padding(block, loops[inner])
        fill_loops = list(sch.get_loops(fill))[inner:]
        _vector_split(sch, sch.fuse(*fill_loops) if len(fill_loops) > 1 else fill_loops[0], machine)
        _vector_split(sch, list(sch.get_loops(block))[-1], machine)
        split += 1
    return split


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[-1][:200] if str(err) else type(err).__name__


def _packed_product(mod) -> bool:
    """Whether the task computes compiler/passes/dot_products.py's product, whose weights are packed in the
    contiguous tiles the CPU's dot-product intrinsics read."""
    return pair_sums.has_block(mod, "dot_product")


def _tensorized_schedule(mod, target, spaces, postprocs) -> tuple:
    """(schedule, note) from the first design space whose product the target's tensor intrinsic computes, with
    the decisions MetaSchedule sampled for it, or (None, reasons). The root's vectorize annotation is dropped:
    RewriteParallelVectorizeUnroll would vectorise the loops around the intrinsic's blockized body, which
    does not build ("Cannot broadcast lanes=16 to 32"). The schedule is compiled once here: an intrinsic
    whose operand tile is strided in this block (a convolution's unpacked weights) fails only when lowered."""
    reasons = []
    for k, space in enumerate(spaces):
        if not _tensorized(space):
            continue
        sch, refused = replay_tensorized(mod, space, postprocs)
        if refused is None:
            try:
                with target, tvm.transform.PassContext(opt_level=3):
                    tvm.tirx.build(sch.mod, target=target)
            except Exception as err:  # noqa: BLE001
                refused = _first_line(err)
        if refused is None:
            return sch, f"tensorized (space {k})"
        reasons.append(f"space {k}: {refused}")
    return None, " | ".join(reasons)


def replay_tensorized(mod, space, postprocs) -> tuple:
    """(schedule, None or why refused): a tensorized design space replayed with its sampled decisions, without
    the root's vectorize annotation, through the target's postprocessors (which tensorize the product)."""
    sch = tvm.s_tir.Schedule(mod)
    try:
        space.trace.apply_to_schedule(sch, remove_postproc=True)
        tensorized_loops.drop_root_vectorize(sch)
        refused = _postprocess(sch, postprocs)
    except Exception as err:  # noqa: BLE001
        return sch, _first_line(err)
    if refused is None and "meta_schedule.auto_tensorize" in sch.mod.script():
        refused = "the intrinsic did not match"
    return sch, refused


def schedule_task(mod, target, machine: Machine, options: Options, name: str = "main"):
    """(scheduled tvm.s_tir.Schedule or None, KernelResult) for one task module."""
    started = time.perf_counter()
    if pair_sums.has_block(mod, pair_sums.BLOCK):
        intrinsics_module.register()
        sch, note = pair_sums.schedule(mod, machine.vector_registers)
        return sch, KernelResult(name, True, -1, note, time.perf_counter() - started)
    if pair_sums.has_block(mod, pair_sums.WINDOWS):
        sch, note = pair_sums.schedule_windows(mod)
        return sch, KernelResult(name, True, -1, note, time.perf_counter() - started)
    if pair_sums.has_block(mod, table_reads.LOOKUP):
        scheduled = table_reads.schedule(mod)
        if scheduled is not None:
            return scheduled[0], KernelResult(name, True, -1, scheduled[1], time.perf_counter() - started)
    ctx = _context(mod, target, name)
    spaces = list(ctx.generate_design_space())
    if any(_tensorized(space) for space in spaces) and _packed_product(mod):
        sch, note = _tensorized_schedule(mod, target, spaces, list(ctx.space_generator.postprocs))
        if sch is not None:
            return sch, KernelResult(name, True, -1, note, time.perf_counter() - started)
    if any(_tensorized(space) for space in spaces):
        # the plans tile and vectorise plain blocks: any other product takes the spaces without the intrinsic
        # rules (TVM's NEON dot-product intrinsics leave the weight tile's strides free, so on a convolution's
        # unpacked weights they would build and compute the wrong sums)
        ctx = _context(mod, target, name, intrinsics=False)
        spaces = list(ctx.generate_design_space())
    postprocs = list(ctx.space_generator.postprocs)
    order = sorted(range(len(spaces)), key=lambda k: _space_rank(spaces[k]), reverse=True)
    # among equal ranks keep MetaSchedule's order, the first fused space being the deepest
    ranked = sorted(order, key=lambda k: (tuple(-int(x) for x in _space_rank(spaces[k])), k))
    errors = []
    # first with the chosen compute locations, the schedule checked after every primitive; then without the
    # stage-pipeline checks (a layer norm's producers kept at root fail them, as MetaSchedule's own search,
    # which runs unchecked, never sees; the build and its numerics tests still judge the result); last with
    # the generator's own compute locations (rand_state=1), which can recompute a producer per element
    attempts = ([(k, options, "all") for k in ranked] + [(k, options, 0) for k in ranked]
                + [(k, dataclasses.replace(options, compute_location=None), "all") for k in ranked])
    for k, opts, checks in attempts:
        sch = tvm.s_tir.Schedule(mod, debug_mask=checks, enable_check=True)
        decider = _Decider(sch, machine, opts)
        try:
            spaces[k].trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decider)
            for plan in decider.plans:
                if plan.transpose is not None:
                    block_name, nd, d, n_spatial, c = plan.transpose
                    order = [j for j in range(nd) if j != d] + [d]
                    block_rv = sch.get_sblock(block_name)
                    sch.transform_layout(block_rv, ("write", 0),
                                         tirx.IndexMap.from_func(lambda *idx: [idx[j] for j in order], ndim=nd))
                    inner = list(sch.get_loops(block_rv))[-n_spatial:]  # the vector tile S3, one loop per axis
                    sch.reorder(*([l for k, l in enumerate(inner) if k != c] + [inner[c]]))
            for plan in decider.plans:
                if plan.lane_read is not None:
                    _read_in_lanes(sch, *plan.lane_read)
                if plan.packed is not None:
                    _pack_per_job(sch, *plan.packed, machine)
            for plan in decider.plans:
                if plan.k_block is not None:
                    _block_reduction(sch, *plan.k_block)
            refused = _postprocess(sch, postprocs)
        except Exception as err:  # noqa: BLE001
            refused = _first_line(err)
        if refused is not None:
            errors.append(f"space {k}: {refused}")
            continue
        note = "; ".join(p.note for p in decider.plans)
        padded = sch.copy()
        try:
            if _split_padding(padded, machine):
                sch, note = padded, note + " padding split"
        except Exception as err:  # noqa: BLE001 - the schedule without the split stands
            note += f" (padding kept whole: {_first_line(err)})"
        return sch, KernelResult(name, True, k, note, time.perf_counter() - started)
    return None, KernelResult(name, False, -1, " | ".join(errors), time.perf_counter() - started)


def default_database(mod, target, options: Optional[Options] = None, skip=(), only=None, log=None):
    """(MemoryDatabase with one record per task of the tunable module `mod`, [KernelResult]); tasks named in
    `skip` (kernels that already carry a schedule), or not named in `only` when it is given, are left out."""
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    options = options or Options()
    machine = machine_of(target)
    database = ms.database.MemoryDatabase()
    results = []
    for task in ms.relax_integration.extract_tasks(mod, target):
        if task.task_name in skip or (only is not None and task.task_name not in only):
            continue
        task_mod = task.dispatched[0]
        sch, result = schedule_task(task_mod, target, machine, options, task.task_name)
        results.append(result)
        if log:
            log(f"  {result.name}: {'space ' + str(result.space) if result.ok else 'FAILED'} {result.note} "
                f"({result.seconds * 1e3:.0f} ms)")
        if sch is None:
            continue
        workload = database.commit_workload(task_mod)
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, run_secs=[1.0], target=target,
            args_info=ms.arg_info.ArgInfo.from_prim_func(task_mod["main"])))
    return database, results
