"""Two or more pipeline variants tuned with the same budget, then measured in one run: the engine behind
bench/fusion.py and bench/layout.py (one implementation, so every such comparison is made alike).

Each variant is tuned from its own database up to `--trials` (a rerun resumes), built, and measured side
by side with ONNX Runtime and PyTorch eager (compiler.bench.side_by_side). The JSON records the command,
the machine (CPU model, LLVM cpu) and each variant's database.
"""
import argparse

from compiler import paths, targets
from compiler.bench.measure import publish, side_by_side
from compiler.driver import CompileOptions, compile_model
from compiler.errors import UserError, guarded
from compiler.tuning import database as tuning_db
from compiler.tuning.tune import TuneOptions


def compare_variants(name: str, variants: dict, doc: str, argv=None) -> int:
    """`variants`: label -> CompileOptions fields that differ. Returns the process exit code."""
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=doc.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=150, help="tuning budget per variant")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per engine")
    parser.add_argument("--json", help="write the report here (and Markdown beside it), e.g. bench/results/...")
    parser.add_argument("--shipped", action="store_true",
                        help="tune into (and measure) this CPU's own databases in tuning_logs/ instead of build/")
    args = parser.parse_args(argv)
    return guarded(lambda: _compare(name, variants, args))


def _compare(name: str, variants: dict, args) -> int:
    if args.trials < 1 or args.runs < 1:
        raise UserError("--trials and --runs must be positive, e.g. --trials 150 --runs 60")
    preset = targets.load("host")
    work = paths.build_dir() / f"bench-{name}" / tuning_db.cpu_of(preset)
    builds = {}
    for label, fields in variants.items():
        database = None if args.shipped else str(work / label / "db")
        result = compile_model(CompileOptions(target="host", database=database, out=str(work / label / "artifact"),
                                              tune=TuneOptions(trials=args.trials), **fields))
        builds[f"TVM {name} {label} ({args.trials} trials)"] = result
    command = (f"bench/{name}.py --trials {args.trials} --runs {args.runs}"
               + (" --shipped" if args.shipped else "") + (f" --json {args.json}" if args.json else ""))
    publish(side_by_side(builds, preset.num_cores, args.runs, command), args.json)
    return 0
