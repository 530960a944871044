"""`python -m compiler bench --target rpi4 --count-instructions`: the ARM measurement with no board.

Each model is built for the aarch64 preset as `compile.py` builds it (its database if one applies, else the
default schedules), then its library and ONNX Runtime's aarch64 build on the same ONNX file are run one
after the other in the emulated Pi under qemu's counting plugins (compiler/device/instruction_count.py):
aarch64 instructions per inference and the simulated L1/L2 misses of the preset's CPU, one thread each.
These are proxies to rank code by, side by side: never a latency. They ignore latencies, issue width,
memory bandwidth and contention between threads (a multi-threaded library is counted on one thread).
"""
import math
import tempfile
from pathlib import Path

from compiler import paths, zoo
from compiler.bench.measure import machine, publish
from compiler.device import cycle_estimate, instruction_count
from compiler.driver import CompileOptions, compile_model
from compiler.errors import UserError
from compiler.frontend import quantize as quantize_module
from compiler.output import say

PROXY = ("proxies under qemu emulation, one thread: estimated cycles (a model: llvm-mca's scheduling model of the core "
         "plus simulated misses at published latencies, docs/cycle-estimate.md), instructions and simulated misses; they "
         "rank code and are NOT a latency of any ARM board")
COLUMNS = [("cycles", "estimated cycles"), ("insns", "instructions"), ("dmiss", "L1D misses"), ("l2miss", "L2 misses")]


def _million(value) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} M"


def count_model(preset, name: str, work: Path, cache_model: bool, per_kernel: bool, default_schedules=True,
                quantize=None) -> dict:
    """Build `name` for `preset` and count it beside ONNX Runtime: {engine: per-inference counters, ...}.
    With `quantize="int8"`, TVM and ONNX Runtime run the int8 model (the same QDQ file) and the float TVM
    library is counted too ("TVM float")."""
    mcpu = str(preset.target.get("mcpu"))
    built = compile_model(CompileOptions(target=preset.name, model=name, default_schedules=default_schedules,
                                         quantize=quantize, out=str(work / f"{name}-{preset.name}-{default_schedules}")))
    plugin = "cache" if cache_model else "insn"
    row = {"tuning": built.sidecar["tuning"], "engines": {}}
    engines = [("TVM", "tvm", built.library), ("ONNX Runtime", "ort", paths.exported_onnx(name))]
    if quantize:
        row["quantization"] = built.sidecar["quantization"]
        float_build = compile_model(CompileOptions(target=preset.name, model=name, default_schedules=default_schedules,
                                                   out=str(work / f"{name}-{preset.name}-float")))
        engines = [("TVM", "tvm", built.library),
                   ("ONNX Runtime", "ort", paths.quantized_onnx(name, quantize_module.activation_type(preset))),
                   ("TVM float", "tvm", float_build.library)]
    for engine, runner, model in engines:
        kernels = per_kernel and engine == "TVM"
        if cache_model:   # the cycle estimate needs the misses: a block-profile run, then the cache run
            say(f"estimating cycles of {engine} on {name} in the emulated {mcpu} (block profile and cache plugins)")
            result = cycle_estimate.measure(runner, model, mcpu, per_kernel=kernels)
            estimate = {k: v for k, v in result["per_inference"].items() if k != "top_blocks"}
            row["engines"][engine] = {"per_inference": {**result["counters"], "cycles": estimate["cycles"]},
                                      "cycles": estimate, "seconds": result["seconds"],
                                      "version": result["guest"]["version"]}
        else:
            say(f"counting {engine} on {name} in the emulated {mcpu} ({plugin} plugin)")
            result = instruction_count.count(runner, model, mcpu, plugin, per_kernel=kernels)
            row["engines"][engine] = {"per_inference": result["per_inference"], "seconds": result["seconds"],
                                      "version": result["guest"]["version"]}
        if "kernels" in result:
            row["kernels"] = result["kernels"]
    tvm, ort = row["engines"]["TVM"]["per_inference"], row["engines"]["ONNX Runtime"]["per_inference"]
    row["ratios"] = {key: tvm[key] / ort[key] for key, _ in COLUMNS if tvm.get(key) and ort.get(key)}
    if quantize:
        row["int8_vs_float"] = {key: tvm[key] / row["engines"]["TVM float"]["per_inference"][key]
                                for key, _ in COLUMNS if tvm.get(key) and row["engines"]["TVM float"]["per_inference"].get(key)}
    return row


def render(report: dict) -> str:
    subject = (f" TVM and ONNX Runtime both run each model's {report['quantize']} QDQ model." if report.get("quantize")
               else "")
    lines = [f"**{report['proxy']}.** Per inference on the emulated {report['mcpu']} ({report['target']} preset), "
             f"counted on {report['device']} ({report['command']}).{subject}", "",
             "| model | kernels: database / default / total | " + " | ".join(
                 f"TVM {label} | ONNX Runtime {label} | TVM / ORT" for _, label in COLUMNS if report["cache_model"]
                 or _ == "insns") + " |",
             "| --- | --- | " + " | ".join("---: | ---: | ---:" for key, _ in COLUMNS
                                          if report["cache_model"] or key == "insns") + " |"]
    for name, row in report["models"].items():
        tvm, ort = row["engines"]["TVM"]["per_inference"], row["engines"]["ONNX Runtime"]["per_inference"]
        tuning = row["tuning"]
        cells = [f"{_million(tvm.get(key))} | {_million(ort.get(key))} | "
                 + (f"{row['ratios'][key]:.2f}x" if key in row["ratios"] else "-")
                 for key, _ in COLUMNS if report["cache_model"] or key == "insns"]
        lines.append(f"| {name} | {tuning['kernels_tuned']} / {tuning.get('kernels_default', 0)} / "
                     f"{tuning['kernels_total']} | " + " | ".join(cells) + " |")
    if report.get("quantize"):
        lines += ["", f"{report['quantize']}: TVM and ONNX Runtime run the same QDQ model (ONNX Runtime's quantizer, "
                  "per-channel int8 weights); TVM {0} / TVM float, same preset:".format(report["quantize"]), "",
                  "| model | TVM float instructions | TVM int8 / float instructions | int8 vs float (SQNR, top-1) |",
                  "| --- | ---: | ---: | --- |"]
        for name, row in report["models"].items():
            agreement = row["quantization"]
            top1 = "-" if agreement["top1_agreement"] is None else f"{agreement['top1_agreement']:.0%}"
            lines.append(f"| {name} | {_million(row['engines']['TVM float']['per_inference'].get('insns'))} | "
                         f"{row['int8_vs_float'].get('insns', float('nan')):.2f}x | {agreement['sqnr_db']:.1f} dB, {top1} |")
    if report.get("geomean"):
        lines += ["", "Geometric mean of TVM / ONNX Runtime: " + ", ".join(
            f"{label} {report['geomean'][key]:.2f}x" for key, label in COLUMNS if key in report["geomean"]) + "."]
    for name, row in report["models"].items():
        if row.get("kernels"):
            key = "cycles" if "cycles" in row["kernels"][0] else "insns"
            lines += ["", f"TVM per VM call, {name} (one inference; each includes about 11,000 instructions of the "
                      "VM instrument's round trip)", "",
                      "| calls | estimated cycles | instructions | share | kernel |" if key == "cycles" else
                      "| calls | instructions | share | kernel |",
                      "| ---: | ---: | ---: | ---: | --- |" if key == "cycles" else "| ---: | ---: | ---: | --- |"]
            total = sum(k.get(key, 0) for k in row["kernels"])
            for kernel in row["kernels"][:15]:
                cycles = f"{_million(kernel.get('cycles'))} | " if key == "cycles" else ""
                lines.append(f"| {kernel['calls']} | {cycles}{_million(kernel.get('insns'))} | "
                             f"{100 * kernel.get(key, 0) / max(total, 1):.1f}% | `{kernel['name']}` |")
    return "\n".join(lines) + "\n"


def run(preset, args) -> dict:
    """Count every model named by --models (default AttendNeXt) for the aarch64 `preset`."""
    if preset.is_host:
        raise UserError("--count-instructions counts aarch64 code in the emulated Pi: give an aarch64 preset, "
                        "e.g. --target rpi4")
    if str(preset.target.get("mcpu")) not in instruction_count.CACHES:
        raise UserError(f"--count-instructions has cache models for {', '.join(instruction_count.CACHES)}, not "
                        f"'{preset.target.get('mcpu')}': count a preset with one of those CPUs")
    names = [n.strip() for n in (args.models or "attendnext").replace("all", ",".join(zoo.MODELS)).split(",")
             if n.strip()]
    for name in names:
        zoo.lookup(name)
    work = Path(tempfile.mkdtemp(prefix="dcac-count-"))
    cache_model = args.cache_model == "on"
    quantize = getattr(args, "quantize", None)
    models = {name: count_model(preset, name, work, cache_model, args.per_kernel, quantize=quantize) for name in names}
    geomean = {key: math.exp(sum(math.log(m["ratios"][key]) for m in models.values()) / len(models))
               for key, _ in COLUMNS if all(key in m["ratios"] for m in models.values())}
    host = machine()
    command = (f"python -m compiler bench --target {preset.name} --count-instructions --models {','.join(names)}"
               f" --cache-model {args.cache_model}" + (" --per-kernel" if args.per_kernel else "")
               + (f" --quantize {quantize}" if quantize else "") + (f" --json {args.json}" if args.json else ""))
    return {"proxy": PROXY, "target": preset.name, "mcpu": str(preset.target.get("mcpu")), "cache_model": cache_model,
            "device": f"{host['cpu_model']} ({host['llvm_cpu']}) running qemu-aarch64", "machine": host,
            "command": command, "models": models, "geomean": geomean, "quantize": quantize}


def publish_report(report: dict, json_path=None) -> None:
    publish(report, json_path, render=render)
