"""How long each tier of the test suite takes on this machine, timed as a user runs it: this runs the tier's make
target (`make test-fast`, `make test`), so the Makefile alone says what a tier selects and how it runs it, with the
machine and its load recorded beside it.

    .venv/bin/python bench/test_tiers.py --tier fast --json bench/results/test-tiers-fast.json

docs/testing.md and the README quote these files; rerun on a quiet machine to regenerate a figure. The fast tier
has a one-time cost on a new machine (zig builds its aarch64 libc on the first cross link, about a minute):
run it twice to time it warm.
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


TIERS = {"fast": "test-fast", "full": "test"}  # tier -> its make target
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|error|errors)\b")


def run_tier(tier: str) -> dict:
    """Run the tier's make target once; its counts, wall time and the load it started under."""
    command = ["make", "--no-print-directory", TIERS[tier]]
    load_before = os.getloadavg()[0]
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - started
    summary = [line for line in result.stdout.splitlines() if " in " in line and COUNTS.search(line)]
    counts = {kind: int(n) for n, kind in COUNTS.findall(summary[-1])} if summary else {}
    return {"tier": tier, "make_target": TIERS[tier], "exit_code": result.returncode, "counts": counts,
            "wall_seconds": round(seconds, 1), "load_average_before": round(load_before, 2),
            "summary_line": summary[-1].strip("= ") if summary else result.stdout[-400:],
            "failures": [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))],
            "output": result.stdout + result.stderr}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="fast")
    parser.add_argument("--json", help="write the result here (and .md beside it)")
    args = parser.parse_args(argv)
    from compiler.bench.measure import machine, publish

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"command": " ".join(["python bench/test_tiers.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "commit": head.stdout.strip() or None, **run_tier(args.tier)}
    minutes, seconds = divmod(round(result["wall_seconds"]), 60)
    text = (f"Test tier `{args.tier}` on {result['machine']['cpu_model']} ({result['machine']['llvm_cpu']}, "
            f"{result['machine']['cores']} cores), commit {result['commit']}: {result['summary_line']}; "
            f"{minutes} min {seconds} s wall (load average {result['load_average_before']} at the start). "
            f"Command: `{result['command']}`\n")
    output = result.pop("output")
    passed = result["exit_code"] == 0  # a failing run's time is not a figure to quote: nothing written
    publish(result, args.json if passed else None, lambda _: text)
    if not passed:
        log = ROOT / "build" / f"test-tiers-{args.tier}.log"  # the tracebacks: a 40-minute run is not rerun to see them
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
        print("\n".join(result["failures"]), file=sys.stderr)
        print(f"pytest's output: {log}", file=sys.stderr)
        print(f"the {args.tier} tier failed (make exit code {result['exit_code']}); no results file written",
              file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
