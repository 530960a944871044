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
    (schedules/pair_sums.py); products on a dot-product intrinsic take MetaSchedule's tensorized space;
  - kernels that reduce rows (layer norm, softmax, a mean over pixels) one row per job in vector partial sums
    (schedules/row_reductions.py).
The machine model is schedules/machine.py; the tile plans of a tiled block, schedules/tile_plans.py.
The target's postprocessors (parallelise/vectorise/unroll rewrite, reduction rewrite, weight layout rewrite)
then run as they do for tuned schedules, and the traces go into an in-memory database that the pipeline
applies like a tuned one. Kernels a tuned database already scheduled are left alone. docs/arm-without-a-board.md
has the measurements that chose this.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import List, Optional

import tvm
from tvm import tirx
from tvm.s_tir import meta_schedule as ms

from schedules import (intrinsics as intrinsics_module, pair_sums, row_reductions, table_reads, tensorized_loops,
                       tile_padding)
from schedules.machine import Machine, divisors, machine_of  # noqa: F401 - machine_of: the defaults' public API
from schedules.tile_plans import TilePlan, plan_block


# --------------------------------------------------------------------------------------------------------
# Replaying a design space with chosen decisions


@dataclass
class Options:
    space: str = "deepest"  # which design space: the one fusing the epilogue deepest
    unroll_elementwise: int = 16  # unroll_explicit for kernels without a tiled block
    compute_location: int = -1  # SampleComputeLocation: -1 root (keep producer materialised)
    max_unroll: int = 512  # cap on unroll_explicit (64 builds x86 libraries ~20x faster and runs them ~2x slower)
    row_reductions: bool = True  # kernels that reduce rows: schedules/row_reductions.py (False: the generic space)
    pad_products: bool = True  # products no good tile divides, padded (schedules/tile_padding.py)


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
    pieces = [d for d in divisors(extent) if d % lanes == 0 and d <= 4 * lanes]
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
    rows = row_reductions.schedule(mod, machine.lanes) if options.row_reductions else None
    if rows is not None:
        return rows[0], KernelResult(name, True, -1, rows[1], time.perf_counter() - started)
    padding = tile_padding.choose(mod, machine) if options.pad_products else None
    if padding is not None:
        sch, result = _planned_schedule(mod, target, machine, options, name, started, padding)
        if sch is not None:
            return sch, result
    return _planned_schedule(mod, target, machine, options, name, started)


def _pad(sch, padding) -> None:
    """Apply a padding of schedules/tile_padding.py (or none) to a fresh schedule of the task."""
    if padding is not None:
        sch.pad_einsum(sch.get_sblock(padding[0]), padding[1])


def _planned_schedule(mod, target, machine: Machine, options: Options, name: str, started: float, padding=None):
    """(schedule or None, KernelResult): the task's design spaces replayed with the tile plans' decisions, on
    the padded domain when `padding` (block, factors, note) is given."""
    if padding is not None:
        padded = tvm.s_tir.Schedule(mod)
        _pad(padded, padding)
        ctx = _context(padded.mod, target, name)
    else:
        ctx = _context(mod, target, name)
    spaces = list(ctx.generate_design_space())
    if padding is not None and any(_tensorized(space) for space in spaces):
        return None, KernelResult(name, False, -1, "a tensorized product is not padded")
    if any(_tensorized(space) for space in spaces) and _packed_product(mod):
        sch, note = _tensorized_schedule(mod, target, spaces, list(ctx.space_generator.postprocs))
        if sch is not None:
            return sch, KernelResult(name, True, -1, note, time.perf_counter() - started)
    if any(_tensorized(space) for space in spaces):
        # the plans tile and vectorise plain blocks: any other product takes the spaces without the intrinsic
        # rules (TVM's NEON dot-product intrinsics leave the weight tile's strides free, so on a convolution's
        # unpacked weights they would build and compute the wrong sums)
        ctx = _context(ctx.mod, target, name, intrinsics=False)
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
        _pad(sch, padding)
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
        note = "; ".join(p.note for p in decider.plans) + (f" {padding[2]}" if padding is not None else "")
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
