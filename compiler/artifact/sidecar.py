"""The shipped artifact: `<name>.so` plus a versioned JSON sidecar, written as one atomic folder.

The sidecar says what the library expects (inputs, outputs), what it was built for and from (target,
ONNX sha256, TVM version, tuning database and its coverage), and the library's own sha256, which the
runtime checks before loading.
"""
import datetime
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from compiler import atomic
from compiler.artifact.runtime import SIDECAR_SCHEMA, sha256_file
from compiler.errors import UserError


@dataclass
class TuningInfo:
    database: Optional[str]  # folder of the MetaSchedule database applied, or None (untuned)
    emulated: bool  # measured under qemu: never a real board's schedules
    kernels_total: int
    kernels_tuned: int  # kernels that got a tuned schedule from the database
    kernels_default: int = 0  # kernels that got the target's default schedule (no record covered them)
    cpu: Optional[str] = None  # the LLVM cpu that database was tuned for
    pipeline: str = ""  # fingerprint of the pipeline that built the kernels (compiler/passes/pipeline.py)
    # how the database ranked schedules: "device" (timed on a board or this machine) or "cycle-estimate" (tuned
    # with no board, against the model of compiler/tuning/estimate_runner.py); None without a database
    measured_by: Optional[str] = None
    # kernels whose record lost to their default schedule in the model (compiler/tuning/guard.py): {kernel: why}
    default_over_record: Dict[str, str] = field(default_factory=dict)


@dataclass
class Sidecar:
    model: str
    library: str
    library_sha256: str
    onnx_sha256: str
    inputs: List[dict]
    outputs: List[dict]
    target_name: str
    target: dict
    linker: str
    fusion: str
    layout: str
    tvm_version: str
    tuning: TuningInfo
    build_seconds: float
    quantization: Optional[dict] = None  # --quantize: activation type, calibration, agreement with float
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    schema_version: int = SIDECAR_SCHEMA


def check_output_dir(out_dir: Path) -> None:
    """The artifact folder is replaced whole: refuse one that holds anything but a previous artifact, or
    one that could not be written (checked before the slow work, not after it)."""
    _check_writable(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file: give a folder for the artifact")
    entries = list(out_dir.iterdir())
    sidecars = [p for p in entries if p.suffix == ".json" and _is_sidecar(p)]
    if entries and not sidecars:
        raise UserError(f"--out {out_dir} is not empty and holds no previous artifact: it would be replaced "
                        "whole; choose an empty or new folder")


def _check_writable(out_dir: Path) -> None:
    """The artifact is staged beside `out_dir` (atomic.staged_dir): its nearest existing ancestor must be a
    folder this process may create entries in."""
    ancestor = out_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--out {out_dir} lies under {ancestor}, which is a file: give a folder for the artifact")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--out {out_dir} cannot be written: {ancestor} is not writable by this user; choose a "
                        "folder you can write (e.g. under dist/)")


def _is_sidecar(path: Path) -> bool:
    try:
        return "library_sha256" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def write(out_dir, executable, linker, sidecar_fields: dict, extra_files: Optional[dict] = None) -> Path:
    """Export the library with `linker`, hash it, write the sidecar and runtime.py (and `extra_files`,
    name -> source path); all at once or nothing."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    name = sidecar_fields["model"]
    with atomic.staged_dir(out_dir) as stage:
        library = stage / f"{name}.so"
        executable.export_library(str(library), fcompile=linker)
        sidecar = Sidecar(library=library.name, library_sha256=sha256_file(library), linker=linker.name,
                          **sidecar_fields)
        atomic.write_json(stage / f"{name}.json", asdict(sidecar))
        # The runtime wrapper ships beside the library, so the folder alone runs on a device.
        shutil.copy2(Path(__file__).with_name("runtime.py"), stage / "runtime.py")
        for name_in_folder, source in (extra_files or {}).items():
            shutil.copy2(source, stage / name_in_folder)
    return out_dir / f"{name}.so"

