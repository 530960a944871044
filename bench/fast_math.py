"""exp and sigmoid through libm (one scalar call per vector lane, TVM's default) against the project's
vectorised lowering (compiler/passes/fast_math.py), both with this CPU's shipped database, measured in one run
with ONNX Runtime and PyTorch eager (interleaved, same thread count).

    .venv/bin/python bench/fast_math.py --runs 60 --json bench/results/fast-math-<cpu>.json

The lowering changes code generation only: both builds apply the same database records.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import targets  # noqa: E402
from compiler.driver import CompileOptions, compile_model  # noqa: E402
from compiler.bench.measure import publish, side_by_side  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dcac-fast-math-"))
    builds = {}
    for label, vector_exp in (("libm exp (TVM default)", False), ("vectorised exp (compiler/passes/fast_math.py)", True)):
        builds[f"TVM, {label}"] = compile_model(CompileOptions(target="host", vector_exp=vector_exp,
                                                               out=str(work / str(vector_exp))))
    command = f"bench/fast_math.py --runs {args.runs}" + (f" --json {args.json}" if args.json else "")
    report = side_by_side(builds, targets.load("host").num_cores, args.runs, command)
    publish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
