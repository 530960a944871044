"""Cross linking: both the GNU cross g++ and the ziglang package produce aarch64 libraries."""
import shutil
import struct
import sys

import pytest

from compiler.artifact import linker
from compiler.frontend import onnx_model
from compiler.passes import pipeline
from compiler import targets
from compiler.errors import UserError

EM_AARCH64 = 183
GNU_CROSS = "aarch64-linux-gnu-g++"
needs_gnu = pytest.mark.skipif(shutil.which(GNU_CROSS) is None,
                               reason=f"{GNU_CROSS} is not installed (make test installs it: g++-aarch64-linux-gnu)")


def elf_machine(path) -> int:
    header = open(path, "rb").read(20)
    assert header[:4] == b"\x7fELF", "not an ELF file"
    return struct.unpack("<H", header[18:20])[0]


@pytest.fixture(scope="module")
def rpi4_executable(tiny_cnn_onnx):
    preset = targets.load("rpi4")
    target = preset.tvm_target()
    mod = pipeline.tunable_module(pipeline.import_onnx(onnx_model.load(tiny_cnn_onnx)), target)
    return pipeline.build(mod, target)


@pytest.mark.parametrize("name", [pytest.param("gnu", marks=needs_gnu), "zig"])
def test_links_an_aarch64_shared_library(name, rpi4_executable, tmp_path):
    link = linker.find_linker("aarch64-linux-gnu", prefer=name)
    assert link.name == name
    out = tmp_path / f"lib-{name}.so"
    rpi4_executable.export_library(str(out), fcompile=link)
    assert elf_machine(out) == EM_AARCH64


@needs_gnu
def test_gnu_is_preferred_when_installed():
    assert linker.find_linker("aarch64-linux-gnu").name == "gnu"


def test_zig_is_the_fallback(monkeypatch):
    monkeypatch.setattr(linker.shutil, "which", lambda name: None)
    assert linker.find_linker("aarch64-linux-gnu").name == "zig"


def test_missing_cross_linker_says_how_to_install(monkeypatch):
    monkeypatch.setattr(linker.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "ziglang", None)  # import ziglang now fails
    with pytest.raises(UserError) as err:
        linker.find_linker("aarch64-linux-gnu")
    assert "apt-get install g++-aarch64-linux-gnu" in str(err.value) and "pip install ziglang" in str(err.value)


def test_host_builds_link_natively():
    assert linker.find_linker(None).name == "host"
