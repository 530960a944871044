"""`python -m compiler.bench`: AttendNeXt batch 1, TVM (shipped tuning database) against ONNX Runtime,
PyTorch eager and untuned TVM, measured side by side in one run.

Engines are measured in interleaved rounds (a few runs of each, again and again) so that load from other
processes on a shared machine falls on all of them alike; every engine gets the same thread count. The
figures that matter are the ratios to ONNX Runtime. On the emulated Pi the command only proves it works:
its output is labelled as emulated and is not a performance figure.
"""
import tempfile
from pathlib import Path

from compiler import targets
from compiler.artifact.runtime import Model
from compiler.bench import instructions, int8 as int8_bench, models as bench_models
from compiler.bench.kernel_profile import profile
from compiler.bench.measure import (
    NO_TORCH_ON_DEVICE,
    _coverage_note,
    announce_emulation,
    bench_image,
    database_summary,
    device_label,
    device_onnxruntime_timer,
    interleaving,
    measure,
    onnx_path,
    publish,
    side_by_side,
    table,
    tvm_timer,
)
from compiler.device.session import describe_device, open_session
from compiler.driver import CompileOptions, compile_model
from compiler.errors import UserError
from compiler.output import say
from compiler.passes.pipeline import DEFAULT_LAYOUT, LAYOUTS
from compiler.tuning import database as tuning_db

EXAMPLES = [
    "python -m compiler bench --target host --json bench/results/host-$(cpu).json   # AttendNeXt, this CPU's database",
    "python -m compiler bench --target host --profile                             # ... and where the time goes",
    "python -m compiler bench --target host --models all --json bench/results/models-host.json",
    "python -m compiler bench --target rpi4 --models all --tracker 10.0.0.5:9190  # your boards",
    "python -m compiler bench --target rpi4 --count-instructions --models all --json bench/results/instructions-rpi4.json"
    "   # no board: instruction-count proxy in the emulated Pi",
    "python -m compiler bench --target host --quantize int8 --models all --json bench/results/int8-host.json",
]


def add_arguments(parser) -> None:
    parser.add_argument("--target", default="host")
    parser.add_argument("--tracker", help="HOST:PORT of a tracker with a real board (aarch64 presets); "
                                          "without it an aarch64 preset runs on the emulated Pi (not a performance figure)")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per engine (median of these)")
    parser.add_argument("--json", help="write the table as JSON here (and Markdown beside it)")
    parser.add_argument("--fusion", default="stock", choices=["stock", "dcac"],
                        help="fusion mode of the TVM builds (its database: tuning_logs/<target>/attendnext[-dcac])")
    parser.add_argument("--layout", choices=list(LAYOUTS),
                        help=f"weight layout of the TVM builds (default: as compile.py, the layout of this CPU's "
                             f"database, else {DEFAULT_LAYOUT})")
    parser.add_argument("--database", help="apply this tuning database folder on purpose (default: this CPU's)")
    parser.add_argument("--skip-untuned", action="store_true", help="leave out TVM with default schedules")
    parser.add_argument("--models", help="compare registered models instead of AttendNeXt alone: 'all' (AttendNeXt "
                                         "and its paper's four baselines) or a comma list (compiler/bench/models.py)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the time goes: TVM per kernel beside ONNX Runtime per operator "
                             "(host only; JSON key 'profile')")
    parser.add_argument("--count-instructions", action="store_true",
                        help="aarch64 presets, no board: count aarch64 instructions and simulated cache misses per "
                             "inference of TVM and ONNX Runtime in the emulated Pi (a proxy, not a latency)")
    parser.add_argument("--cache-model", choices=["on", "off"], default="on",
                        help="with --count-instructions: also simulate the preset CPU's L1/L2 (slower)")
    parser.add_argument("--per-kernel", action="store_true",
                        help="with --count-instructions: also count every kernel of the TVM library")
    parser.add_argument("--quantize", choices=["int8"],
                        help="int8 against float: TVM and ONNX Runtime on each model's float file and on its QDQ model "
                             "(compile.py --quantize int8), timed on the host, or counted with --count-instructions")


def run(args) -> int:
    """Measure, print the table; with --json also write the results file (and Markdown, PNG) beside it."""
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: give at least 1 run per engine (50 or more for a median worth quoting)")
    preset = targets.load(args.target)
    if preset.is_host and args.tracker:
        raise UserError("--tracker measures on a board: use it with an aarch64 preset, e.g. --target rpi4")
    if args.profile and not preset.is_host:
        raise UserError("--profile instruments the library in this process: use it with --target host")
    if args.quantize and (args.tracker or args.profile or args.database or args.fusion != "stock" or args.layout):
        raise UserError("--quantize int8 builds each model as compile.py does, float and int8: leave out --tracker, "
                        "--profile, --database, --fusion and --layout")
    if args.quantize and not args.count_instructions:
        int8_bench.publish_report(int8_bench.run(preset, args), args.json)
        return 0
    if args.count_instructions:
        if args.tracker or args.profile:
            raise UserError("--count-instructions counts in the emulated Pi: leave out --tracker and --profile")
        instructions.publish_report(instructions.run(preset, args), args.json)
        return 0
    if args.models:
        if args.profile or args.database or args.fusion != "stock":
            raise UserError("--models builds each model with its own database and stock fusion: leave out "
                            "--profile, --database and --fusion")
        bench_models.publish(bench_models.run(preset, args), args.json)
    else:
        publish(run_host(preset, args) if preset.is_host else run_device(preset, args), args.json)
    return 0


def _builds(preset, args) -> dict:
    """The TVM artifacts to measure: this CPU's database (and untuned unless skipped), in a scratch folder.
    Each row's label names the CPU its database was tuned for."""
    work = Path(tempfile.mkdtemp(prefix="dcac-bench-"))
    shipped = compile_model(CompileOptions(target=preset.name, fusion=args.fusion, layout=args.layout,
                                           database=args.database, out=str(work / "tuned")))
    common = dict(target=preset.name, fusion=args.fusion, layout=shipped.sidecar["layout"])
    tuning = shipped.sidecar["tuning"]
    label = (f"no database for {preset.name}/{tuning_db.cpu_of(preset)}" if not tuning["database"]
             else f"database tuned with no board for {tuning['cpu']}" if tuning.get("measured_by") == "cycle-estimate"
             else f"database tuned for {tuning['cpu']}")
    builds = {f"TVM {args.fusion} fusion, {shipped.sidecar['layout']} weights ({label})": shipped}
    if not args.skip_untuned and tuning["database"]:
        builds["TVM (no database: default schedules)"] = compile_model(CompileOptions(**common, out=str(work / "untuned"), database="none"))
    return builds


def _command(preset, args) -> str:
    return " ".join(["python -m compiler.bench", f"--target {preset.name}", f"--fusion {args.fusion}",
                     *([f"--layout {args.layout}"] if args.layout else []),
                     *([f"--database {args.database}"] if args.database else []),
                     *(["--profile"] if args.profile else []),
                     *([f"--tracker {args.tracker}"] if args.tracker else []), f"--runs {args.runs}",
                     *(["--skip-untuned"] if args.skip_untuned else [])])


def run_host(preset, args) -> dict:
    threads = preset.num_cores
    builds = _builds(preset, args)
    report = side_by_side(builds, threads, args.runs, _command(preset, args))
    first = next(iter(builds.values()))
    report["database"] = database_summary(first)
    if args.profile:
        say("profiling the tuned build: TVM per kernel and ONNX Runtime per operator, 20 runs each")
        report["profile"] = profile(first.library, onnx_path("attendnext"), bench_image(), threads)
    return report


def run_device(preset, args) -> dict:
    """On a board behind --tracker, or on the emulated Pi: TVM and ONNX Runtime both run on the device."""
    threads = preset.num_cores
    builds = _builds(preset, args)
    announce_emulation(args.tracker)
    with open_session(preset, args.tracker) as session:
        device = describe_device(session)
        timers = {name: tvm_timer(Model(build.library, session=session)) for name, build in builds.items()}
        timers["ONNX Runtime"] = device_onnxruntime_timer(session, onnx_path("attendnext"), threads)
        rounds, per_round = interleaving(args.runs)
        say(f"measuring {len(timers)} engines on {device.get('cpu_model', 'the device')}, "
            f"{rounds} interleaved rounds of {per_round} runs")
        times = measure(timers, rounds, per_round, warmup=1)
    notes = [_coverage_note(next(iter(builds.values())), tuning_db.cpu_of(preset)), NO_TORCH_ON_DEVICE]
    emulated, name = device_label(device, args.tracker)
    return {"model": "attendnext", "target": preset.name, "device": name,
            "threads": threads, "runs_per_engine": rounds * per_round, "emulated": emulated,
            "command": _command(preset, args), "engines": table(times), "notes": notes}
