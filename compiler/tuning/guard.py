"""A record must earn its place: per kernel, the best record against the kernel's default schedule, in the model.

MetaSchedule picks each kernel's record from candidates timed alone, a few trials each; applied kernel by
kernel in place of the default schedules, such records made a lightly tuned library slower than no tuning at
all. So, at the end of a tuning run, the model is built twice (every record applied; default schedules only)
and each kernel's cost is taken in both, in the model: on this machine, its time under the Relax VM's per-call
instrument in alternating blocks (compiler/device/kernel_times.py); with no board, its cycle estimate on the
preset's core (compiler/device/cycle_estimate.py, deterministic: one round). A kernel keeps its record only if
that record is at least MARGIN cheaper than its default schedule there (in a majority of the blocks and in
their median); otherwise the build gives it the default schedule.

The verdicts go to `kernel_choices.json` beside the database, stamped with the model and the records they
judged; a database tuned further is judged again at the end of its next run (until then, the verdicts of
the kernels judged stand).
"""
from __future__ import annotations

import datetime
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

from compiler import atomic
from compiler.errors import UserError
from compiler.output import say

CHOICES = "kernel_choices.json"
MARGIN = 0.02  # a record must beat its default schedule by this much in the model: less is noise
ROUNDS, RUNS, PAUSE_S = 7, 5, 0.5  # alternating blocks per library, inferences per block, pause before each block


@dataclass
class Measure:
    """How a kernel's cost in the model is taken: `cost(library, inputs, runs) -> {kernel: cost per inference}`,
    in `unit`, over `rounds` alternating blocks of `runs` inferences."""
    cost: Callable
    unit: str
    rounds: int
    runs: int
    pause: float
    method: str


def read(folder: Path) -> dict:
    """The database's verdicts ({} when none was judged)."""
    path = Path(folder) / CHOICES
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}): delete it, and run the tuning command again to judge "
                        "the records anew") from None


def kept_default(folder: Path, model_sha256: str) -> Dict[str, str]:
    """{kernel: why} of the kernels whose record lost to their default schedule, for this model; {} otherwise."""
    choices = read(folder)
    if choices.get("model_sha256") != model_sha256:
        return {}
    return {name: verdict["why"] for name, verdict in choices.get("kernels", {}).items()
            if verdict["choice"] == "default"}


PREPACKED = "_prepacked"  # TVM's SplitLayoutRewritePreproc names a prepacked kernel's compute part so


def by_kernel(costs) -> Dict[str, float]:
    """(name in the library, cost) pairs summed per kernel name of the tunable module."""
    totals: Dict[str, float] = {}
    for name, cost in costs:
        kernel = name[:-len(PREPACKED)] if name.endswith(PREPACKED) else name
        totals[kernel] = totals.get(kernel, 0.0) + cost
    return totals


def per_kernel_ms(library: Path, inputs: list, runs: int) -> Dict[str, float]:
    """Milliseconds per inference of each kernel of a host library, from one block of `runs` inferences."""
    from compiler.device.kernel_times import tvm_kernel_times

    return by_kernel((name, ms / runs) for name, (_, ms) in tvm_kernel_times(library, inputs, runs).items())


def host_time() -> Measure:
    return Measure(per_kernel_ms, "ms per inference", ROUNDS, RUNS, PAUSE_S,
                   f"both libraries in {ROUNDS} alternating blocks of {RUNS} inferences on this machine, Relax VM "
                   "per-call instrument")


def cycle_estimate(mcpu: str) -> Measure:
    """Per-kernel estimated cycles on the core `mcpu`, one thread in the emulated Pi (a model: no noise)."""
    def cost(library, inputs, runs):
        from compiler.device import cycle_estimate as estimate

        rows = estimate.measure("tvm", library, mcpu, per_kernel=True, n=runs)["kernels"]
        return by_kernel((row["name"], row["cycles"]) for row in rows)
    return Measure(cost, "estimated cycles per inference", 1, 1, 0.0,
                   f"both libraries' per-kernel cycle estimate on {mcpu} (one thread, emulated Pi; a model, no board)")


def judge(tuned: Path, defaults: Path, inputs: list, kernels: list, measure: Measure) -> Dict[str, dict]:
    """Per kernel of `kernels`: its cost with its record (library `tuned`) and with its default schedule
    (library `defaults`), taken in `measure.rounds` alternating blocks, and the verdict."""
    samples = {name: ([], []) for name in kernels}
    for _ in range(measure.rounds):
        for side, library in enumerate((tuned, defaults)):
            time.sleep(measure.pause)  # the other library's thread pool spins after its block: let it settle
            block = measure.cost(library, inputs, measure.runs)
            for name in kernels:
                if name in block:
                    samples[name][side].append(block[name])
    verdicts = {}
    for name, (with_record, with_default) in samples.items():
        if not with_record or len(with_record) != len(with_default):
            continue  # not called by the model (or not a kernel of its own)
        wins = sum(r < d * (1 - MARGIN) for r, d in zip(with_record, with_default))
        record, default = statistics.median(with_record), statistics.median(with_default)
        keep = wins > len(with_record) // 2 and record < default * (1 - MARGIN)
        ratio = record / default if default > 0 else float("inf")
        verdicts[name] = {"choice": "record" if keep else "default", "with_record": round(record, 5),
                          "with_default": round(default, 5), "wins": f"{wins}/{len(with_record)}",
                          "why": (f"record {ratio:.2f}x its default schedule in the model" if keep else
                                  f"record {ratio:.2f}x its default schedule in the model, cheaper in "
                                  f"{wins} of {len(with_record)} blocks: not {MARGIN:.0%} cheaper")}
    return verdicts


def write(database, model_sha256: str, device: dict, measure: Measure, verdicts: Dict[str, dict]) -> None:
    """The verdicts into the database folder, atomically, with what they judged; their summary into its
    provenance."""
    lost = {name: v["why"] for name, v in verdicts.items() if v["choice"] == "default"}
    trials = database.record_count()
    atomic.write_json(Path(database.path) / CHOICES, {
        "model_sha256": model_sha256, "trials": trials, "device": device, "unit": measure.unit,
        "judged": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": f"{measure.method}; a record is kept if at least {MARGIN:.0%} cheaper than its default schedule "
                  "in a majority of the blocks and in their median",
        "kernels": verdicts})
    database.write_provenance({**database.provenance, "kernel_choices": {
        "file": CHOICES, "trials": trials, "kernels_tuned": len(verdicts) - len(lost), "kernels_default": lost}})


def due(database) -> bool:
    """Whether the database holds records no verdict has judged yet."""
    return read(database.path).get("trials") != database.record_count()


def guard_run(database, model_sha256: str, build: Callable[[bool, Path], Path], kernels: list, inputs: list,
              work: Path, device: dict, measure: Measure) -> Dict[str, dict]:
    """Judge a database's records for this model's `kernels` (those a record covers):
    `build(with_records, out_dir) -> library`. Writes and returns the verdicts, announcing the result."""
    tuned, defaults = build(True, work / "records"), build(False, work / "defaults")
    say(f"      judging {len(kernels)} kernels' records against their default schedules in the model "
        f"({measure.method})")
    verdicts = judge(tuned, defaults, inputs, kernels, measure)
    write(database, model_sha256, device, measure, verdicts)
    lost = sorted(name for name, v in verdicts.items() if v["choice"] == "default")
    say(f"      {len(verdicts) - len(lost)} of {len(verdicts)} records kept; {len(lost)} kernels keep their default "
        f"schedule, cheaper in the model ({Path(database.path).name}/{CHOICES})")
    return verdicts
