"""Target presets: one JSON file per board in targets/, loaded into a typed `Preset`.

Adding a board is adding a file: `target` is exactly what `tvm.target.Target(...)` takes, `cross_triple`
names the cross linker (null for the host), `rpc_key` is the key its RPC servers register under.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import UserError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    target: dict
    cross_triple: Optional[str]
    rpc_key: str

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
    return sorted(p.stem for p in TARGETS_DIR.glob("*.json"))


def load(name: str) -> Preset:
    """A preset by name (targets/<name>.json) or by path to a preset file of your own (`--target
    my/board.json`; its optional "name" field is the name its databases and artifacts go under)."""
    path = Path(name) if name.endswith(".json") else TARGETS_DIR / f"{name}.json"
    if not path.is_file():
        if name.endswith(".json"):
            raise UserError(f"target preset file {name} not found: give the path of a preset JSON file "
                            "(see targets/rpi4.json for the fields)")
        raise UserError(f"unknown target '{name}': choose one of {', '.join(available())} "
                        f"(or add targets/{name}.json, or give a preset file: --target path/to/board.json)")
    try:
        data = json.loads(path.read_text())
        name = data.get("name", path.stem)
        return Preset(name=name, description=data["description"], target=_resolve_host_values(data["target"]),
                      cross_triple=data["cross_triple"], rpc_key=data["rpc_key"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"target preset {path} is malformed ({err}): it needs description, target, "
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
