"""The Python API behind `compile.py`: ONNX (or a registered model) -> Relax -> fused -> tuned -> .so + sidecar.

    from compiler.driver import CompileOptions, compile_model
    result = compile_model(CompileOptions(target="rpi4", verify=True))
"""
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from compiler import paths, targets, zoo
from compiler.artifact import linker, sidecar as artifact
from compiler.artifact.runtime import read_sidecar
from compiler.device import verify
from compiler.device.farm import check_key, parse_tracker
from compiler.device.session import describe_device
from compiler.errors import UserError
from compiler.frontend import onnx_model, quantize
from compiler.output import say
from compiler.passes import explain as explain_module, pipeline
from compiler.tuning import database as tuning_db, guard, lock, tune as tuning


@dataclass
class CompileOptions:
    target: str = "rpi4"
    model: Optional[str] = None  # an ONNX file or a name of compiler.zoo.MODELS; None means attendnext
    input_shapes: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    out: Optional[str] = None  # default dist/<model>-<target>
    weights: Optional[str] = None  # AttendNeXt state dict
    fusion: str = "stock"
    layout: Optional[str] = None  # "plain" (as imported), "prepack" (as the tuned kernels chose); None: the
    # layout of this CPU's own database if it has one, else pipeline.DEFAULT_LAYOUT
    linker: Optional[str] = None  # "gnu" or "zig"; default: gnu if installed
    database: Optional[str] = None  # default tuning_logs/<target>/<model> when it exists
    allow_emulated_logs: bool = False
    allow_stale_database: bool = False  # apply a database tuned under another pipeline fingerprint
    tune: Optional[tuning.TuneOptions] = None  # tune before building
    verify: bool = False
    tracker: Optional[str] = None
    tolerance: Optional[float] = None  # relative error --verify allows; None: FLOAT_TOLERANCE, or
    # QUANTIZED_TOLERANCE (of the largest output value) for a quantized model
    quantize: Optional[str] = None  # "int8": quantize the float model first (compiler/frontend/quantize.py)
    calibration: Optional[str] = None  # with quantize: a folder of .npy arrays or images; None: seeded random
    dump_ir: Optional[str] = None
    vector_exp: bool = True  # False: exp/sigmoid/erf through libm, one call per lane (bench/fast_math.py)
    # Kernels no database record covers get the target's default schedule (schedules/defaults.py); False
    # leaves them as TVM's bare loop nests (one thread), for comparison.
    default_schedules: bool = True
    # False: kernels that reduce rows take MetaSchedule's generic space like the rest (schedules/row_reductions.py),
    # for comparison (bench/row_reductions.py).
    row_reductions: bool = True


FLOAT_TOLERANCE = 1e-4
QUANTIZED_TOLERANCE = 2e-2  # one step of an int8 output's scale, where rounding ties may fall either way


@dataclass
class CompileResult:
    library: Path
    sidecar: dict
    comparisons: List = field(default_factory=list)
    verified: Optional[bool] = None
    quality: Optional[object] = None  # a model quantized here: compiler.device.quality.Quality, when verified


def prepare_onnx(options: CompileOptions) -> onnx_model.OnnxModel:
    """The user's ONNX file, or a registered model (compiler.zoo; AttendNeXt by default) exported to
    build/<name>.onnx, so that its artifact and tuning database are named after it."""
    name = options.model or "attendnext"
    if name not in zoo.MODELS and _is_onnx_path(name):
        if options.weights:
            raise UserError("--weights loads AttendNeXt weights: with --model, put the weights in the ONNX file")
        return onnx_model.load(name, options.input_shapes)
    zoo.lookup(name)  # an unknown name: the error lists the registered ones
    if options.weights and name != "attendnext":
        raise UserError(f"--weights loads AttendNeXt weights; {name} is built with seeded weights: drop --weights "
                        "or export your trained model to ONNX and pass the file")
    # Waits until needed: the export loads PyTorch, which a command refusing bad input must not.
    from compiler.frontend.onnx_export import export_attendnext, export_registered

    path = paths.exported_onnx(name)
    if name == "attendnext":
        export_attendnext(path, weights=options.weights)
    else:
        export_registered(name, path)
    return onnx_model.load(path, options.input_shapes)


def prepare_model(options: CompileOptions, preset) -> Tuple[onnx_model.OnnxModel, Optional[quantize.Agreement], Path]:
    """The model to build: prepare_onnx's, or with `--quantize int8` its QDQ model (build/int8-<type>/
    <name>-int8.onnx, so that its artifact and databases are named <name>-int8) and its agreement; and the float
    model it came from."""
    model = prepare_onnx(options)
    if options.quantize is None:
        if options.calibration:
            raise UserError("--calibration calibrates --quantize int8: add --quantize int8 or drop --calibration")
        return model, None, model.path
    if options.quantize not in quantize.SCHEMES:
        raise UserError(f"--quantize {options.quantize} is not a scheme this compiler has: use {', '.join(quantize.SCHEMES)}")
    if onnx_model.is_quantized(model.proto):
        raise UserError(f"{model.path.name} is already quantized (it has QuantizeLinear / DequantizeLinear): "
                        "drop --quantize to build it as it is")
    activation = quantize.activation_type(preset)
    path = paths.quantized_onnx(model.name, activation)
    say(f"      quantizing {model.name} to int8 ({activation} activations, per-channel int8 weights) with "
        f"ONNX Runtime's quantizer")
    agreement = quantize.quantize(model, path, activation, options.calibration)
    say(f"      {agreement.describe()}")
    return onnx_model.load(path, {spec.name: spec.shape for spec in model.inputs}), agreement, model.path


def _is_onnx_path(model: str) -> bool:
    """An existing file or folder, or anything spelled like a path (a separator or a suffix), not a model name."""
    path = Path(model)
    return path.exists() or path.suffix != "" or len(path.parts) > 1


def explain(options: CompileOptions) -> str:
    """`compile.py --explain`: what custom fusion changes for this model and target."""
    preset = targets.load(options.target)
    model = prepare_onnx(options)
    return explain_module.explain(pipeline.import_onnx(model), preset.tvm_target())


@dataclass
class BuildPlan:
    """Everything a build needs once the graph passes ran: the final build and every tuning checkpoint
    (compiler/tuning/checkpoint.py) apply a database to the same tunable module through this one path."""

    mod: object  # the tunable module (phase 1)
    preset: object
    model: object
    options: CompileOptions
    fingerprint: dict
    kernels: list
    outputs: list
    link: object
    started: float
    agreement: Optional[quantize.Agreement] = None  # a model quantized by --quantize: its agreement with float

    def build(self, database, records, out_dir: Path, quiet: bool = False, verdicts: bool = True) -> Path:
        """Apply `records` (MetaSchedule database of the TuningDatabase `database`; both None: untuned) but
        those that lost to their default schedule in the model (guard.py; `verdicts` False: every record),
        finish, build and write the artifact into `out_dir`; returns the library path."""
        import tvm

        options, preset, target = self.options, self.preset, self.preset.tvm_target()
        note = (lambda message: None) if quiet else say
        dump = None if quiet else options.dump_ir  # a checkpoint does not overwrite the final build's IR dumps
        mod, tuned, lost = self.mod, [], {}
        if records is not None:
            mod = pipeline.apply_database(mod, target, records, dump)
            applied = pipeline.scheduled_kernel_names(mod)
            lost = guard.kept_default(database.path, self.model.sha256) if verdicts else {}
            lost = {name: why for name, why in lost.items() if name in applied}
            if lost:
                mod = pipeline.unschedule(mod, self.mod, lost)
            tuned = pipeline.scheduled_kernel_names(mod)
            if options.database and self.kernels and not applied and not quiet:
                made_for = database.provenance.get("model_sha256", "unknown")[:12]
                if made_for == self.model.sha256[:12]:
                    raise UserError(f"--database {options.database} holds no successful measurement of {self.model.name} "
                                    "(every candidate failed: see the failures tuning printed); tune it again with a "
                                    "larger --session-timeout, or pass --database none to build untuned")
                raise UserError(f"--database {options.database} has no record for any of the {len(self.kernels)} "
                                f"kernels of {self.model.name} (ONNX sha256 {self.model.sha256[:12]}): it was tuned "
                                f"for another model ({made_for}); give this model's database, or tune one with --tune")
            note(f"      tuning database {database.path} (CPU {database.describe_cpu()}): "
                 f"{len(tuned)} of {len(self.kernels)} kernels tuned"
                 + (f"; {len(lost)} keep their default schedule, cheaper in the model than their record "
                    f"({guard.CHOICES})" if lost else ""))
        else:
            note(f"      no tuning database for {preset.name}/{tuning_db.cpu_of(preset)}/{self.model.name}")
        defaulted = []
        if options.default_schedules and len(tuned) < len(self.kernels):
            mod, defaulted, failed = pipeline.apply_default_schedules(mod, target, dump,
                                                                           row_reductions=options.row_reductions)
            note(f"      default schedules for {len(defaulted)} of {len(self.kernels)} kernels"
                 + (f" ({len(failed)} left as plain loop nests: {', '.join(failed[:3])}"
                    f"{' ...' if len(failed) > 3 else ''})" if failed else "")
                 + ("; --tune measures faster ones" if not tuned else ""))
        mod = pipeline.finish_layout(mod, target, options.layout, dump)
        note(f"[3/4] building for {preset.name} ({target.attrs.get('mcpu', 'generic')})")
        executable = pipeline.build(mod, target, dump, options.vector_exp)
        note(f"[4/4] linking with {self.link.name} into {out_dir}")
        fields = dict(
            model=self.model.name, onnx_sha256=self.model.sha256,
            inputs=[spec.as_dict() for spec in self.model.inputs],
            outputs=self.outputs,
            target_name=preset.name, target=preset.target, fusion=options.fusion, tvm_version=tvm.__version__,
            layout=options.layout,
            tuning=artifact.TuningInfo(database=str(database.path) if database else None,
                                       cpu=database.cpu if database else None, pipeline=self.fingerprint["hash"],
                                       emulated=bool(database and database.emulated),
                                       measured_by=(database.provenance.get("measured_by", "device")
                                                    if database else None),
                                       kernels_total=len(self.kernels), kernels_tuned=len(tuned),
                                       kernels_default=len(defaulted), default_over_record=lost),
            build_seconds=round(time.time() - self.started, 2),
            quantization=self.agreement.as_dict() if self.agreement else None,
        )
        # a model quantized here ships its QDQ model too, for ONNX Runtime runs of the same int8 model
        extra = {self.model.path.name: self.model.path} if self.agreement else {}
        return artifact.write(out_dir, executable, self.link, fields, extra)


def compile_model(options: CompileOptions) -> CompileResult:
    started = time.time()
    preset = targets.load(options.target)
    _check_no_board(options, preset)
    link = linker.find_linker(preset.cross_triple, options.linker)  # fail before the slow work
    if options.tracker:  # a wrong or unreachable tracker fails before the build, not after it
        host, port = parse_tracker(options.tracker)
        if options.verify and options.tune is None:
            check_key(host, port, preset.rpc_key)
    model, agreement, float_path = prepare_model(options, preset)
    tolerance = options.tolerance if options.tolerance is not None else (
        QUANTIZED_TOLERANCE if onnx_model.is_quantized(model.proto) else FLOAT_TOLERANCE)
    out_dir = Path(options.out or paths.artifact_dir(model.name, preset.name))
    artifact.check_output_dir(out_dir)
    target = preset.tvm_target()
    key = tuning_db.DatabaseKey(preset, model.name, options.fusion, options.layout or pipeline.DEFAULT_LAYOUT)
    if options.layout is None:
        key = key.with_layout(tuning_db.preferred_layout(key, explicit=options.database))
        options = dataclasses.replace(options, layout=key.layout)
    board_less = options.tune is not None and options.tune.no_board
    if options.tune is not None:
        tuning.check_options(options.tune, can_checkpoint=True)  # a bad budget is refused before anything is made
        options = _seeded_from_board_less(options, key)
    if options.tune is not None and not options.tune.wait_for_database:  # another run writes it: refuse now
        lock.refuse_if_held(tuning_db.for_build(key, options.database, board_less).path)
    say(f"[1/4] importing {model.path.name} into Relax")
    mod = pipeline.import_onnx(model)
    say(f"[2/4] graph passes (fusion: {options.fusion}, weights: {options.layout})")
    mod = pipeline.tunable_module(mod, target, options.fusion, options.dump_ir, options.layout)
    kernels = pipeline.kernel_names(mod)
    outputs = pipeline.output_specs(mod, model.output_names, model.inputs)  # an unknown size fails here, early
    fingerprint = pipeline.fingerprint(options.fusion, options.layout)
    plan = BuildPlan(mod, preset, model, options, fingerprint, kernels, outputs, link, started, agreement)
    if options.tune is not None:
        tune_database = tuning_db.for_build(key, options.database, board_less)
        say(f"      tuning {model.name} for {preset.name} (CPU {tuning_db.cpu_of(preset)}): budget "
            f"{options.tune.trials} trials, database {tune_database.path}")
        judged_here = options.tune.judge_records and preset.is_host and not options.tracker  # judged by time here
        summary = tuning.tune(mod, preset, tune_database, options.tune, model.sha256, fingerprint,
                              build_checkpoint=lambda records, out: _checkpoint_build(
                                  plan, tune_database, records, out, judged=judged_here),
                              tracker=options.tracker)
        say(tuning.describe(summary))
        if (judged_here or (board_less and options.tune.judge_records)) and guard.due(tune_database):
            _judge_records(plan, tune_database, board_less)
    database = tuning_db.select(key, options.database, options.allow_emulated_logs, options.allow_stale_database,
                                fingerprint)
    library = plan.build(database, database.load() if database is not None else None, out_dir)

    result = CompileResult(library=library, sidecar=read_sidecar(str(library)))
    say(f"wrote {library} and {library.with_suffix('.json').name} ({time.time() - started:.1f} s)")
    if options.verify:
        _verify(result, plan, float_path, tolerance)
    return result


def _verify(result: CompileResult, plan: "BuildPlan", float_path: Path, tolerance: float) -> None:
    """The library on its device against ONNX Runtime's run of the same model. A model quantized here with int8
    activations is judged by its quality against the float model beside ONNX Runtime int8's (their int8 roundings
    differ, compiler/device/quality.py); with uint8 activations ONNX Runtime runs it in integer kernels throughout,
    and the outputs must match them within `tolerance`, as for any other model."""
    preset, options, library = plan.preset, plan.options, result.library
    device = "the host" if preset.is_host and not options.tracker else (
        f"'{preset.rpc_key}' from tracker {options.tracker}" if options.tracker else "the emulated Raspberry Pi")
    say(f"verifying on {device} against ONNX Runtime")
    result.comparisons = verify.verify(library, plan.model, preset, options.tracker)
    judged_by_quality = plan.agreement is not None and plan.agreement.activation_type == "int8"
    for c in result.comparisons:
        status = ("(ONNX Runtime's int8 rounding; int8 activations are judged against float, below)" if judged_by_quality
                  else "ok" if c.passed(tolerance) else f"FAILED (tolerance {tolerance:g})")
        print(f"verify {c.name}: max abs error {c.max_abs_error:.3g}, relative error {c.rel_error:.3g} {status}")
    result.verified = all(c.passed(tolerance) for c in result.comparisons)
    if plan.agreement is not None:
        from compiler.device import quality

        spec = plan.model.inputs[0]
        inputs = quantize.calibration_inputs(spec, options.calibration) if options.calibration else None
        result.quality = quality.measure(library, float_path, plan.model, preset, options.tracker, inputs,
                                         options.calibration or quality.SEEDED)
        print(f"verify {result.quality.describe()}")
        result.verified = result.quality.passed() if judged_by_quality else result.verified


def _checkpoint_build(plan: BuildPlan, database, records, out: Path, judged: bool) -> Path:
    """A checkpoint's library: the records so far, judged first against their default schedules (on this machine),
    so that the curve of a run stays at or below the default schedules' latency, up to noise."""
    if judged and guard.due(database):
        _judge_records(plan, database, board_less=False, records=records, locked=True)
    return plan.build(database, records, out, quiet=True)


def _judge_records(plan: BuildPlan, database, board_less: bool, records=None, locked: bool = False) -> None:
    """After a tune on this machine or with no board: each kernel's record against its default schedule, in
    the model (time here, or the cycle estimate); the losers keep their default schedule in every build of this
    database (compiler/tuning/guard.py)."""
    import tempfile

    import numpy as np

    records = records if records is not None else database.load()
    kernels = pipeline.scheduled_kernel_names(pipeline.apply_database(plan.mod, plan.preset.tvm_target(), records))
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, spec.shape).astype(spec.dtype) for spec in plan.model.inputs]
    build = lambda with_records, out: plan.build(database, records if with_records else None, out, quiet=True,
                                                 verdicts=False)
    # a checkpoint runs inside the tuning run, which holds the database's write lock already
    with tempfile.TemporaryDirectory(prefix="dcac-guard-") as work, \
            (contextlib.nullcontext() if locked else database.writing(wait=True)):
        if board_less:
            measure, device = guard.cycle_estimate(str(plan.preset.target.get("mcpu"))), database.provenance["device"]
        else:
            measure, device = guard.host_time(), describe_device(None)
        guard.guard_run(database, plan.model.sha256, build, kernels, inputs, Path(work), device, measure)


def _check_no_board(options: CompileOptions, preset) -> None:
    """--no-board ranks candidates by the cycle estimate of an ARM preset's core, with no device at all."""
    if options.tune is None or not options.tune.no_board:
        return
    if options.tracker:
        raise UserError("--no-board tunes without a device and --tracker names boards: drop --no-board to measure "
                        "on the boards (they start from the board-less database when there is one)")
    if preset.is_host:
        raise UserError(f"--no-board is for ARM presets; '{preset.name}' is this machine: tune without --no-board, "
                        "measuring here")


def _seeded_from_board_less(options: CompileOptions, key) -> CompileOptions:
    """Tuning on real boards starts from the schedules tuned with no board, when there are some and no other seed
    was given: each is measured on the board first, like every seed."""
    board_less = tuning_db.TuningDatabase(key.board_less_folder())
    if not options.tracker or options.tune.seed_database or not board_less.exists():
        return options
    say(f"      seeding from the database tuned with no board: {paths.shown(board_less.path)}")
    return dataclasses.replace(options, tune=dataclasses.replace(options.tune, seed_database=str(board_less.path)))
