"""What to do with a tuning database of another CPU, decided by measurement: refuse it (default schedules),
or apply it with a warning. Measured on two CPUs of different vector width in one run on this machine:
its own CPU (LLVM cpu detected here) and an AVX2 CPU (`--other-cpu`, default znver3) whose code this
machine also runs, each with the shipped databases of the other CPUs and untuned, beside ONNX Runtime.

    .venv/bin/python bench/foreign_database.py --runs 30 --json bench/results/foreign-database-<cpu>.json

ONNX Runtime picks its kernels for the machine it runs on, so its row is this machine's, not the AVX2
CPU's: compare the TVM rows of one CPU with each other.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import targets  # noqa: E402
from compiler.tuning import database as tuning_db
from compiler import paths  # noqa: E402
from compiler.driver import CompileOptions, compile_model  # noqa: E402
from compiler.bench.measure import publish, side_by_side  # noqa: E402


def preset_file(cpu: str, folder: Path) -> str:
    """The host preset with another LLVM cpu: code for that CPU, built and run on this machine."""
    host = json.loads((targets.TARGETS_DIR / "host.json").read_text())
    host.update(name="host", description=f"this machine, code for {cpu}")
    host["target"] = dict(host["target"], mcpu=cpu)
    path = folder / f"host-{cpu}.json"
    path.write_text(json.dumps(host))
    return str(path)


def shipped_databases() -> list:
    """(cpu, layout, folder) of every shipped host AttendNeXt database."""
    found = []
    for folder in sorted((paths.tuning_logs() / "host").glob("*/attendnext*")):
        database = tuning_db.TuningDatabase(folder)
        if database.exists() and database.provenance.get("fusion", "stock") == "stock":
            found.append((database.cpu, database.provenance.get("pipeline", {}).get("layout", "plain"), folder))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-cpu", default="znver3", help="an LLVM cpu of another vector width (AVX2)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    here = tuning_db.cpu_of(targets.load("host"))
    work = Path(tempfile.mkdtemp(prefix="dcac-foreign-"))
    builds, policies = {}, {}
    shipped = shipped_databases()
    for cpu in (here, args.other_cpu):
        target = "host" if cpu == here else preset_file(cpu, work)
        for tuned_for, layout, folder in shipped:
            policy = "own database" if tuned_for == cpu else "apply with a warning"
            label = f"code for {cpu}, {layout} weights, database tuned for {tuned_for} ({policy})"
            builds[label] = compile_model(CompileOptions(target=target, layout=layout, database=str(folder),
                                                         out=str(work / f"{cpu}-{tuned_for}-{layout}")))
            policies[label] = {"cpu": cpu, "database_cpu": tuned_for, "layout": layout, "policy": policy}
        for layout in sorted({layout for _, layout, _ in shipped}):
            label = f"code for {cpu}, {layout} weights, untuned (refuse the foreign database)"
            builds[label] = compile_model(CompileOptions(target=target, layout=layout, database="none",
                                                         out=str(work / f"{cpu}-untuned-{layout}")))
            policies[label] = {"cpu": cpu, "database_cpu": None, "layout": layout, "policy": "refuse"}
    command = f"bench/foreign_database.py --other-cpu {args.other_cpu} --runs {args.runs}" + (
        f" --json {args.json}" if args.json else "")
    report = side_by_side(builds, targets.load("host").num_cores, args.runs, command)
    report["policies"] = policies
    publish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
