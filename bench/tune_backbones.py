"""Tune every registered model (AttendNeXt and its four baselines) for one target at the same trial budget,
so that `python -m compiler.bench --models all` compares backbones tuned alike.

    .venv/bin/python bench/tune_backbones.py --target host --trials 192

Each model is one `compile.py --tune` run into its own database (tuning_logs/<target>/<cpu>/<model>-<layout>),
so a killed job resumes where it stopped: run the same command again. A model whose database already
holds the budget is skipped.
"""
import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import zoo  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="host")
    parser.add_argument("--trials", type=int, default=192, help="budget of every model's database")
    parser.add_argument("--models", default="all", help="comma list of registered models, or all")
    parser.add_argument("--search-population", type=int, default=64,
                        help="evolutionary search population per iteration (compile.py --search-population); "
                             "small budgets run batches of 2, where MetaSchedule's 512 is mostly search time")
    parser.add_argument("--tracker", help="HOST:PORT of the boards' tracker (aarch64 presets)")
    args = parser.parse_args(argv)
    names = list(zoo.MODELS) if args.models == "all" else args.models.split(",")
    for name in names:
        zoo.lookup(name)
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}: tuning for {args.target}, budget {args.trials} trials",
              file=sys.stderr, flush=True)
        command = [sys.executable, str(ROOT / "compile.py"), "--model", name, "--target", args.target, "--tune",
                   "--trials", str(args.trials),
                   "--search-population", str(args.search_population), "--out", str(ROOT / "build" / "backbones" / name),
                   *(["--tracker", args.tracker] if args.tracker else [])]
        code = subprocess.call(command, cwd=ROOT)
        if code != 0:
            print(f"{name}: compile.py exited {code}; run the same command again to resume", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
