"""Cross linking on the host: the GNU cross g++ when installed, else the ziglang package from PyPI.

Boards never need a compiler: every .so (shipped artifacts and tuning candidates alike) is linked here.
"""
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from compiler.errors import UserError

FIX = {"gnu": "reinstall it (`apt-get install --reinstall g++-aarch64-linux-gnu`) or link with --linker zig",
       "zig": "reinstall it (`pip install --force-reinstall ziglang`) or link with --linker gnu",
       "host": "install a working g++ (`apt-get install g++`)"}
# Zig links against this glibc version: old enough for Raspberry Pi OS (bookworm: 2.36) and Jetson L4T.
ZIG_GLIBC = "2.28"


@dataclass(frozen=True)
class Linker:
    """A picklable `fcompile` for `export_library` (MetaSchedule's builder ships it to worker processes)."""

    name: str  # "gnu", "zig" or "host"
    command: tuple

    output_format = "so"

    def __call__(self, output, objects, options=None):
        objects = [objects] if isinstance(objects, str) else list(objects)
        cmd = [*self.command, "-shared", "-fPIC", "-o", output, *(options or []), *objects]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            tool = "python -m ziglang" if self.name == "zig" else self.command[0]
            raise UserError(f"linking the library with {self.name} ({tool}) failed: "
                            f"{said[-1] if said else f'exit code {result.returncode}'}; {FIX[self.name]}")


def gnu_linker(triple: str) -> Optional[Linker]:
    path = shutil.which(f"{triple}-g++")
    return Linker("gnu", (path,)) if path else None


def zig_linker(triple: str) -> Optional[Linker]:
    try:
        import ziglang  # noqa: F401  (the package only carries the zig binary)
    except ImportError:
        return None
    return Linker("zig", (sys.executable, "-m", "ziglang", "c++", "-target", f"{triple}.{ZIG_GLIBC}"))


def find_linker(cross_triple: Optional[str], prefer: Optional[str] = None) -> Linker:
    """The linker for a preset: host g++ for native builds; for a cross triple gnu first, then zig."""
    if cross_triple is None:
        return Linker("host", (shutil.which("g++") or shutil.which("c++") or "g++",))
    finders = {"gnu": gnu_linker, "zig": zig_linker}
    order = [prefer] if prefer else ["gnu", "zig"]
    for name in order:
        linker = finders[name](cross_triple)
        if linker:
            return linker
    raise UserError(f"no cross linker for {cross_triple}: run `apt-get install g++-{cross_triple}` "
                    "or `pip install ziglang`")
