"""Tuning throughput in trials per minute: MetaSchedule's stock builder against the project's persistent
builder (host), and 1, 2 and 4 emulated aarch64 servers behind a tracker (rpi4 preset).

    .venv/bin/python bench/tuning_throughput.py --compare builders --trials 64
    .venv/bin/python bench/tuning_throughput.py --compare servers --servers 1,2,4 --trials 32 \
        --json bench/results/tuning-throughput-servers.json

Each configuration tunes AttendNeXt from an empty database with the same budget. Emulated servers
measure the farm's machinery (tracker, uploads, queueing, the host building and cross-linking the next
batch while the servers measure), not how fast a Pi is: every emulated server shares this machine's
cores, so the plot says so. With --json the rows, command and machine go there and a PNG beside it.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.frontend import onnx_model  # noqa: E402
from compiler.passes import pipeline
from compiler import targets
from compiler.tuning import tune as tuning
from compiler.tuning import database as tuning_db
from compiler import paths  # noqa: E402
from compiler.frontend.onnx_export import export_attendnext  # noqa: E402


def run(preset_name, options: tuning.TuneOptions, mod_cache: dict) -> dict:
    """Trials per minute of one configuration: over the whole command (start-up included) and steady (from its
    first batch's build on)."""
    preset = targets.load(preset_name)
    if preset_name not in mod_cache:
        model = onnx_model.load(paths.exported_onnx("attendnext"))
        mod_cache[preset_name] = (pipeline.tunable_module(pipeline.import_onnx(model), preset.tvm_target()), model)
    mod, model = mod_cache[preset_name]
    database = tuning_db.TuningDatabase(Path(tempfile.mkdtemp(prefix="dcac-throughput-")))
    started = time.time()
    summary = tuning.tune(mod, preset, database, options, model.sha256, pipeline.fingerprint("stock"))
    minutes = (time.time() - started) / 60
    return {"whole_run": round(summary.trials_run / minutes, 2), "minutes": round(minutes, 2),
            "steady": summary.steady_trials_per_minute and round(summary.steady_trials_per_minute, 2)}


def plot(rows, path: Path, emulated: bool) -> None:
    """Trials per minute per configuration; an emulated farm's plot says what it measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compiler import atomic

    figure, axis = plt.subplots(figsize=(7, 4))
    names = [name.split(", ")[-1] for name, _ in rows]
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], [rate["steady"] or 0 for _, rate in rows], width=0.4,
             label="steady (from the first batch's build)")
    axis.bar([p + 0.2 for p in positions], [rate["whole_run"] for _, rate in rows], width=0.4,
             label="whole run (start-up included)")
    axis.set_xticks(list(positions), names)
    axis.set_ylabel("trials per minute")
    axis.legend(fontsize=8)
    axis.set_title("AttendNeXt tuning throughput" + (
        "\nEMULATED servers (qemu on this host):\nthe farm's machinery, not ARM speed" if emulated else ""), fontsize=10)
    figure.tight_layout()
    with atomic.staged_file(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=["builders", "servers"], required=True)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--servers", default="1,2", help="with --compare servers: comma list of server counts")
    parser.add_argument("--json", help="write the rows, command and machine here (e.g. bench/results/...)")
    args = parser.parse_args()
    export_attendnext(paths.exported_onnx("attendnext"))
    cache, rows = {}, []
    if args.compare == "builders":
        for builder in ("stock", "persistent"):
            rate = run("host", tuning.TuneOptions(trials=args.trials, builder=builder, trials_per_iter=8), cache)
            rows.append((f"host, {builder} builder", rate))
    else:
        for servers in (int(n) for n in args.servers.split(",")):
            rate = run("rpi4", tuning.TuneOptions(trials=args.trials, servers=servers, trials_per_iter=8), cache)
            rows.append((f"rpi4 (emulated), {servers} server(s)", rate))
    print("\n| configuration | trials per minute, steady | trials per minute, whole run | minutes |\n"
          "| --- | ---: | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate['steady'] or float('nan'):.1f} | {rate['whole_run']:.1f} | {rate['minutes']:.1f} |")
    base = rows[0][1]["steady"]
    for name, rate in rows[1:]:
        if base and rate["steady"]:
            print(f"steady ratio: {rate['steady'] / base:.2f}x ({name} vs {rows[0][0]}), {args.trials} trials each")
    if args.json:
        from compiler import atomic
        from compiler.bench.measure import machine

        command = " ".join(["python bench/tuning_throughput.py", *sys.argv[1:]])
        atomic.write_json(args.json, {"command": command, "machine": machine(), "trials_per_minute": dict(rows),
                                      "emulated": args.compare == "servers"})
        plot(rows, Path(args.json).with_suffix(".png"), args.compare == "servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
