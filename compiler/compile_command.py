"""Build a model (AttendNeXt, a registered baseline, or any ONNX vision model) into a shared library for a
target: the `compile`, `tune`, `verify` and `explain` commands, and `python compile.py`.

The work is `compiler.driver.compile_model`; this module only turns arguments into its options.
"""
from compiler import targets, zoo
from compiler.driver import CompileOptions, compile_model, explain
from compiler.errors import UserError
from compiler.frontend.onnx_model import parse_input_shapes
from compiler.passes.pipeline import DEFAULT_LAYOUT, LAYOUTS
from compiler.tuning.policy import BudgetPolicy
from compiler.tuning.tune import TuneOptions

EXAMPLES = [
    "python compile.py --target rpi4                          # AttendNeXt -> dist/attendnext-rpi4/",
    "python compile.py --model mobilenetv3_large --target host  # a registered model",
    "python compile.py --target rpi4 --verify                 # ... and check it on the (emulated) Pi",
    "python compile.py --model net.onnx --target rpi5 --input-shape input=1,3,224,224",
    "python compile.py --target my-board.json                 # your own preset file",
    "python compile.py --target rpi4 --quantize int8 --calibration images/  # int8, calibrated on your images",
    "python -m compiler tune --target rpi4 --tracker 10.0.0.5:9190 --trials 2000",
    "python compile.py --list-targets; python compile.py --list-models",
]


def add_arguments(parser) -> None:
    parser.add_argument("--target", default="rpi4", help="a preset from targets/ (see --list-targets)")
    parser.add_argument("--list-targets", action="store_true", help="print the target presets and exit")
    parser.add_argument("--model", help="a registered model (see --list-models; exported to build/<name>.onnx) or an "
                                        "ONNX file (default: attendnext)")
    parser.add_argument("--list-models", action="store_true",
                        help="print the registered models with parameters, MACs and paper, and exit")
    parser.add_argument("--input-shape", action="append", metavar="NAME=D1,D2,...",
                        help="static shape for a model input (repeatable); needed for dynamic dimensions")
    parser.add_argument("--weights", help="AttendNeXt state dict (.pt); default: seeded initialisation")
    parser.add_argument("--out", help="artifact folder (default: dist/<model>-<target>)")
    parser.add_argument("--fusion", default="stock", choices=["stock", "dcac"],
                        help="stock: TVM's FuseOps; dcac: each DC-AC block as one kernel (compiler/passes/dcac_patterns.py)")
    parser.add_argument("--layout", choices=list(LAYOUTS),
                        help="weights as imported (plain), or prepacked into the layout each tuned kernel chose; "
                             f"each has its own database (default: the layout of this CPU's database, else "
                             f"{DEFAULT_LAYOUT})")
    parser.add_argument("--explain", action="store_true",
                        help="print kernels and intermediate bytes per DC-AC block, stock against dcac fusion, and exit")
    parser.add_argument("--linker", choices=["gnu", "zig"], help="cross linker (default: gnu when installed)")
    parser.add_argument("--database", help="tuning database folder (default: tuning_logs/<target>/<cpu>/<model>; "
                                           "'none': no tuning)")
    parser.add_argument("--allow-emulated-logs", action="store_true",
                        help="apply a database measured under emulation to a real board's build")
    parser.add_argument("--default-schedules", choices=["on", "off"], default="on",
                        help="kernels no database record covers: the target's default schedules (on), or TVM's bare "
                             "loop nests, one thread (off, for comparison); --database none still applies them")
    parser.add_argument("--allow-stale-database", action="store_true",
                        help="apply a database tuned under another pipeline fingerprint (its records may match nothing)")
    parser.add_argument("--allow-other-cpu", action="store_true",
                        help="with --tune: add records to a database measured for another CPU")
    parser.add_argument("--tune", action="store_true", help="tune the kernels with MetaSchedule before building")
    parser.add_argument("--no-board", action="store_true",
                        help="with --tune, ARM presets: rank candidates by their cycle estimate on the preset's core "
                             "under emulation (a model, no board needed) into tuning_logs/<target>/<cpu>/<model>-no-board; "
                             "applied only where no database measured on a board exists")
    parser.add_argument("--trials", type=int, default=2000, help="total tuning budget (resumed runs count spent trials)")
    parser.add_argument("--seed-database", metavar="DIR",
                        help="with --tune: start from another database's best schedules (another board, CPU or "
                             "model), each measured on this run's device before the search")
    parser.add_argument("--seed-defaults", choices=["on", "off"], default="on",
                        help="with --tune: start every task from its default schedule, measured on this run's device "
                             "before the search (on, default), or from MetaSchedule's random samples (off)")
    parser.add_argument("--search-population", type=int, metavar="N",
                        help="with --tune: candidates the evolutionary search keeps per iteration (default: 8 per "
                             "trial of a batch, 64 to 512; MetaSchedule's own is 512); smaller is cheaper per iteration")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="with --tune: every N trials build the model with the records so far and time it on the "
                             "tuning device (checkpoints.json beside the database; the report plots it)")
    parser.add_argument("--wait-for-database", action="store_true",
                        help="with --tune: if another run is writing the database, wait for it and resume from its "
                             "records (default: refuse at once)")
    parser.add_argument("--budget-policy", choices=["on", "off"], default="on",
                        help="with --tune: stop tasks whose best has flattened and kernels with no schedule space "
                             "(on, default), or leave every choice to MetaSchedule's gradient scheduler (off)")
    parser.add_argument("--judge-records", choices=["on", "off"], default="on",
                        help="with --tune, on this machine or --no-board: at the end (and at checkpoints) keep each "
                             "kernel's record only where it beats the kernel's default schedule in the model (on, "
                             "default), or let every record replace its default schedule, as MetaSchedule does (off)")
    parser.add_argument("--servers", type=int, default=2, help="emulated servers when tuning without --tracker")
    parser.add_argument("--session-timeout", type=float, default=120.0,
                        help="seconds one candidate may take on a device (upload, load, measure)")
    parser.add_argument("--verify", action="store_true", help="run on the device and compare with ONNX Runtime")
    parser.add_argument("--tracker", metavar="HOST:PORT", help="RPC tracker of real devices (default: emulated Pi)")
    parser.add_argument("--tolerance", type=float,
                        help="relative error allowed by --verify (default: 1e-4; 2e-2 for a quantized model, one "
                             "step of its int8 output)")
    parser.add_argument("--quantize", choices=["int8"],
                        help="quantize the float model first with ONNX Runtime's quantizer (QDQ, per-channel int8 "
                             "weights; uint8 activations on x86, int8 on Arm); builds <model>-int8 with integer "
                             "kernels and ships the QDQ model beside the library")
    parser.add_argument("--calibration", metavar="DIR",
                        help="with --quantize: a folder of .npy input arrays or images (resized, ImageNet-normalised) "
                             "to calibrate on (default: 16 seeded random inputs)")
    parser.add_argument("--dump-ir", metavar="DIR", help="write the IR after each phase into DIR")


def run(args) -> int:
    """Build (tune, verify, explain) as the arguments say; exit code 1 when verification fails."""
    if args.list_targets:
        print(targets.describe_all())
        return 0
    if args.list_models:
        print(zoo.describe_all())
        return 0
    if args.tolerance is not None and args.tolerance < 0:
        raise UserError(f"--tolerance {args.tolerance:g} is negative: give a relative error such as 1e-4")
    if args.no_board and not args.tune:
        raise UserError("--no-board says how --tune ranks candidates: add --tune (e.g. --tune --no-board --trials 500)")

    options = CompileOptions(
        target=args.target, model=args.model, input_shapes=parse_input_shapes(args.input_shape),
        out=args.out, weights=args.weights, fusion=args.fusion, layout=args.layout, linker=args.linker,
        database=args.database, allow_emulated_logs=args.allow_emulated_logs,
        allow_stale_database=args.allow_stale_database, verify=args.verify,
        default_schedules=args.default_schedules == "on",
        tune=TuneOptions(trials=args.trials, servers=args.servers,
                         session_timeout=args.session_timeout, allow_other_cpu=args.allow_other_cpu,
                         seed_database=args.seed_database, seed_defaults=args.seed_defaults == "on",
                         search_population=args.search_population,
                         checkpoint_every=args.checkpoint_every, wait_for_database=args.wait_for_database,
                         budget_policy=BudgetPolicy() if args.budget_policy == "on" else None,
                         no_board=args.no_board, judge_records=args.judge_records == "on")
        if args.tune else None, tracker=args.tracker,
        tolerance=args.tolerance, dump_ir=args.dump_ir, quantize=args.quantize, calibration=args.calibration)
    if args.explain:
        print(explain(options))
        return 0
    result = compile_model(options)
    return 1 if result.verified is False else 0
