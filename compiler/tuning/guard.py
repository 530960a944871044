"""A record must earn its place: per kernel, the best record against the kernel's default schedule, in the model.

MetaSchedule picks each kernel's record from candidates timed alone, a few trials each; applied kernel by
kernel in place of the default schedules, such records made a lightly tuned library slower than no tuning at
all. So, at the end of a tuning run on this machine, the model is built twice (every record applied; default
schedules only) and both are run in alternating blocks under the Relax VM's per-call instrument
(compiler/device/kernel_times.py): a kernel keeps its record only if that record is at least MARGIN faster than
its default schedule there, in a majority of the blocks; otherwise the build gives it the default schedule.

The verdicts go to `kernel_choices.json` beside the database, stamped with the records they judged: a
database tuned further is judged again before its new records count (until then the verdicts of the records
they judged stand, and the new kernels' records apply as MetaSchedule picks them).
"""
from __future__ import annotations

import datetime
import statistics
import time
from pathlib import Path
from typing import Callable, Dict

from compiler import atomic
from compiler.output import say

CHOICES = "kernel_choices.json"
MARGIN = 0.02  # a record must beat its default schedule by this much in the model: less is noise
ROUNDS, RUNS, PAUSE_S = 7, 5, 0.5  # alternating blocks per library, inferences per block, pause before each block


def read(folder: Path) -> dict:
    """The database's verdicts ({} when none was judged)."""
    from compiler.tuning.database import read_json

    path = Path(folder) / CHOICES
    return read_json(path) if path.is_file() else {}


def kept_default(folder: Path, model_sha256: str) -> Dict[str, str]:
    """{kernel: why} of the kernels whose record lost to their default schedule, for this model; {} otherwise."""
    choices = read(folder)
    if choices.get("model_sha256") != model_sha256:
        return {}
    return {name: verdict["why"] for name, verdict in choices.get("kernels", {}).items()
            if verdict["choice"] == "default"}


PREPACKED = "_prepacked"  # TVM's SplitLayoutRewritePreproc names a prepacked kernel's compute part so


def per_kernel_ms(library: Path, inputs: list, runs: int) -> Dict[str, float]:
    """Milliseconds per inference of each kernel of a host library (by its name in the tunable module), from
    one block of `runs` inferences."""
    from compiler.device.kernel_times import tvm_kernel_times

    times: Dict[str, float] = {}
    for name, (_, ms) in tvm_kernel_times(library, inputs, runs).items():
        kernel = name[:-len(PREPACKED)] if name.endswith(PREPACKED) else name
        times[kernel] = times.get(kernel, 0.0) + ms / runs
    return times


def judge(tuned: Path, defaults: Path, inputs: list, kernels: list, measure: Callable = per_kernel_ms,
          rounds: int = ROUNDS, runs: int = RUNS, pause: float = PAUSE_S) -> Dict[str, dict]:
    """Per kernel of `kernels`: its time with its record (library `tuned`) and with its default schedule
    (library `defaults`), measured in `rounds` alternating blocks, and the verdict."""
    samples = {name: ([], []) for name in kernels}
    for _ in range(rounds):
        for side, library in enumerate((tuned, defaults)):
            time.sleep(pause)  # the other library's thread pool spins after its block: let it settle
            block = measure(library, inputs, runs)
            for name in kernels:
                if name in block:
                    samples[name][side].append(block[name])
    verdicts = {}
    for name, (with_record, with_default) in samples.items():
        if not with_record or len(with_record) != len(with_default):
            continue  # not called by the model (or not a kernel of its own)
        wins = sum(r < d * (1 - MARGIN) for r, d in zip(with_record, with_default))
        record_ms, default_ms = statistics.median(with_record), statistics.median(with_default)
        keep = wins > len(with_record) // 2 and record_ms < default_ms * (1 - MARGIN)
        ratio = record_ms / default_ms if default_ms > 0 else float("inf")
        verdicts[name] = {"choice": "record" if keep else "default", "record_ms": round(record_ms, 5),
                          "default_ms": round(default_ms, 5), "wins": f"{wins}/{len(with_record)}",
                          "why": (f"record {ratio:.2f}x its default schedule in the model" if keep else
                                  f"record {ratio:.2f}x its default schedule in the model, faster in "
                                  f"{wins} of {len(with_record)} blocks: not {MARGIN:.0%} faster")}
    return verdicts


def write(database, model_sha256: str, device: dict, verdicts: Dict[str, dict]) -> None:
    """The verdicts into the database folder, atomically, with what they judged; their summary into its
    provenance."""
    lost = {name: v["why"] for name, v in verdicts.items() if v["choice"] == "default"}
    trials = database.record_count()
    atomic.write_json(Path(database.path) / CHOICES, {
        "model_sha256": model_sha256, "trials": trials, "device": device,
        "judged": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": f"both libraries in {ROUNDS} alternating blocks of {RUNS} inferences, Relax VM per-call "
                  f"instrument; a record is kept if at least {MARGIN:.0%} faster than its default schedule in a "
                  "majority of the blocks and in their median",
        "kernels": verdicts})
    database.write_provenance({**database.provenance, "kernel_choices": {
        "file": CHOICES, "trials": trials, "kernels_tuned": len(verdicts) - len(lost), "kernels_default": lost}})


def guard_run(database, model_sha256: str, build: Callable[[bool, Path], Path], kernels: list, inputs: list,
              work: Path, device: dict) -> Dict[str, dict]:
    """Judge a host database's records for this model's `kernels` (those a record covers):
    `build(with_records, out_dir) -> library`. Writes and returns the verdicts, announcing the result."""
    tuned, defaults = build(True, work / "records"), build(False, work / "defaults")
    say(f"      judging {len(kernels)} kernels' records against their default schedules in the model "
        f"({ROUNDS} alternating blocks of {RUNS} inferences)")
    verdicts = judge(tuned, defaults, inputs, kernels)
    write(database, model_sha256, device, verdicts)
    lost = sorted(name for name, v in verdicts.items() if v["choice"] == "default")
    say(f"      {len(verdicts) - len(lost)} of {len(verdicts)} records kept; {len(lost)} kernels keep their default "
        f"schedule, faster in the model ({Path(database.path).name}/{CHOICES})")
    return verdicts
