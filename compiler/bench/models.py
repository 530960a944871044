"""`python -m compiler.bench --models all`: AttendNeXt against its paper's four baselines on one target.

Every model is built with a tuning database of one common CPU (this CPU's when it has every model's, else
another CPU's that has), or with its own lookup, or untuned when it has none (marked so), and measured with
ONNX Runtime and PyTorch eager (host only) in interleaved rounds that take every engine of every model in
turn, so that load on a shared machine falls on all of them alike. The figures that compare are
AttendNeXt's speed-ups against each baseline within one engine.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from compiler import atomic, zoo
from compiler.artifact.runtime import Model, use_threads
from compiler.bench.measure import (
    NO_TORCH_ON_DEVICE,
    announce_emulation,
    bench_image,
    database_summary,
    device_label,
    device_onnxruntime_timer,
    host_engines,
    interleaving,
    machine,
    measure,
    onnx_path,
    publish as publish_report,
    table,
    tvm_timer,
)
from compiler.device.session import describe_device, open_session
from compiler.driver import CompileOptions, compile_model, say
from compiler.errors import UserError
from compiler.passes.pipeline import DEFAULT_LAYOUT
from compiler.tuning import database as tuning_db

ENGINES_HOST = ("TVM", "ONNX Runtime", "PyTorch eager")
REFERENCE = "attendnext"


def model_names(spec: str) -> list:
    """`all` or a comma list of registered names, AttendNeXt first when it is included."""
    names = list(zoo.MODELS) if spec == "all" else [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError(f"--models '{spec}': give 'all' or a comma list, e.g. --models attendnext,fbnet_c")
    for name in names:
        zoo.lookup(name)
    return sorted(dict.fromkeys(names), key=lambda name: name != REFERENCE)


def common_databases(preset, names, layout=None) -> dict:
    """name -> database folder, every one tuned for the same CPU: this CPU's when it has all the models, else
    the first other CPU of the same vector width that has (the lookup's policy, tuning/database.py). Backbones are
    compared tuned alike, not each with whichever CPU's database its own lookup finds. {} when no CPU has them
    all (each model then looks up its own, and the notes name the budgets)."""
    layout = layout or DEFAULT_LAYOUT
    key = tuning_db.DatabaseKey(preset, names[0], "stock", layout)
    others = [db.path.parent.name for db in tuning_db.foreign_databases(key) if tuning_db.same_vector_width(db, key)]
    for cpu in [tuning_db.cpu_of(preset), *others]:
        paths = {name: tuning_db.default_path(preset.name, cpu, name, "stock", layout) for name in names}
        if all((path / tuning_db.RECORDS).is_file() for path in paths.values()):
            return paths
    return {}


def build_models(preset, names, layout=None) -> dict:
    """name -> CompileResult, each with a database of one common CPU (common_databases), else its own lookup."""
    work = Path(tempfile.mkdtemp(prefix="dcac-bench-models-"))
    databases = common_databases(preset, names, layout)
    builds = {}
    for index, name in enumerate(names, 1):
        say(f"[{index}/{len(names)}] building {name} for {preset.name}")
        database = str(databases[name]) if name in databases else None
        builds[name] = compile_model(CompileOptions(target=preset.name, model=name, layout=layout,
                                                    database=database, out=str(work / name)))
    return builds


def timers_host(builds: dict, threads: int) -> dict:
    """(model, engine) -> timer, for TVM, ONNX Runtime and PyTorch eager of every model."""
    timers = {}
    for name, build in builds.items():
        image = bench_image(zoo.lookup(name).input_shape)
        timers[name, "TVM"] = tvm_timer(Model(build.library))
        for engine, timer in host_engines(threads, image, name).items():
            timers[name, engine] = timer
    return timers


def timers_device(builds: dict, session, threads: int) -> dict:
    """TVM and ONNX Runtime of every model, both on the board behind `session`."""
    timers = {}
    for name, build in builds.items():
        timers[name, "TVM"] = tvm_timer(Model(build.library, session=session))
        timers[name, "ONNX Runtime"] = device_onnxruntime_timer(session, onnx_path(name), threads)
    return timers


def model_rows(builds: dict, times: dict) -> dict:
    """The JSON's `models`: parameters, MACs, per-engine table (bench.table) and tuning coverage."""
    # Waits until needed: counting builds the models in PyTorch.
    from compiler.zoo.size import count_params_and_macs

    rows = {}
    for name, build in builds.items():
        entry = zoo.lookup(name)
        params, macs = count_params_and_macs(entry.build(seed=None), entry.input_shape)
        engines = {engine: samples for (model, engine), samples in times.items() if model == name}
        database = database_summary(build)
        rows[name] = {"params": params, "macs": macs, "input_shape": list(entry.input_shape),
                      "engines": table(engines), "kernels_tuned": database["kernels_tuned"],
                      "kernels_total": database["kernels_total"], "database": database}
    return rows


def speedups(models: dict) -> dict:
    """baseline -> engine -> baseline median / AttendNeXt median (above 1: AttendNeXt is faster)."""
    if REFERENCE not in models:
        return {}
    own = models[REFERENCE]["engines"]
    return {name: {engine: row["engines"][engine]["median_ms"] / own[engine]["median_ms"]
                   for engine in row["engines"] if engine in own}
            for name, row in models.items() if name != REFERENCE}


def _tvm_label(row) -> str:
    database = row["database"]
    if not database["path"]:
        return "untuned"
    return f"{database['kernels_tuned']}/{database['kernels_total']} kernels, {database['trials']} trials, {database['cpu']}"


def render_markdown(report: dict) -> str:
    models = report["models"]
    engines = list(next(iter(models.values()))["engines"])
    lines = [f"Backbones batch 1 on {report['device']}, {report['threads']} threads, {report['runs_per_engine']} runs "
             f"per engine ({report['command']})", "",
             "| model | params (M) | GMACs | " + " | ".join(f"{e} median (ms)" for e in engines) + " | TVM database |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in engines) + " | --- |"]
    for name, row in models.items():
        cells = " | ".join(f"{row['engines'][e]['median_ms']:.2f}" for e in engines)
        lines.append(f"| {name} | {row['params'] / 1e6:.2f} | {row['macs'] / 1e9:.2f} | {cells} | {_tvm_label(row)} |")
    if report["speedups"]:
        lines += ["", "AttendNeXt's speed-up against each baseline (baseline median / AttendNeXt median, same engine):",
                  "", "| baseline | " + " | ".join(engines) + " |", "| --- | " + " | ".join("---:" for _ in engines) + " |"]
        for name, ratios in report["speedups"].items():
            lines.append(f"| {name} | " + " | ".join(f"{ratios[e]:.2f}x" for e in engines) + " |")
    if report.get("emulated"):
        lines += ["", "**EMULATED (qemu-user): these timings are not a performance figure of any ARM board.**"]
    lines += ["", *report.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def plot(report: dict, path) -> None:
    """Latency against parameters, one marker per engine, each point labelled with its model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = dict(zip(ENGINES_HOST, "osD"))
    engines = list(next(iter(report["models"].values()))["engines"])
    for engine in engines:
        points = [(row["params"] / 1e6, row["engines"][engine]["median_ms"], name)
                  for name, row in report["models"].items()]
        axes.scatter([p[0] for p in points], [p[1] for p in points], marker=markers.get(engine, "x"), label=engine)
        for x, y, name in points:
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    axes.set_xlabel("parameters (millions)")
    axes.set_yscale("log")
    axes.set_ylabel("median latency, batch 1 (ms, log scale)")
    title = f"{report['device']}, {report['threads']} threads"
    if report.get("emulated"):
        title = "EMULATED (qemu), not ARM performance: " + title
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic.staged_file(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def publish(report: dict, json_path=None) -> None:
    """bench.publish with this table; with `json_path`, the PNG beside the JSON and Markdown too."""
    publish_report(report, json_path, render=render_markdown)
    if json_path:
        plot(report, Path(json_path).with_suffix(".png"))


def run(preset, args) -> dict:
    """Build every model named by `args.models`, measure them side by side, return the report."""
    names = model_names(args.models)
    threads = preset.num_cores
    builds = build_models(preset, names, args.layout)
    rounds, per_round = interleaving(args.runs)
    command = (f"python -m compiler.bench --target {preset.name} --models {args.models} --runs {args.runs}"
               + (f" --layout {args.layout}" if args.layout else "") + (f" --tracker {args.tracker}" if args.tracker else ""))
    if preset.is_host:
        use_threads(threads)
        timers = timers_host(builds, threads)
        say(f"measuring {len(timers)} engines of {len(names)} models, {rounds} interleaved rounds of {per_round} runs")
        times = measure(timers, rounds, per_round)
        host = machine()
        report = {"target": preset.name, "device": f"{host['cpu_model']} ({host['llvm_cpu']})", "machine": host,
                  "emulated": False}
        notes = []
    else:
        announce_emulation(args.tracker)
        with open_session(preset, args.tracker) as session:
            device = describe_device(session)
            timers = timers_device(builds, session, threads)
            say(f"measuring {len(timers)} engines of {len(names)} models on {device.get('cpu_model', 'the device')}")
            times = measure(timers, rounds, per_round, warmup=1)
        emulated, name = device_label(device, args.tracker)
        report = {"target": preset.name, "emulated": emulated, "machine": device, "device": name}
        notes = [NO_TORCH_ON_DEVICE]
    models = model_rows(builds, times)
    untuned = [name for name, row in models.items() if not row["database"]["path"]]
    budgets = {name: row["database"]["budget"] for name, row in models.items() if row["database"]["path"]}
    if untuned:
        notes.append(f"Untuned (no tuning database for this target and CPU): {', '.join(untuned)}.")
    if len(set(budgets.values())) > 1:
        notes.append("The TVM databases were tuned to different budgets ("
                     + ", ".join(f"{name} {budget}" for name, budget in budgets.items())
                     + "): tune them to one with bench/tune_backbones.py before comparing TVM figures.")
    elif budgets and not untuned:
        notes.append(f"Every TVM database was tuned to the same budget: {next(iter(budgets.values()))} trials.")
    report.update(threads=threads, runs_per_engine=rounds * per_round, command=command, models=models,
                  speedups=speedups(models), notes=notes)
    return report
