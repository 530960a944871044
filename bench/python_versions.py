"""Which Python versions the project runs on: for each interpreter given, a fresh virtual environment with the
project and its pinned packages installed from the package index, then the fast test tier (`-m "not emulated and
not slow"`) run in it. The README's requirements line quotes the results file.

    python3 bench/python_versions.py --python python3.11 --python ~/.pyenv/versions/3.12.1/bin/python3 \
        --json bench/results/python-versions.json

The environments go under the cache folder (~/.cache/dcac-compiler/python-versions/<version>) and are reused.
CI runs the whole suite on the machine's own Python; this script is how the other versions are checked.
"""
import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import paths  # noqa: E402
from compiler.bench.measure import publish  # noqa: E402

COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?)\b")
FAST_TIER = ["-m", "not emulated and not slow", "-n", "2", "-q", "-rf", "-p", "no:cacheprovider"]


def version_of(interpreter: str) -> str:
    out = subprocess.run([interpreter, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {interpreter} does not run: give the path of a Python interpreter")
    return out.stdout.strip()


def environment(interpreter: str, version: str) -> Path:
    """A venv of `version` with the project installed (editable, with the test extras)."""
    venv = paths.cache_dir() / "python-versions" / version
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True)
    return python


def run_fast_tier(python: Path) -> dict:
    started = time.time()
    out = subprocess.run([str(python), "-m", "pytest", *FAST_TIER], capture_output=True, text=True, cwd=ROOT)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in COUNTS.findall(tail)}
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in out.stdout.splitlines() if line.startswith("FAILED ")]
    return {"exit_code": out.returncode, "summary": tail, "counts": counts, "failed": failed,
            "minutes": round((time.time() - started) / 60, 1)}


def render(report: dict) -> str:
    lines = [f"Python versions on {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}), commit "
             f"{report['machine']['commit']}: the project installed from the package index into a fresh venv per "
             f"version, then the fast test tier ({' '.join(FAST_TIER[:2])}). Command: `{report['command']}`", "",
             "| Python | fast tier | failed | minutes |", "| --- | --- | --- | ---: |"]
    for row in report["versions"]:
        failed = ", ".join(f"`{name}`" for name in row["failed"]) or "none"
        lines.append(f"| {row['version']} | {row['summary']} | {failed} | {row['minutes']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", required=True, metavar="INTERPRETER",
                        help="a Python interpreter to check (repeat for each version)")
    parser.add_argument("--json", help="write the report here (and its Markdown beside it)")
    args = parser.parse_args()
    from compiler.bench.measure import machine

    rows = []
    for interpreter in args.python:
        version = version_of(interpreter)
        print(f"Python {version}: installing the project into its venv", flush=True)
        python = environment(interpreter, version)
        print(f"Python {version}: running the fast tier", flush=True)
        rows.append({"version": version, **run_fast_tier(python)})
        print(f"Python {version}: {rows[-1]['summary']}", flush=True)
    command = "python bench/python_versions.py " + " ".join(f"--python {shlex.quote(p)}" for p in args.python) + (
        f" --json {args.json}" if args.json else "")
    report = {"command": command, "machine": machine(), "versions": rows}
    publish(report, args.json, render=render)
    return 0 if all(row["exit_code"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
