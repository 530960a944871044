"""Tuning databases on disk: `tuning_logs/<target>/<model>/`, MetaSchedule's JSON files plus provenance.

One database per target and model (MetaSchedule's JSONDatabase ignores the target on lookup, so mixing
devices in one file would apply one board's schedules to another). A crash can cut the last line of a
record file; `repair` drops such a line so every complete record still loads.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import atomic
from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
PROVENANCE = "provenance.json"


def default_path(target_name: str, model_name: str, fusion: str = "stock") -> Path:
    """tuning_logs/<target>/<model>/; another fusion mode makes other kernels, so it gets <model>-<fusion>."""
    return ROOT / "tuning_logs" / target_name / (model_name if fusion == "stock" else f"{model_name}-{fusion}")


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
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_provenance(self, data: dict) -> None:
        atomic.write_json(self.path / PROVENANCE, data)

    @property
    def emulated(self) -> bool:
        return bool(self.provenance.get("device", {}).get("emulated", False))

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
        from tvm.s_tir import meta_schedule as ms

        self.path.mkdir(parents=True, exist_ok=True)
        dropped = self.repair()
        if dropped:
            print(f"tuning database {self.path}: dropped {dropped} incomplete line(s) left by a crash",
                  file=sys.stderr)
        return ms.database.JSONDatabase(path_workload=str(self.workload_file),
                                        path_tuning_record=str(self.record_file), allow_missing=True)


def for_build(preset, model, fusion: str, explicit: Optional[str]) -> TuningDatabase:
    """The database folder of this preset, model and fusion (or --database); refuses another preset's."""
    database = TuningDatabase(Path(explicit) if explicit else default_path(preset.name, model.name, fusion))
    made_for = database.provenance.get("target_name")
    if made_for is not None and made_for != preset.name:
        raise UserError(f"the database in {database.path} was tuned for '{made_for}', not '{preset.name}': "
                        f"records of one device are never applied to another; tune for {preset.name}")
    return database


def select(preset, model, fusion: str, explicit: Optional[str], allow_emulated: bool) -> Optional[TuningDatabase]:
    """The database to apply to a build, or None (none yet, `--database none`, or emulated timings for a
    real board). A host database tuned on another CPU is applied with a warning: it may be slow here."""
    if explicit == "none":
        return None
    database = for_build(preset, model, fusion, explicit)
    if not database.exists():
        if explicit:
            raise UserError(f"--database {explicit} holds no MetaSchedule database "
                            f"({WORKLOADS} and {RECORDS}): give a folder written by --tune")
        return None
    if database.emulated and not preset.is_host and not allow_emulated:
        print(f"tuning database {database.path} was measured under emulation: not applied to a build for a "
              "real board (pass --allow-emulated-logs to use it anyway)", file=sys.stderr)
        return None
    if preset.is_host:
        warn_if_other_cpu(database)
    return database


def warn_if_other_cpu(database: TuningDatabase) -> None:
    from .tuning import host_provenance

    tuned_on = database.provenance.get("device", {})
    here = host_provenance()
    if tuned_on.get("llvm_cpu") != here["llvm_cpu"] or tuned_on.get("cpu_model") != here["cpu_model"]:
        print(f"warning: {database.path} was tuned on {tuned_on.get('cpu_model', '?')} "
              f"({tuned_on.get('llvm_cpu', '?')}), this machine is {here['cpu_model']} ({here['llvm_cpu']}): "
              "its schedules may be slow here; tune again with --tune for full speed", file=sys.stderr)
