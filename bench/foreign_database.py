"""What to do with a tuning database of another CPU, decided by measurement: refuse it (the default schedules),
or apply it with a warning. Measured in one run on this machine, for its own CPU (LLVM cpu detected here) and,
with `--other-cpu`, an AVX2 CPU whose code this machine also runs: each model (`--models`, default AttendNeXt)
with every shipped host database of that model and with the default schedules, beside ONNX Runtime.

    .venv/bin/python bench/foreign_database.py --models attendnext,mobilenetv3_large,fbnet_c,mobileone_s1 \
        --other-cpu none --runs 30 --json bench/results/foreign-database-<cpu>.json

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
from compiler.bench.measure import machine, publish, render_markdown, side_by_side  # noqa: E402


def preset_file(cpu: str, folder: Path) -> str:
    """The host preset with another LLVM cpu: code for that CPU, built and run on this machine."""
    host = json.loads((targets.TARGETS_DIR / "host.json").read_text())
    host.update(name="host", description=f"this machine, code for {cpu}")
    host["target"] = dict(host["target"], mcpu=cpu)
    path = folder / f"host-{cpu}.json"
    path.write_text(json.dumps(host))
    return str(path)


def shipped_databases(model: str) -> list:
    """(cpu, layout, folder) of every shipped host database of `model` (stock fusion, float)."""
    found = []
    for folder in sorted((paths.tuning_logs() / "host").glob("*/*")):
        if folder.name not in (tuning_db.folder_name(model, layout=layout) for layout in ("plain", "prepack")):
            continue
        database = tuning_db.TuningDatabase(folder)
        if database.exists() and database.provenance.get("fusion", "stock") == "stock":
            found.append((database.cpu, database.provenance.get("pipeline", {}).get("layout", "plain"), folder))
    return found


def build(work: Path, name: str, **options):
    """A build kept in --work: made once per set of options, so an interrupted run resumes (and the builds can
    be made while the machine is busy, with `--build-only`, and timed later on a quiet one)."""
    from compiler.artifact.runtime import read_sidecar
    from compiler.driver import CompileResult

    out = work / name
    done = out / "done.json"
    if not (done.is_file() and json.loads(done.read_text()) == options):
        compile_model(CompileOptions(out=str(out), **options))
        done.write_text(json.dumps(options))
    library = next(out.glob("*.so"))
    return CompileResult(library=library, sidecar=read_sidecar(str(library)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-cpu", default="znver3",
                        help="an LLVM cpu of another vector width (AVX2), or none")
    parser.add_argument("--models", default="attendnext", help="comma-separated registered models")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json")
    parser.add_argument("--work", help="where the builds are kept between runs (default: a new temporary folder)")
    parser.add_argument("--build-only", action="store_true", help="make the builds into --work and stop")
    args = parser.parse_args()
    here = tuning_db.cpu_of(targets.load("host"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dcac-foreign-"))
    work.mkdir(parents=True, exist_ok=True)
    cpus = [here] + ([args.other_cpu] if args.other_cpu != "none" else [])
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    builds, policies = {m: {} for m in models}, {}
    for model in models:
        shipped = shipped_databases(model)
        for cpu in cpus:
            target = "host" if cpu == here else preset_file(cpu, work)
            for tuned_for, layout, folder in shipped:
                policy = "own database" if tuned_for == cpu else "apply with a warning"
                label = f"{model}: code for {cpu}, {layout} weights, database tuned for {tuned_for} ({policy})"
                builds[model][label] = build(work, f"{model}-{cpu}-{tuned_for}-{layout}", target=target, model=model,
                                             layout=layout, database=str(folder))
                policies[label] = {"model": model, "cpu": cpu, "database_cpu": tuned_for, "layout": layout,
                                   "policy": policy}
            for layout in sorted({layout for _, layout, _ in shipped}):
                label = f"{model}: code for {cpu}, {layout} weights, default schedules (refuse the foreign database)"
                builds[model][label] = build(work, f"{model}-{cpu}-defaults-{layout}", target=target, model=model,
                                             layout=layout, database="none")
                policies[label] = {"model": model, "cpu": cpu, "database_cpu": None, "layout": layout,
                                   "policy": "refuse"}
    command = (f"bench/foreign_database.py --models {args.models} --other-cpu {args.other_cpu} --runs {args.runs}"
               + (f" --json {args.json}" if args.json else ""))
    if args.build_only:
        return 0
    threads = targets.load("host").num_cores
    report = {"command": command, "machine": machine(), "policies": policies,
              "models": {m: side_by_side(builds[m], threads, args.runs, command, m) for m in models}}
    publish(report, args.json, render=lambda r: "\n".join(render_markdown(row) for row in r["models"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
