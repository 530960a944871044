"""How long each tier of the test suite takes on this machine, timed as a user runs it: this runs the tier's make
target (`make test-fast`, `make test`), so the Makefile alone says what a tier selects and how it runs it, with the
machine and its load recorded beside it, and which tests take the time: every test's duration (bench/
test_durations.py, loaded into pytest through PYTEST_ADDOPTS), the slowest 30, and the totals per file and per marker.

    python3 bench/test_tiers.py --tier fast --json bench/results/test-tiers-fast.json
    python3 bench/test_tiers.py --tier full --cold --json bench/results/test-tiers-full-cold.json

Any Python 3 runs it, from a fresh clone too: the make target builds .venv first.

`--cold` times a machine with nothing cached: the run gets an empty cache folder (DCAC_CACHE_DIR), so the emulated
Pi and the counting plugins are built inside the timed run, as on a new machine (the usual cache is left alone).

docs/testing.md and the README quote these files; rerun on a quiet machine to regenerate a figure. The fast tier
has a one-time cost on a new machine (zig builds its aarch64 libc on the first cross link, about a minute):
run it twice to time it warm.
"""
import argparse
import os
import re
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# standard library only below compiler/: a fresh clone has no .venv until the make target makes it
from compiler import atomic  # noqa: E402
from compiler.device import emulator  # noqa: E402


TIERS = {"fast": "test-fast", "full": "test"}  # tier -> its make target
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|error|errors)\b")


SLOWEST = 30


def durations_summary(tests: list) -> dict:
    """The slowest tests, and the seconds per test file and per marker set, from the plugin's per-test list."""
    per_file, per_marker = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for test in tests:
        for table, key in ((per_file, test["file"]), (per_marker, "+".join(test["markers"]) or "unmarked")):
            table[key][0] += 1
            table[key][1] += test["seconds"]

    def rows(table):
        return [{"name": name, "tests": count, "seconds": round(seconds, 1)}
                for name, (count, seconds) in sorted(table.items(), key=lambda item: -item[1][1])]
    return {"tests_timed": len(tests), "test_seconds": round(sum(test["seconds"] for test in tests), 1),
            "slowest": tests[:SLOWEST], "per_file": rows(per_file), "per_marker": rows(per_marker),
            "longest_test_seconds": tests[0]["seconds"] if tests else None}


def run_tier(tier: str, cold: bool = False) -> dict:
    """Run the tier's make target once; its counts, wall time, the load it started under and per-test durations."""
    command = ["make", "--no-print-directory", TIERS[tier]]
    scratch = Path(tempfile.mkdtemp(prefix="test-tiers-"))
    report = scratch / "durations.json"
    env = {**os.environ, "DCAC_TEST_DURATIONS": str(report),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])),
           "PYTEST_ADDOPTS": " ".join(filter(None, [os.environ.get("PYTEST_ADDOPTS"), "-p test_durations"]))}
    if cold:
        env["DCAC_CACHE_DIR"] = str(scratch / "cache")
    load_before = os.getloadavg()[0]
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.time() - started
    durations = json.loads(report.read_text()) if report.exists() else {"tests": []}
    # the scratch folder holds a cold run's whole emulated Pi, with the host's /dev bound into it: unmount, then remove
    emulator.remove_tree(scratch)
    summary = [line for line in result.stdout.splitlines() if " in " in line and COUNTS.search(line)]
    counts = {kind: int(n) for n, kind in COUNTS.findall(summary[-1])} if summary else {}
    return {"tier": tier, "make_target": TIERS[tier], "cold_cache": cold, "exit_code": result.returncode,
            "counts": counts, "wall_seconds": round(seconds, 1), "load_average_before": round(load_before, 2),
            "pytest_session_seconds": durations.get("session_seconds"), **durations_summary(durations["tests"]),
            "all_tests": [{"nodeid": t["nodeid"], "seconds": t["seconds"]} for t in durations["tests"]],
            "summary_line": summary[-1].strip("= ") if summary else result.stdout[-400:],
            "failures": [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))],
            "output": result.stdout + result.stderr}


def machine() -> dict:
    """The machine as every results file records it, asked of the venv's Python (which the make target made)."""
    probe = "import json; from compiler.bench.measure import machine; print(json.dumps(machine()))"
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", probe], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:  # the make target failed before the venv was whole: say what is known
        return {"cpu_model": "unknown (no .venv)", "llvm_cpu": "unknown", "cpu_features": [], "cores": os.cpu_count()}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


def render(result: dict) -> str:
    """The results file's Markdown: the headline, then where the time goes."""
    cache = "nothing cached (emulated Pi and plugins built in the run)" if result["cold_cache"] else "caches warm"
    lines = [f"Test tier `{result['tier']}` on {result['machine']['cpu_model']} ({result['machine']['llvm_cpu']}, "
             f"{result['machine']['cores']} cores), commit {result['commit']}, {cache}: {result['summary_line']}; "
             f"{_clock(result['wall_seconds'])} wall (load average {result['load_average_before']} at the start). "
             f"Command: `{result['command']}`", ""]
    if not result["tests_timed"]:
        return "\n".join(lines) + "\n"
    lines += [f"{result['tests_timed']} tests timed, {_clock(result['test_seconds'])} of test time in all (setup, "
              f"call and teardown; on several workers this exceeds the wall time); the longest "
              f"{result['longest_test_seconds']:.1f} s. A shared fixture's build counts in the first test that uses it.",
              "", f"## The slowest {len(result['slowest'])} tests", "",
              "| seconds | setup | call | markers | test |", "| ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {t['seconds']:.1f} | {t['setup']:.1f} | {t['call']:.1f} | {' '.join(t['markers'])} | `{t['nodeid']}` |"
              for t in result["slowest"]]
    for title, key, head in (("Per marker", "per_marker", "markers"), ("Per file", "per_file", "file")):
        lines += ["", f"## {title}", "", f"| {head} | tests | seconds |", "| --- | ---: | ---: |"]
        lines += [f"| {row['name']} | {row['tests']} | {row['seconds']:.1f} |" for row in result[key]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="fast")
    parser.add_argument("--json", help="write the result here (and .md beside it)")
    parser.add_argument("--cold", action="store_true",
                        help="an empty cache folder for the run: the emulated Pi and its plugins are built inside it")
    args = parser.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"command": " ".join(["python bench/test_tiers.py", *(argv if argv is not None else sys.argv[1:])]),
              "commit": head.stdout.strip() or None, **run_tier(args.tier, args.cold)}
    result["machine"] = machine()
    text = render(result)
    output = result.pop("output")
    passed = result["exit_code"] == 0  # a failing run's time is not a figure to quote: nothing written
    print(text)
    if passed and args.json:
        atomic.write_json(args.json, result)
        atomic.write_text(Path(args.json).with_suffix(".md"), text)
    if not passed:
        log = ROOT / "build" / f"test-tiers-{args.tier}.log"  # the tracebacks: a 40-minute run is not rerun to see them
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
        atomic.write_json(log.with_suffix(".json"), result)  # where the time went, even on a failing run
        print("\n".join(result["failures"]), file=sys.stderr)
        print(f"pytest's output: {log}", file=sys.stderr)
        print(f"the {args.tier} tier failed (make exit code {result['exit_code']}); no results file written",
              file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
