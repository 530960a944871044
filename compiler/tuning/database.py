"""Tuning databases on disk: `tuning_logs/<target>/<model>/`, MetaSchedule's JSON files plus provenance.

One database per target, CPU and model: MetaSchedule's JSONDatabase ignores the target on lookup (it
matches a kernel's structural hash only), so a database must never be picked up by a build for another
CPU without saying so. Each records the pipeline fingerprint it was tuned under (compiler/passes/pipeline.py):
records of another pipeline match no kernel, and applying them would silently leave the build untuned. A crash can cut the last line of a
record file; `repair` drops such a line so every complete record still loads; any other damage (a
provenance.json edited by hand, a record naming a workload the workload file lacks) is one line naming the
folder and the fix, not TVM's C++ traceback.

The database owns its provenance.json: a run is opened, closed, marked interrupted or given its seed
through the methods below, each a read-modify-write of the file on disk under the database's write lock
(compiler/tuning/lock.py), so no run's entry is lost or overwritten.
"""
import dataclasses
import datetime
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from compiler import atomic, paths
from compiler.device.session import host_description
from compiler.errors import UserError
from compiler.output import say, warn
from compiler.passes.pipeline import fingerprint as pipeline_fingerprint
from compiler.tuning import guard, lock

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
PROVENANCE = "provenance.json"
BOARD_LESS_SUFFIX = "-no-board"   # a database tuned against the cycle estimate (estimate_runner.py), not a board


def cpu_of(preset) -> str:
    """The CPU a database belongs to: the preset's LLVM cpu (the host preset resolves "native" to this
    machine's, as TVM detects it)."""
    return str(preset.target.get("mcpu", "generic"))


def folder_name(model_name: str, fusion: str = "stock", layout: str = "plain") -> str:
    """<model>[-<fusion>][-<layout>]: another fusion mode or weight layout makes other kernels."""
    return "-".join([model_name] + ([fusion] if fusion != "stock" else []) + ([layout] if layout != "plain" else []))



def default_path(target_name: str, cpu: str, model_name: str, fusion: str = "stock", layout: str = "plain") -> Path:
    """tuning_logs/<target>/<cpu>/<model>[-<fusion>][-<layout>]/."""
    return paths.tuning_logs() / target_name / cpu / folder_name(model_name, fusion, layout)


@dataclass(frozen=True)
class DatabaseKey:
    """Whose database: a target preset (and so its CPU), a model, a fusion mode and a weight layout. Each
    decides the kernels or the timings, so each is part of the folder: tuning_logs/<target>/<cpu>/<name>/."""

    preset: object
    model_name: str
    fusion: str = "stock"
    layout: str = "plain"

    @property
    def cpu(self) -> str:
        return cpu_of(self.preset)

    def folder(self, cpu: Optional[str] = None, layout: Optional[str] = None) -> Path:
        """This key's folder, or the same key's for another CPU or layout."""
        return default_path(self.preset.name, cpu or self.cpu, self.model_name, self.fusion, layout or self.layout)

    def board_less_folder(self) -> Path:
        """Where this key's database tuned with no board lives: beside the board's, never in its place."""
        folder = self.folder()
        return folder.with_name(folder.name + BOARD_LESS_SUFFIX)

    def with_layout(self, layout: str) -> "DatabaseKey":
        return dataclasses.replace(self, layout=layout)


def _complete_lines(path: Path):
    """Split a JSON-lines file into its complete (parseable, newline-ended) lines and the broken rest."""
    data = path.read_bytes()
    good, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            json.loads(line)
            good.append(line)
        except ValueError:
            bad += 1
    return good, bad


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}): restore it from the copy it came with, or tune "
                        "into a new --database folder") from None


def json_database(workload_file: Path, record_file: Path):
    """MetaSchedule's JSONDatabase over the two files, or a UserError if they do not load. The tensor intrinsics
    are registered first: an int8 database's traces name them (schedules/intrinsics.py), and reading a trace
    whose intrinsic is unknown fails."""
    from tvm.s_tir import meta_schedule as ms

    from schedules import intrinsics

    intrinsics.register()
    try:
        return ms.database.JSONDatabase(path_workload=str(workload_file), path_tuning_record=str(record_file),
                                        allow_missing=True)
    except (RuntimeError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[-1].replace("parallel_for_dynamic error with ", "") if lines else type(err).__name__
        if "workload_index" in detail:
            detail = f"a record names a workload that {Path(workload_file).name} does not have"
        raise UserError(f"the tuning database in {Path(record_file).parent} is damaged ({detail.rstrip(': ')}): "
                        "restore its files from the copy they came with, or tune into a new --database folder") \
            from None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class TuningDatabase:
    path: Path

    @property
    def workload_file(self) -> Path:
        return self.path / WORKLOADS

    @property
    def record_file(self) -> Path:
        return self.path / RECORDS

    def exists(self) -> bool:
        return self.workload_file.is_file() and self.record_file.is_file()

    @property
    def provenance(self) -> dict:
        path = self.path / PROVENANCE
        return read_json(path) if path.is_file() else {}

    def write_provenance(self, data: dict) -> None:
        atomic.write_json(self.path / PROVENANCE, data)

    def writing(self, wait: bool = False, command: Optional[str] = None):
        """The write lock, for a block that writes records, checkpoints, the report or provenance."""
        return lock.exclusive(self.path, wait=wait, command=command)

    def open_run(self, identity: dict, run: dict) -> None:
        """Start this run's provenance entry (`run`, plain values) and write the database's identity (target,
        CPU, pipeline, ...). An entry an earlier run left open is closed as interrupted first: that run held
        the write lock, so its process is gone; its finished records are in the database."""
        provenance = self.provenance
        runs = list(provenance.get("runs", []))
        self._close_open_entry(runs)
        runs.append({**run, "started": _now(), "trials_before": self.record_count(), "pid": os.getpid()})
        self.write_provenance({**provenance, **identity, "device": provenance.get("device", identity.get("device")),
                               "trials": self.record_count(), "created": provenance.get("created", _now()),
                               "updated": _now(), "runs": runs})

    def close_run(self, minutes: float, stopped_tasks: dict) -> None:
        """End this run's entry with the trials now in the database."""
        provenance = self.provenance
        if not provenance:
            return
        runs = provenance.get("runs") or []
        if runs and "ended" not in runs[-1]:
            runs[-1].update(ended=_now(), trials_after=self.record_count(), minutes=round(minutes, 1),
                            stopped_tasks=stopped_tasks)
        self.write_provenance({**provenance, "trials": self.record_count(), "updated": _now()})

    def mark_interrupted(self) -> None:
        """Close an open run entry as interrupted, with the records it left (they all count on resume)."""
        provenance = self.provenance
        runs = provenance.get("runs") or []
        if self._close_open_entry(runs):
            self.write_provenance({**provenance, "trials": self.record_count(), "updated": _now()})

    def note_progress(self) -> None:
        """The trial count so far into provenance.json, after every batch: a database copied (or committed)
        mid-run says how many records it holds."""
        provenance = self.provenance
        if provenance:
            self.write_provenance({**provenance, "trials": self.record_count(), "updated": _now()})

    def record_seed(self, seed: dict) -> None:
        """The seed's source and counts in this run's entry (and so in the report)."""
        provenance = self.provenance
        if provenance.get("runs"):
            provenance["runs"][-1]["seed"] = seed
            self.write_provenance(provenance)

    def thread_counts(self) -> set:
        """The thread counts earlier runs measured candidates on (None: TVM's default)."""
        return {(run.get("device") or {}).get("tvm_threads") for run in self.provenance.get("runs") or []}

    def _close_open_entry(self, runs: list) -> bool:
        if runs and "ended" not in runs[-1]:
            runs[-1].update(ended="interrupted", trials_after=self.record_count())
            return True
        return False

    @property
    def board_less(self) -> bool:
        """Tuned against the cycle estimate, with no board (compiler/tuning/estimate_runner.py)."""
        return self.provenance.get("measured_by") == "cycle-estimate"

    @property
    def emulated(self) -> bool:
        return bool(self.provenance.get("device", {}).get("emulated", False))

    @property
    def cpu(self) -> Optional[str]:
        """The LLVM cpu its records were measured for (None for a database older than this field)."""
        provenance = self.provenance
        return provenance.get("cpu") or provenance.get("target", {}).get("mcpu")

    @property
    def fingerprint_hash(self) -> Optional[str]:
        return self.provenance.get("pipeline", {}).get("hash")

    def describe_cpu(self) -> str:
        device = self.provenance.get("device", {})
        model = device.get("cpu_model")
        return f"'{self.cpu}'" + (f" ({model})" if model and "unknown" not in model else "")

    def repair(self) -> int:
        """Drop lines a crash cut short; returns how many were dropped. Complete records are kept."""
        dropped = 0
        for path in (self.workload_file, self.record_file):
            if not path.is_file():
                continue
            good, bad = _complete_lines(path)
            if bad:
                atomic.write_text(path, b"\n".join(good).decode() + ("\n" if good else ""))
                dropped += bad
        return dropped

    def record_count(self) -> int:
        if not self.record_file.is_file():
            return 0
        return len(_complete_lines(self.record_file)[0])

    def load(self, for_writing: bool = False):
        """MetaSchedule's JSONDatabase over these files (repaired first), created if absent. A writer
        (`for_writing`) holds the write lock already. A reader repairs and reads in place only if no one
        holds it; while a tuning run writes, a reader gets the complete records as they are and touches nothing."""
        self.path.mkdir(parents=True, exist_ok=True)
        if for_writing:
            return self._repaired()
        with lock.unless_held(self.path) as free:
            if free:
                return self._repaired()
            with tempfile.TemporaryDirectory(prefix="dcac-db-") as snapshot:
                copies = []
                for path in (self.workload_file, self.record_file):
                    copy = Path(snapshot) / path.name
                    good = _complete_lines(path)[0] if path.is_file() else []
                    copy.write_bytes(b"".join(line + b"\n" for line in good))
                    copies.append(copy)
                return json_database(*copies)  # read whole at construction: the snapshot may go

    def _repaired(self):
        dropped = self.repair()
        if dropped:
            warn(f"tuning database {self.path}: dropped {dropped} incomplete line(s) left by a crash")
        return json_database(self.workload_file, self.record_file)



def _tune_command(key: DatabaseKey) -> str:
    extra = ((f" --fusion {key.fusion}" if key.fusion != "stock" else "")
             + (f" --layout {key.layout}" if key.layout != "plain" else ""))
    return f"python compile.py --target {key.preset.name}{extra} --tune --trials 2000"


def check_fingerprint(database: TuningDatabase, fingerprint: dict, allow_stale: bool) -> None:
    """Refuse a database tuned under another pipeline: none of its records would match a kernel."""
    found = database.fingerprint_hash
    if found == fingerprint["hash"] or allow_stale:
        return
    was = database.provenance.get("pipeline", {})
    what = (f"pipeline {found} (fusion {was.get('fusion')}, layout {was.get('layout')}, TVM {was.get('tvm_version')})"
            if found else "a pipeline without a fingerprint")
    raise UserError(f"the database in {paths.shown(database.path)} was tuned under {what}, this build runs pipeline "
                    f"{fingerprint['hash']} (fusion {fingerprint['fusion']}, layout {fingerprint['layout']}): its "
                    "records match no kernel; retune it (--tune), or pass --allow-stale-database to apply it anyway")


def for_build(key: DatabaseKey, explicit: Optional[str], board_less: Optional[bool] = None) -> TuningDatabase:
    """The database folder of `key` (or --database); refuses another preset's. A tuning run says whether it tunes
    with no board (`board_less`), and is refused a database of the other kind: the two never mix."""
    database = TuningDatabase(Path(explicit) if explicit else key.board_less_folder() if board_less else key.folder())
    if board_less is not None and database.record_count() and database.board_less != board_less:
        kind = "tuned against the cycle estimate (no board)" if database.board_less else "measured on a device"
        raise UserError(f"the database in {paths.shown(database.path)} was {kind}: records of the two kinds never mix; "
                        "tune into another --database folder")
    made_for = database.provenance.get("target_name")
    if made_for is not None and made_for != key.preset.name:
        raise UserError(f"the database in {database.path} was tuned for '{made_for}', not '{key.preset.name}': "
                        f"records of one device are never applied to another; tune for {key.preset.name}")
    return database


def preferred_layout(key: DatabaseKey, explicit: Optional[str] = None) -> str:
    """The weight layout of a build that did not choose one: `key.layout` (the default), unless only another
    layout has a database of this CPU's own (the CPU matters more than the layout: docs/databases-and-cpus.md),
    or an explicit --database was tuned under another layout."""
    if explicit and explicit != "none":
        return TuningDatabase(Path(explicit)).provenance.get("pipeline", {}).get("layout", key.layout)
    if (key.folder() / RECORDS).is_file():
        return key.layout
    return next((layout for layout in ("plain", "prepack") if (key.folder(layout=layout) / RECORDS).is_file()),
                key.layout)


def foreign_databases(key: DatabaseKey) -> list:
    """Databases of this key tuned for other CPUs, same vector ISA first."""
    name = key.folder().name
    found = [TuningDatabase(folder / name) for folder in sorted((paths.tuning_logs() / key.preset.name).glob("*"))
             if folder.is_dir() and folder.name != key.cpu and (folder / name / RECORDS).is_file()]
    wide = "avx512f" in host_description()["cpu_features"] if key.preset.is_host else None
    return sorted(found, key=lambda db: ("avx512f" in db.provenance.get("device", {}).get("cpu_features", [])) != wide)


def same_vector_width(database: TuningDatabase, key: DatabaseKey) -> bool:
    """Whether a database of another CPU was tuned at this build's vector width (AVX-512 or not). Known for a
    build for this machine's own CPU (its features are read here); any other build counts as the same width."""
    host = host_description()
    if not key.preset.is_host or key.cpu != host["llvm_cpu"]:
        return True
    return ("avx512f" in database.provenance.get("device", {}).get("cpu_features", [])) == \
        ("avx512f" in host["cpu_features"])


def select(key: DatabaseKey, explicit: Optional[str], allow_emulated: bool = False, allow_stale: bool = False,
           fingerprint: Optional[dict] = None) -> Optional[TuningDatabase]:
    """The database to apply to a build, or None (none yet, `--database none`, or emulated timings for a
    real board).

    This CPU's own database is applied. Without one, another CPU's database of the same pipeline and vector
    width is applied with a one-line warning that names both CPUs and the command that tunes for this one;
    one of another vector width is not (one line says so): the default schedules serve instead. Both chosen
    by measurement against the default schedules (docs/databases-and-cpus.md). A database tuned with no board
    (against the cycle estimate) comes last: only where no database measured on a board exists, with a line
    saying so."""
    if explicit == "none":
        return None
    fingerprint = fingerprint or pipeline_fingerprint(key.fusion, key.layout)
    database = for_build(key, explicit)
    if explicit:
        if not database.exists():
            raise UserError(f"--database {explicit} holds no MetaSchedule database "
                            f"({WORKLOADS} and {RECORDS}): give a folder written by --tune")
        check_fingerprint(database, fingerprint, allow_stale)
        if database.cpu not in (None, key.cpu):
            warn(f"note: applying the database {explicit}, tuned for CPU {database.describe_cpu()}, to a build for "
                 f"'{key.cpu}'")
    elif not database.exists():
        found = foreign_databases(key)
        foreign = [db for db in found if same_vector_width(db, key)]
        if not foreign:
            if found:
                warn(f"note: not applying the database tuned for CPU {found[0].describe_cpu()} to '{key.cpu}': it was "
                     "tuned at another vector width, where the default schedules ran faster (docs/databases-and-cpus.md); "
                     f"tune for this CPU: {_tune_command(key)}")
            return _board_less(key, fingerprint, allow_stale)
        database = foreign[0]
        check_fingerprint(database, fingerprint, allow_stale)
        others = [other for other in ("plain", "prepack")
                  if other != key.layout and (key.folder(layout=other) / RECORDS).is_file()]
        hint = f" (or use this CPU's own database: --layout {others[0]})" if others else ""
        warn(f"warning: no {key.layout}-layout tuning database for CPU '{key.cpu}' ({key.preset.name}/"
             f"{key.model_name}); applying the one tuned for CPU {database.describe_cpu()}, which can be several "
             f"times slower here than this CPU's own; tune for this CPU: {_tune_command(key)}{hint}")
    else:
        check_fingerprint(database, fingerprint, allow_stale)
    if database.emulated and not key.preset.is_host and not allow_emulated:
        warn(f"tuning database {database.path} was measured under emulation: not applied to a build for a "
             "real board (pass --allow-emulated-logs to use it anyway)")
        return None
    return database


def _board_less(key: DatabaseKey, fingerprint: dict, allow_stale: bool) -> Optional[TuningDatabase]:
    """The key's database tuned with no board, announced in one line, or None. It is applied only when its
    check (bench/no_board.py, recorded in its provenance) covers every record it holds and found it paying
    against the default schedules; otherwise it is kept for resuming, and one line says why."""
    database = TuningDatabase(key.board_less_folder())
    if not database.exists():
        return None
    check, records = database.provenance.get("check") or {}, database.record_count()
    judged = guard.read(database.path).get("trials")  # the verdicts of compiler/tuning/guard.py change the build too
    if check.get("trials") != records or check.get("kernel_choices_trials") != judged:
        say(f"      not applying {paths.shown(database.path)} (tuned with no board): no check covers its {records} "
            f"records {'and their verdicts ' if judged else ''}yet; run bench/no_board.py --target {key.preset.name}")
        return None
    if not check.get("ships"):
        say(f"      not applying {paths.shown(database.path)} (tuned with no board): its check found "
            f"{check.get('no_board_vs_default', float('nan')):.2f}x the default schedules' estimated cycles at "
            f"{records} trials, short of what ships; tune it further, then rerun bench/no_board.py")
        return None
    check_fingerprint(database, fingerprint, allow_stale)
    warn(f"note: no database measured on a board for {key.preset.name}/{key.model_name}; applying "
         f"{paths.shown(database.path)}, {database.provenance.get('note', 'tuned with no board')} (a board's own "
         f"database replaces it: {_tune_command(key)} --tracker HOST:PORT)")
    return database


def check_resume(database: TuningDatabase, preset, fingerprint: dict, allow_other_cpu: bool) -> None:
    """A tuning run adds records to `database` only if they are of its CPU and pipeline."""
    if database.record_count() == 0:
        return
    here = cpu_of(preset)
    if database.cpu not in (None, here) and not allow_other_cpu:
        raise UserError(f"the database in {paths.shown(database.path)} holds records measured for CPU "
                        f"{database.describe_cpu()}, this run measures '{here}': records of two CPUs would mix; "
                        "tune into this CPU's own folder (drop --database), or pass --allow-other-cpu")
    if database.fingerprint_hash not in (None, fingerprint["hash"]):
        check_fingerprint(database, fingerprint, allow_stale=False)

