"""Target presets: one JSON file per board in targets/, loaded into a typed `Preset`.

Adding a board is adding a file: `target` is exactly what `tvm.target.Target(...)` takes, `cross_triple`
names the cross linker (null for the host), `rpc_key` is the key its RPC servers register under. A user's
own board needs no change here: `--target path/to/board.json` loads that file.

The presets are package data: pyproject.toml installs the repository's targets/ folder as the package
`compiler.presets`, read through importlib.resources, so a wheel or a non-editable install has them.
"""
import functools
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from compiler.errors import UserError


def _presets_folder():
    """The shipped presets (an importlib.resources Traversable). A source checkout run without installing
    the project (or with an editable install made before the presets were package data) has no
    `compiler.presets` package: there they are the targets/ folder beside compiler/."""
    try:
        return importlib.resources.files("compiler.presets")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "targets"


TARGETS_DIR = _presets_folder()


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    declared_target: dict  # as the preset file says it: "native" and "auto" stand for this machine's values
    cross_triple: Optional[str]
    rpc_key: str
    clock_ghz: Optional[float] = None  # the board's core clock: turns a cycle estimate into time (tuning with no board)

    @functools.cached_property
    def target(self) -> dict:
        """The target with this machine's values filled in; resolved on first use, since naming the host's
        CPU loads TVM (seconds), which a command refusing bad input should not wait for."""
        return _resolve_host_values(self.declared_target)

    @property
    def is_host(self) -> bool:
        return self.cross_triple is None

    @property
    def num_cores(self) -> int:
        return int(self.target["num-cores"])

    def tvm_target(self):
        """The TVM target; a preset TVM cannot build for, or whose mcpu LLVM does not know (LLVM would
        silently generate generic code), is a UserError."""
        import tvm
        from tvm.target import codegen

        try:
            target = tvm.target.Target(self.target)
        except (ValueError, RuntimeError, TypeError) as err:
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise UserError(f"target preset '{self.name}' is not a target TVM can build for ({detail}): see "
                            "targets/rpi4.json for the fields") from None
        cpu = self.target.get("mcpu")
        if target.kind.name == "llvm" and cpu and cpu not in codegen.llvm_get_cpu_archlist(target):
            raise UserError(f"target preset '{self.name}' names mcpu '{cpu}', which LLVM does not know for "
                            f"{target.attrs.get('mtriple') or 'this machine'}: give an LLVM cpu name, e.g. "
                            "cortex-a72 (`llc -mtriple=... -mcpu=help` lists them)")
        return target


def _resolve_host_values(target: dict) -> dict:
    """`"mcpu": "native"` and `"num-cores": "auto"` mean this machine's CPU; resolved so records name it."""
    target = dict(target)
    if target.get("mcpu") == "native":
        import tvm

        target["mcpu"] = str(tvm.target.codegen.llvm_get_system_cpu())
    if target.get("num-cores") == "auto":
        target["num-cores"] = len(os.sched_getaffinity(0))
    return target


def available() -> list:
    if not TARGETS_DIR.is_dir():
        raise UserError("the target presets are not installed (no package compiler.presets): reinstall the "
                        "project (pip install .), or give a preset file: --target path/to/board.json")
    return sorted(p.name[:-len(".json")] for p in TARGETS_DIR.iterdir() if p.name.endswith(".json"))


def is_preset_file(name: str) -> bool:
    """`--target` names a preset file of the user's own (a path) rather than a shipped preset."""
    return name.endswith(".json") or "/" in name or os.sep in name


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load(name: str) -> Preset:
    """A preset by name (targets/<name>.json) or by path to a preset file of your own (`--target
    my/board.json`, any path ending in .json or holding a slash; its optional "name" field is the name its
    databases and artifacts go under, else the file's stem)."""
    if is_preset_file(name):
        path, default_name = Path(name), Path(name).stem
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "not found"
            raise UserError(f"target preset file {name} {problem}: give the path of a preset JSON file "
                            "(see targets/rpi4.json for the fields)")
    else:
        path, default_name = TARGETS_DIR / f"{name}.json", name
        if not path.is_file():
            raise UserError(f"unknown target '{name}': choose one of {', '.join(available())} "
                            f"(or add targets/{name}.json, or give a preset file: --target path/to/board.json)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"target preset file {name} cannot be read ({_one_line(err)}): give a readable preset "
                        "JSON file (see targets/rpi4.json for the fields)") from None
    try:
        data = json.loads(text)
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise TypeError(f"its name must be a non-empty string, not {name!r}")
        return Preset(name=name, description=data["description"], declared_target=dict(data["target"]),
                      cross_triple=data["cross_triple"], rpc_key=data["rpc_key"],
                      clock_ghz=float(data["clock_ghz"]) if data.get("clock_ghz") is not None else None)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"target preset {path} is malformed ({_one_line(err)}): it needs description, target, "
                        "cross_triple and rpc_key") from None


def describe_all() -> str:
    """The table `compile.py --list-targets` prints."""
    rows = []
    for name in available():
        preset = load(name)
        cpu = preset.target.get("mcpu", "generic")
        rows.append((name, cpu, str(preset.target.get("num-cores")), preset.rpc_key, preset.description))
    widths = [max(len(r[i]) for r in rows + [("target", "cpu", "cores", "rpc key", "")]) for i in range(4)]
    header = ("target", "cpu", "cores", "rpc key")
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  description"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    return "\n".join(lines)
