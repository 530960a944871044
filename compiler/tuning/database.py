"""Tuning databases on disk: `tuning_logs/<target>/<model>/`, MetaSchedule's JSON files plus provenance.

One database per target, CPU and model: MetaSchedule's JSONDatabase ignores the target on lookup (it
matches a kernel's structural hash only), so a database must never be picked up by a build for another
CPU without saying so. Each records the pipeline fingerprint it was tuned under (compiler/passes/pipeline.py):
records of another pipeline match no kernel, and applying them would silently leave the build untuned. A crash can cut the last line of a
record file; `repair` drops such a line so every complete record still loads.
"""
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from compiler import atomic, paths
from compiler.device.session import host_description
from compiler.errors import UserError
from compiler.output import warn
from compiler.passes.pipeline import fingerprint as pipeline_fingerprint
from compiler.tuning import files as database_files

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
PROVENANCE = "provenance.json"


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
        return database_files.read_json(path) if path.is_file() else {}

    def write_provenance(self, data: dict) -> None:
        atomic.write_json(self.path / PROVENANCE, data)

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

    def load(self):
        """MetaSchedule's JSONDatabase over these files (repaired first), created if absent."""
        self.path.mkdir(parents=True, exist_ok=True)
        dropped = self.repair()
        if dropped:
            warn(f"tuning database {self.path}: dropped {dropped} incomplete line(s) left by a crash")
        return database_files.json_database(self.workload_file, self.record_file)



def _tune_command(preset, fusion: str, layout: str) -> str:
    extra = (f" --fusion {fusion}" if fusion != "stock" else "") + (f" --layout {layout}" if layout != "plain" else "")
    return f"python compile.py --target {preset.name}{extra} --tune --trials 2000"


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


def for_build(preset, model, fusion: str, explicit: Optional[str], layout: str = "plain") -> TuningDatabase:
    """The database folder a tuning run of this preset, CPU, model, fusion and layout writes into (or
    --database); refuses another preset's."""
    path = Path(explicit) if explicit else default_path(preset.name, cpu_of(preset), model.name, fusion, layout)
    database = TuningDatabase(path)
    made_for = database.provenance.get("target_name")
    if made_for is not None and made_for != preset.name:
        raise UserError(f"the database in {database.path} was tuned for '{made_for}', not '{preset.name}': "
                        f"records of one device are never applied to another; tune for {preset.name}")
    return database


def preferred_layout(preset, model, fusion: str, default: str, explicit: Optional[str] = None) -> str:
    """The weight layout of a build that did not choose one: `default`, unless only another layout has a
    database of this CPU's own (the CPU matters more than the layout: README, "A database belongs to a
    CPU"), or an explicit --database was tuned under another layout."""
    if explicit and explicit != "none":
        return TuningDatabase(Path(explicit)).provenance.get("pipeline", {}).get("layout", default)
    own = lambda layout: default_path(preset.name, cpu_of(preset), model.name, fusion, layout)  # noqa: E731
    if (own(default) / RECORDS).is_file():
        return default
    return next((layout for layout in ("plain", "prepack") if (own(layout) / RECORDS).is_file()), default)


def foreign_databases(preset, model_name: str, fusion: str, layout: str) -> list:
    """Databases of this preset, model, fusion and layout tuned for other CPUs, same vector ISA first."""
    here = cpu_of(preset)
    name = folder_name(model_name, fusion, layout)
    found = [TuningDatabase(folder / name) for folder in sorted((paths.tuning_logs() / preset.name).glob("*"))
             if folder.is_dir() and folder.name != here and (folder / name / RECORDS).is_file()]
    wide = "avx512f" in _host_features() if preset.is_host else None
    return sorted(found, key=lambda db: ("avx512f" in db.provenance.get("device", {}).get("cpu_features", [])) != wide)


def _host_features() -> list:
    return host_description()["cpu_features"]


def select(preset, model, fusion: str, explicit: Optional[str], allow_emulated: bool, layout: str = "plain",
           allow_stale: bool = False, fingerprint: Optional[dict] = None) -> Optional[TuningDatabase]:
    """The database to apply to a build, or None (none yet, `--database none`, or emulated timings for a
    real board).

    This CPU's own database is applied. Without one, another CPU's database of the same pipeline is
    applied with a one-line warning that names both CPUs and the command that tunes for this one: that
    policy was chosen by measurement (README, "A database belongs to a CPU"): even on a CPU of another
    vector width, foreign schedules ran several times faster than TVM's default ones."""
    if explicit == "none":
        return None

    fingerprint = fingerprint or pipeline_fingerprint(fusion, layout)
    here = cpu_of(preset)
    database = for_build(preset, model, fusion, explicit, layout)
    if explicit:
        if not database.exists():
            raise UserError(f"--database {explicit} holds no MetaSchedule database "
                            f"({WORKLOADS} and {RECORDS}): give a folder written by --tune")
        check_fingerprint(database, fingerprint, allow_stale)
        if database.cpu not in (None, here):
            warn(f"note: applying the database {explicit}, tuned for CPU {database.describe_cpu()}, to a build for "
                f"'{here}'")
    elif not database.exists():
        foreign = foreign_databases(preset, model.name, fusion, layout)
        if not foreign:
            return None
        database = foreign[0]
        check_fingerprint(database, fingerprint, allow_stale)
        others = [other for other in ("plain", "prepack") if other != layout
                  and default_path(preset.name, here, model.name, fusion, other).joinpath(RECORDS).is_file()]
        hint = f" (or use this CPU's own database: --layout {others[0]})" if others else ""
        warn(f"warning: no {layout}-layout tuning database for CPU '{here}' ({preset.name}/{model.name}); applying "
            f"the one tuned for CPU {database.describe_cpu()}, which can be several times slower here than this "
            f"CPU's own; tune for this CPU: {_tune_command(preset, fusion, layout)}{hint}")
    else:
        check_fingerprint(database, fingerprint, allow_stale)
    if database.emulated and not preset.is_host and not allow_emulated:
        warn(f"tuning database {database.path} was measured under emulation: not applied to a build for a "
            "real board (pass --allow-emulated-logs to use it anyway)")
        return None
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

