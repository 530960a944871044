"""End-to-end checkpoints of a tuning run (`--checkpoint-every N`): every N trials the model is built with
the records so far and timed on the tuning device.

The scheduler's estimate (weight x best per kernel) leaves out the VM, copies, layout transforms and the
kernels no record covers, so the curve a user decides to stop on must be real latency. The log is
`checkpoints.json` beside the database, written atomically after each checkpoint; a resumed run continues
it: its next checkpoint is at the next multiple of N, and its minutes go on from the tuning time the log
holds. Minutes count tuning only; each checkpoint's own build and measurement time is recorded apart.
The libraries are kept (outside the database folder) so that a benchmark can time them again side by side.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Callable, Optional

from compiler import atomic, output, paths
from compiler.tuning.database import read_json

CHECKPOINTS = "checkpoints.json"


def shown(path: Path) -> str:
    """A library's path as the log keeps it: relative to the project when inside it (the log is committed
    beside a shipped database and must not name one machine's folders)."""
    return paths.shown(Path(path).resolve())


def library_path(entry: dict) -> Path:
    """Where a logged checkpoint's library is (a relative path is the project's)."""
    path = Path(entry["library"])
    return path if path.is_absolute() else paths.PROJECT_ROOT / path


def next_due(trials: int, every: int) -> int:
    """The first multiple of `every` above `trials`."""
    return (trials // every + 1) * every


def read_log(folder: Path) -> dict:
    """The checkpoint log of the database in `folder` ({"checkpoints": []} when it has none)."""
    path = Path(folder) / CHECKPOINTS
    data = read_json(path) if path.is_file() else {}
    data.setdefault("checkpoints", [])
    data.setdefault("tuning_seconds", 0.0)
    return data


class Checkpointer:
    """Takes a checkpoint when one is due. `build(trials, out_dir) -> library` builds with the records so
    far; `measure(library) -> runtime.Model.benchmark()'s dict` times it on the tuning device."""

    def __init__(self, folder: Path, every: int, trials_now: int, build: Callable, measure: Callable,
                 libraries: Path, device: dict, run_started: Optional[float] = None):
        self.folder, self.every, self.libraries, self.device = Path(folder), every, Path(libraries), device
        self.build, self.measure = build, measure
        self.log = read_log(self.folder)
        self.log["every"] = every
        self.offset = float(self.log["tuning_seconds"])
        self.run_started = run_started or time.time()  # the run's start: seeding and task extraction count
        self.paused = 0.0  # this run's seconds spent in checkpoints, not tuning
        taken = {c["trials"] for c in self.log["checkpoints"]}
        # A run's first point: where the curve starts (no records: untuned; seeded: after the seed) unless taken.
        self.due = trials_now if trials_now not in taken else next_due(trials_now, every)

    def tuning_seconds(self) -> float:
        return self.offset + (time.time() - self.run_started - self.paused)

    def maybe(self, trials: int, estimated_ms: Optional[float] = None, say=None) -> Optional[dict]:
        """Take a checkpoint if `trials` reached the next one due; returns its entry, or None."""
        if trials < self.due:
            return None
        started = time.time()
        minutes = self.tuning_seconds() / 60
        say = say or output.say
        say(f"checkpoint at {trials} trials: building with the records so far and timing it on the device")
        library = self.build(self.libraries / f"{trials:05d}")
        timing = self.measure(library)
        entry = {"trials": trials, "minutes": round(minutes, 3), "latency_ms": round(timing["median_ms"], 4),
                 "p90_ms": round(timing["p90_ms"], 4), "runs": timing["runs"],
                 "estimated_ms": None if estimated_ms is None else round(estimated_ms, 4),
                 "library": shown(library), "checkpoint_seconds": round(time.time() - started, 1),
                 "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        self.paused += time.time() - started
        self.log["checkpoints"] = [c for c in self.log["checkpoints"] if c["trials"] != trials] + [entry]
        self.log["device"] = self.device
        self.save()
        say(f"checkpoint at {trials} trials, {minutes:.1f} min of tuning: {entry['latency_ms']:.2f} ms end to end"
            + (f" (estimate {estimated_ms:.2f} ms)" if estimated_ms is not None else ""))
        self.due = next_due(trials, self.every)
        return entry

    def final(self, trials: int, estimated_ms: Optional[float] = None) -> Optional[dict]:
        """The point where a run ended (unless a checkpoint was just taken there)."""
        if any(c["trials"] == trials for c in self.log["checkpoints"]):
            return None
        self.due = trials
        return self.maybe(trials, estimated_ms)

    def save(self) -> None:
        """Write the log with the tuning time so far (after each checkpoint, and when the run ends)."""
        self.log["tuning_seconds"] = round(self.tuning_seconds(), 1)
        atomic.write_json(self.folder / CHECKPOINTS, self.log)
