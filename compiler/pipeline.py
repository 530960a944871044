"""The compiler's passes, in numbered phases, from imported Relax to a VM executable.

Phase 1 (graph: fold, custom fusion, legalize, stock fusion) yields the *tunable module*: MetaSchedule
extracts its tasks from it, and a tuning database is applied to exactly it. Running the same phase 1
before tuning and before building is what makes workload keys match; otherwise nothing is applied,
silently (stack.md). Phase 2 applies the database; phase 3 lowers to the VM.
"""
import os
from typing import Optional

from . import fusion as fusion_table
from .errors import UserError


def import_onnx(model):
    """ONNX -> Relax with the validated static input shapes; weights become constants."""
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {spec.name: list(spec.shape) for spec in model.inputs}
    dtypes = {spec.name: spec.dtype for spec in model.inputs}
    try:
        return from_onnx(model.proto, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as err:  # the importer raises bare TypeErrors/ValueErrors from deep inside
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"TVM's ONNX importer rejected {model.path.name}: {lines[-1] if lines else type(err).__name__}; "
                        "simplify the graph (static shapes, constant folding) before compiling") from None


def graph_passes(fusion: str) -> list:
    """Phase 1: the passes that decide the kernels (and so the tuning tasks)."""
    from tvm import relax

    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        *fusion_table.passes(fusion),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        *fusion_table.schedule_passes(fusion),
        relax.transform.DeadCodeElimination(),
    ]


def lowering_passes() -> list:
    """Phase 3: Relax dataflow to VM code (the CPU backend's lowering and finalisation, unchanged)."""
    from tvm import relax

    return [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]


def _run(passes, mod, target, dump_dir: Optional[str], phase: str):
    import tvm

    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes, name=phase)(mod)
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        with open(os.path.join(dump_dir, f"{phase}.py"), "w") as handle:
            handle.write(mod.script())
    return mod


def tunable_module(mod, target, fusion: str = "stock", dump_dir: Optional[str] = None):
    """Phase 1 on an imported module: what tuning extracts tasks from and what a database applies to."""
    return _run(graph_passes(fusion), mod, target, dump_dir, "1-graph")


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
    if dump_dir:
        with open(os.path.join(dump_dir, "2-tuned.py"), "w") as handle:
            handle.write(mod.script())
    return mod


def build(mod, target):
    """Phase 3 and code generation: a VM executable for `target`."""
    import tvm

    lowering = tvm.transform.Sequential(lowering_passes(), name="3-lower")
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=target, relax_pipeline=lowering)


def output_specs(mod, names) -> list:
    """Names, static shapes and dtypes of main's outputs, for the sidecar."""
    from tvm import relax

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    return [{"name": name, "shape": [int(d) for d in info.shape], "dtype": str(info.dtype)}
            for name, info in zip(names, infos)]
