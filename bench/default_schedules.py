"""A model nobody tuned: built with `--database none` from its ONNX file, with the default schedules
(schedules/defaults.py) and with TVM's bare loop nests (`--default-schedules off`), timed side by side with
ONNX Runtime on this machine in one run (interleaved rounds, same thread count).

    .venv/bin/python bench/default_schedules.py --runs 20 --json bench/results/default-schedules-<cpu>.json
    .venv/bin/python bench/default_schedules.py --models user,registered --engines rows --runs 30 \
        --json bench/results/user-backbones-<cpu>.json
    .venv/bin/python bench/default_schedules.py --models registered --engines defaults --baseline <commit> \
        --json bench/results/default-schedules-vs-<commit>-<cpu>.json

Each model is exported to ONNX and compiled from the file, as a user's own model is: no database of this
project applies to it. `--models user` takes eight backbones that are not registered models
(compiler/bench/user_backbones.py): the case the README's promise is about. The figure that matters is each TVM
build's ratio to ONNX Runtime in the same run, and their geometric mean over the models. Engines are timed in
interleaved blocks of runs with a pause before each (compiler/bench/measure.py).
"""
import argparse
from statistics import geometric_mean
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler import paths, targets, zoo  # noqa: E402
from compiler.artifact.runtime import Model, use_threads  # noqa: E402
from compiler.bench.measure import (BLOCK_PAUSE_S, bench_image, interleaving, machine, measure,  # noqa: E402
                                    onnxruntime_timer, publish, table, tvm_timer)
from compiler.driver import CompileOptions, compile_model  # noqa: E402
from compiler.errors import UserError, guarded  # noqa: E402
from compiler.bench import user_backbones  # noqa: E402
from compiler.frontend.onnx_export import export_attendnext, export_registered  # noqa: E402
from compiler.output import say  # noqa: E402

# engine -> the CompileOptions it is built with (beyond --database none)
ENGINES = {"TVM default schedules": {},
           "TVM bare loop nests": {"default_schedules": False},
           "TVM default schedules, generic row kernels": {"row_reductions": False}}
ENGINE_CHOICES = {"defaults": ["TVM default schedules"],
                  "both": ["TVM default schedules", "TVM bare loop nests"],
                  "rows": ["TVM default schedules", "TVM default schedules, generic row kernels"]}
REGISTERED = "mobilenetv3_large,mobileone_s1,fbnet_c,mobilevit_xs,attendnext"


def export(name: str) -> Path:
    path = paths.exported_onnx(name)
    if name in user_backbones.BACKBONES:
        return user_backbones.export(name, path)
    export_attendnext(path) if name == "attendnext" else export_registered(name, path)
    return path


def model_names(spec: str) -> list:
    """A comma list of registered models and user backbones; `user` stands for the eight user backbones and
    `registered` for the five registered models."""
    names = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        if name == "user":
            names += list(user_backbones.BACKBONES)
        elif name == "registered":
            names += REGISTERED.split(",")
        elif name in user_backbones.BACKBONES:
            names.append(name)
        else:
            zoo.lookup(name)  # a one-line error naming the registered models
            names.append(name)
    return list(dict.fromkeys(names))


def _geomean(models: dict, names: list, engine: str) -> float:
    return geometric_mean(models[n]["engines"][engine]["ratio_vs_onnxruntime"] for n in names)


def render(report: dict) -> str:
    engines = report["engines"]
    lines = [f"Models with no tuning database (`--database none`), batch 1 on {report['device']}, "
             f"{report['threads']} threads, {report['runs_per_engine']} runs per engine ({report['command']})", "",
             "| model | ONNX Runtime (ms) | " + " | ".join(f"{e} (ms, x ORT)" for e in engines) +
             " | kernels with a default schedule | build with defaults (s) |",
             "| --- | ---: | " + " | ".join("---:" for _ in engines) + " | ---: | ---: |"]
    for name, row in report["models"].items():
        cells = [f"{row['engines'][e]['median_ms']:.2f} ({row['engines'][e]['ratio_vs_onnxruntime']:.2f}x)"
                 for e in engines]
        lines.append(f"| {name} | {row['engines']['ONNX Runtime']['median_ms']:.2f} | " + " | ".join(cells)
                     + f" | {row['kernels_default']} of {row['kernels_total']} | {row['build_seconds']:.0f} |")
    for group, summary in report["groups"].items():
        lines += ["", f"The {len(summary['models'])} {group}, geometric mean of the ratios to ONNX Runtime: " + ", ".join(
            f"{e} {summary['geomean_vs_onnxruntime'][e]:.2f}x" for e in engines) + "; worst: " + ", ".join(
            f"{e} {summary['worst_vs_onnxruntime'][e]:.2f}x" for e in engines) + "."]
    lines += ["", f"Each engine timed in {report['runs_per_engine'] // report['runs_per_block']} interleaved blocks of "
        f"{report['runs_per_block']} runs, with a {report['pause_before_block_s']} s pause before each block. "
        f"Machine: {report['machine']['cpu_model']} ({report['machine']['llvm_cpu']}), commit {report['machine']['commit']}."]
    return "\n".join(lines) + "\n"


def _checkout(commit: str, work: Path) -> Path:
    """A detached work tree of this repository at `commit`, to build the baseline with its own schedules."""
    root = Path(__file__).resolve().parent.parent
    folder = work / "baseline-tree"
    done = subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(folder), commit],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"--baseline {commit}: not a commit of this repository ({done.stderr.strip().splitlines()[-1]})")
    return folder


def _build_at(checkout: Path, onnx: Path, out: Path) -> Path:
    """The model built with --database none by the baseline's own compile.py (this interpreter)."""
    say(f"building {onnx.name} at the baseline")
    subprocess.run([sys.executable, "compile.py", "--target", "host", "--model", str(onnx), "--database", "none",
                    "-q", "--out", str(out)], cwd=checkout, check=True, capture_output=True)
    return out / f"{onnx.stem}.so"


def run(args) -> int:
    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: give at least 1")
    if args.engines not in ENGINE_CHOICES:
        raise UserError(f"--engines {args.engines}: give one of {', '.join(ENGINE_CHOICES)}")
    engines = {engine: ENGINES[engine] for engine in ENGINE_CHOICES[args.engines]}
    names = model_names(args.models)
    preset = targets.load("host")
    threads = preset.num_cores
    use_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="dcac-defaults-"))
    image_of, builds = {}, {}
    baseline = f"TVM default schedules at {args.baseline}" if args.baseline else None
    checkout = _checkout(args.baseline, work) if args.baseline else None
    for name in names:
        onnx = export(name)
        for k, (engine, overrides) in enumerate(engines.items()):
            builds[name, engine] = compile_model(CompileOptions(
                target="host", model=str(onnx), database="none", out=str(work / f"{name}-{k}"), **overrides))
        image_of[name] = bench_image(tuple(builds[name, "TVM default schedules"].sidecar["inputs"][0]["shape"]))
    libraries = {key: build.library for key, build in builds.items()}
    if baseline:
        for name in names:
            libraries[name, baseline] = _build_at(checkout, paths.exported_onnx(name), work / f"{name}-baseline")
        subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "worktree", "remove", "--force",
                        str(checkout)], capture_output=True)
        engines[baseline] = {}
    timers = {}
    for name in names:
        for engine in engines:
            timers[name, engine] = tvm_timer(Model(libraries[name, engine]))
        timers[name, "ONNX Runtime"] = onnxruntime_timer(paths.exported_onnx(name), threads, image_of[name])
    rounds, per_round = interleaving(args.runs)
    say(f"measuring {len(timers)} engines, {rounds} interleaved rounds of a block of {per_round} runs each")
    times = measure(timers, rounds, per_round, warmup=2)
    host = machine()
    models = {}
    for name in names:
        rows = table({engine: times[name, engine] for engine in ("ONNX Runtime", *engines)})
        built = builds[name, "TVM default schedules"].sidecar
        models[name] = {"engines": rows, "kernels_default": built["tuning"]["kernels_default"],
                        "kernels_total": built["tuning"]["kernels_total"], "build_seconds": built["build_seconds"]}
    groups = {"user backbones": [n for n in names if n in user_backbones.BACKBONES],
              "registered models": [n for n in names if n not in user_backbones.BACKBONES]}
    summary = {group: {"models": members,
                       "geomean_vs_onnxruntime": {e: _geomean(models, members, e) for e in engines},
                       "worst_vs_onnxruntime": {e: max(models[n]["engines"][e]["ratio_vs_onnxruntime"] for n in members)
                                                for e in engines}}
               for group, members in groups.items() if members}
    command = (f"bench/default_schedules.py --models {args.models} --engines {args.engines} --runs {args.runs}"
               + (f" --baseline {args.baseline}" if args.baseline else "")
               + (f" --json {args.json}" if args.json else ""))
    report = {"target": "host", "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host,
              "threads": threads, "runs_per_engine": rounds * per_round, "command": command, "models": models,
              "engines": list(engines), "groups": summary,
              "pause_before_block_s": BLOCK_PAUSE_S, "runs_per_block": per_round}
    publish(report, args.json, render=render)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=REGISTERED,
                        help="registered models or user backbones (`user`: all eight), exported to ONNX and compiled "
                             "from the file (comma list)")
    parser.add_argument("--engines", default="both", help="`both` (default schedules and bare loop nests), "
                                                          "`defaults` (default schedules only) or `rows` (default "
                                                          "schedules with and without schedules/row_reductions.py)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per engine and model")
    parser.add_argument("--baseline", help="also build every model at this commit of the repository (a git work "
                                           "tree) and time it in the same run: is the current code slower?")
    parser.add_argument("--json", help="write the report here (and Markdown beside it)")
    args = parser.parse_args()
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
