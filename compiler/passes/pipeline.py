"""The compiler's passes, in numbered phases, from imported Relax to a VM executable.

Phase 1 (graph: fold, custom fusion, legalize, stock fusion) yields the *tunable module*: MetaSchedule
extracts its tasks from it, and a tuning database is applied to exactly it. Running the same phase 1
before tuning and before building is what makes workload keys match; otherwise nothing is applied,
silently (docs/tvm-notes.md). Phase 2 applies the database, 2a gives every kernel left without a schedule
the target's default schedule (schedules/defaults.py), 2b folds prepacked weight transforms into the
constants; phase 3 lowers to the VM with TVM's own CPU lists.
"""
import os
from typing import Optional

import schedules
from compiler.errors import UserError
from compiler.frontend import shape_binding
from compiler.passes import (dot_products, fast_math, fusion as fusion_table, integer_kernels, lookup_tables,
                             qlinear_ops)


def import_onnx(model, integer: bool = True):
    """ONNX -> Relax with the validated static input shapes (bound into the graph first, so the shape
    arithmetic of a dynamic axis folds away: compiler/frontend/shape_binding.py); weights become constants.
    A QDQ model's convolutions and matrix products become integer kernels (compiler/passes/integer_kernels.py)
    and its quantized sigmoid / SiLU chains lookup tables (compiler/passes/lookup_tables.py), unless `integer`
    is False (the importer's float graph, for comparison)."""
    from tvm.relax.frontend.onnx import from_onnx

    from compiler.frontend.onnx_model import is_quantized
    from compiler.output import say

    shapes = {spec.name: list(spec.shape) for spec in model.inputs}
    dtypes = {spec.name: spec.dtype for spec in model.inputs}
    proto = shape_binding.bind(model.proto, {spec.name: spec.shape for spec in model.inputs})
    try:
        mod = from_onnx(proto, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as err:  # the importer raises bare TypeErrors/ValueErrors from deep inside
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"TVM's ONNX importer rejected {model.path.name}: {lines[-1] if lines else type(err).__name__}; "
                        "simplify the graph (static shapes, constant folding) before compiling") from None
    if not integer or not is_quantized(model.proto):
        return mod
    mod, integer, left = integer_kernels.rewrite(mod)
    say(f"      integer kernels: {integer} convolutions and matrix products on int8 values"
        + (f"; {left} left float (both operands activations, or weights not symmetric int8)" if left else ""))
    mod, tables = lookup_tables.rewrite(mod)
    if tables:
        say(f"      lookup tables: {tables} quantized element-wise chains (sigmoid, SiLU) read from 256-entry tables")
    mod, fused = qlinear_ops.rewrite(mod)
    if any(fused.values()):
        say(f"      quantized additions, products and softmaxes: {fused['add']}, {fused['multiply']} and "
            f"{fused['softmax']} computed on their 8-bit operands as ONNX Runtime's QLinearAdd, QLinearMul and "
            "QLinearSoftmax")
    return mod


LAYOUTS = ("plain", "prepack")
DEFAULT_LAYOUT = "prepack"  # chosen by measurement: docs/performance.md


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"unknown weight layout '{layout}': choose one of {', '.join(LAYOUTS)}")


def graph_passes(fusion: str, layout: str = DEFAULT_LAYOUT, target=None, rejections: Optional[list] = None) -> list:
    """Phase 1: the passes that decide the kernels (and so the tuning tasks).

    TVM's CPU legalization list (LegalizeOps .. FuseTIR) is used as TVM defines it; the project adds its
    fusion patterns before it and its schedule annotations after it. `layout="prepack"` marks weights
    layout-free, so MetaSchedule's tiling may choose each convolution's weight layout."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    _check_layout(layout)
    target = target or tvm.target.Target.current() or tvm.target.Target({"kind": "llvm", "num-cores": 1})
    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        *dot_products.passes(target),
        *fusion_table.passes(fusion, rejections),
        *cpu_pipeline.legalize_passes(target),
        *fusion_table.schedule_passes(fusion),
        *([relax.transform.AttachAttrLayoutFreeBuffers()] if layout == "prepack" else []),
        relax.transform.DeadCodeElimination(),
    ]


def post_tuning_passes(layout: str) -> list:
    """Phase 2b, after the database is applied: a prepacked build splits each kernel's weight transform
    into its own function and folds it on the constant weights, so the shipped library holds the
    weights already in the layout the tuned kernels read (no transform step on the device)."""
    from tvm import relax

    _check_layout(layout)
    if layout != "prepack":
        return []
    return [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination()]


def lowering_passes(target) -> list:
    """Phase 3: Relax dataflow to VM code: TVM's own CPU lists, unchanged. (Imported from the module that
    defines them: TVM 0.27's `relax.pipeline.dataflow_lower_passes` dispatches to a name its cpu_generic
    package does not export.)"""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    return [*cpu_pipeline.dataflow_lower_passes(target), *cpu_pipeline.finalize_passes(target)]


def fingerprint(fusion: str, layout: str = DEFAULT_LAYOUT) -> dict:
    """What decides the kernels a database's records must match: phase-1 pass names, fusion mode and
    patterns, schedule rules, weight layout and TVM version, with a short hash of all of it."""
    import hashlib
    import json

    import tvm

    with tvm.target.Target({"kind": "llvm", "num-cores": 1}):
        names = [p.info.name for p in graph_passes(fusion, layout)]
    fields = {"passes": names, "fusion": fusion, "layout": layout, "tvm_version": tvm.__version__}
    if fusion == "dcac":
        # Waits until needed: dcac_patterns loads TVM's pattern language, and a command refusing bad input must not.
        from compiler.passes import dcac_patterns

        fields["patterns"] = [row[0] for row in dcac_patterns.TABLE]
        fields["schedule_rules"] = sorted(f"{pattern}:{','.join(blocks)}={rule}"
                                          for (pattern, blocks), rule in schedules.RULES.items())
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"hash": digest, **fields}


def _run(passes, mod, target, dump_dir: Optional[str], phase: str):
    import tvm

    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes, name=phase)(mod)
    _dump(mod, dump_dir, phase)
    return mod


def _dump(mod, dump_dir: Optional[str], phase: str) -> None:
    if dump_dir:
        try:
            os.makedirs(dump_dir, exist_ok=True)
            with open(os.path.join(dump_dir, f"{phase}.py"), "w") as handle:
                handle.write(mod.script())
        except OSError as err:
            raise UserError(f"--dump-ir {dump_dir} cannot be written ({err.strerror}): give a folder "
                            "you can write") from None


def tunable_module(mod, target, fusion: str = "stock", dump_dir: Optional[str] = None,
                   layout: str = DEFAULT_LAYOUT, rejections: Optional[list] = None):
    """Phase 1 on an imported module: what tuning extracts tasks from and what a database applies to."""
    return _run(graph_passes(fusion, layout, target, rejections), mod, target, dump_dir, "1-graph")


def kernel_names(mod) -> list:
    import tvm

    return sorted(gv.name_hint for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc))


def scheduled_kernel_names(mod) -> list:
    """Kernels that carry a tuned schedule (MetaScheduleApplyDatabase marks them tirx.is_scheduled)."""
    import tvm

    return sorted(gv.name_hint for gv, func in mod.functions.items()
                  if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None
                  and bool(func.attrs.get("tirx.is_scheduled", False)))


def apply_database(mod, target, database, dump_dir: Optional[str] = None):
    """Phase 2: replace each kernel that has a record in `database` by its best tuned schedule."""
    import tvm
    from tvm import relax

    with target, database, tvm.transform.PassContext(opt_level=3):
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    _dump(mod, dump_dir, "2-tuned")
    return mod


def unschedule(mod, tunable, names) -> object:
    """`mod` with the kernels `names` back as they were in the tunable module (no schedule yet), so that the
    default schedules take them: a record that lost to its default schedule (compiler/tuning/guard.py)."""
    mod = mod.clone()
    for gvar in list(mod.functions):
        if gvar.name_hint in names:
            mod[gvar] = tunable[gvar.name_hint]
    return mod


def apply_default_schedules(mod, target, dump_dir: Optional[str] = None, row_reductions: bool = True):
    """Phase 2a: every kernel still without a schedule (no database, or none of its records matched) gets the
    deterministic default schedule for `target` (schedules/defaults.py). Returns (module, kernels scheduled here,
    kernels the defaults could not schedule, left as bare loop nests)."""
    # Waits until needed: the default schedules load MetaSchedule, which a command refusing bad input must not.
    from schedules import defaults

    schedules.register()  # the DC-AC rules take part in the design spaces of the kernels they annotate
    before = set(scheduled_kernel_names(mod))
    database, results = defaults.default_database(mod, target, defaults.Options(row_reductions=row_reductions),
                                                  skip=before)
    mod = apply_database(mod, target, database, dump_dir=None)
    _dump(mod, dump_dir, "2a-default")
    made = sorted(set(scheduled_kernel_names(mod)) - before)
    return mod, made, sorted(result.name for result in results if not result.ok)


def finish_layout(mod, target, layout: str, dump_dir: Optional[str] = None):
    """Phase 2b (see post_tuning_passes); a no-op for the plain layout."""
    passes = post_tuning_passes(layout)
    return _run(passes, mod, target, dump_dir, "2b-prepacked") if passes else mod


def build(mod, target, dump_dir: Optional[str] = None, vector_exp: bool = True):
    """Phase 3 and code generation: a VM executable for `target`, with exp/sigmoid/erf as vector arithmetic
    (compiler/passes/fast_math.py) unless `vector_exp` is False (libm, for comparison)."""
    import tvm

    if vector_exp:
        fast_math.install()
    elif fast_math.installed():
        raise RuntimeError("the vector exp lowering is already installed in this process: build the libm "
                           "variant first (or in another process)")
    lowered = _run(lowering_passes(target), mod, target, dump_dir, "3-lower")
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(lowered, target=target, relax_pipeline=tvm.transform.Sequential([]))


def output_specs(mod, names, inputs=()) -> list:
    """Names, static shapes and dtypes of main's outputs, for the sidecar, read from `mod` after its input
    shapes were bound and its graph passes ran; a dimension still unknown then is a UserError naming it.
    `inputs` (TensorSpecs) only word the message."""
    import tvm
    from tvm import relax

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for name, info in zip(names, infos):
        dims = list(info.shape) if info.shape is not None else ["?"] * max(info.ndim, 0)
        unknown = [(i, d) for i, d in enumerate(dims) if not isinstance(d, (int, tvm.tirx.IntImm))]
        if unknown or info.ndim < 0:
            bound = " ".join(f"{s.name}={','.join(map(str, s.shape))}" for s in inputs)
            which = (f"dimension{'s' if len(unknown) > 1 else ''} "
                     + ", ".join(str(i) if d == "?" else f"{i} ({d})" for i, d in unknown)) if unknown else "rank"
            raise UserError(f"output '{name}' has shape ({', '.join(map(str, dims))}) with the inputs bound to "
                            f"{bound}: its {which} depend{'' if len(unknown) > 1 else 's'} on values computed at "
                            "run time; export the model with static shapes (torch.onnx.export without "
                            "dynamic_shapes) or make each output size follow from the input shapes")
        specs.append({"name": name, "shape": [int(d) for d in dims], "dtype": str(info.dtype)})
    return specs
