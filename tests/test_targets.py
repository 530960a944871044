"""Target presets: every file loads into a TVM target MetaSchedule accepts; unknown names are explained."""
import pytest

from compiler import targets
from compiler.errors import UserError

REQUIRED = ["rpi4", "rpi5", "jetson-orin-cpu", "graviton2", "graviton3", "aarch64", "host"]


def test_required_presets_exist():
    assert set(REQUIRED) <= set(targets.available())


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_builds_a_tvm_target(name):
    import tvm

    preset = targets.load(name)
    target = preset.tvm_target()
    assert target.kind.name == "llvm"
    assert preset.num_cores >= 1  # MetaSchedule refuses a target without num-cores
    cpu = str(target.attrs["mcpu"])
    triple = str(target.attrs.get("mtriple", "")) or str(tvm.target.codegen.llvm_get_system_triple())
    assert tvm.target.codegen.llvm_is_valid_cpu(cpu, triple), f"{name}: LLVM does not know cpu {cpu}"
    if name == "host":
        assert preset.is_host and cpu != "native"
    else:
        assert preset.cross_triple == "aarch64-linux-gnu" and preset.rpc_key == name


def test_rpi4_is_cortex_a72_neon_four_cores():
    preset = targets.load("rpi4")
    assert preset.target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                             "mattr": ["+neon"], "num-cores": 4}


def test_unknown_target_lists_known_ones():
    with pytest.raises(UserError) as err:
        targets.load("rpi9")
    assert "unknown target 'rpi9'" in str(err.value) and "rpi4" in str(err.value) and "graviton3" in str(err.value)


def test_adding_a_board_is_adding_a_file(tmp_path, monkeypatch):
    (tmp_path / "myboard.json").write_text(
        '{"description": "d", "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53",'
        ' "num-cores": 4}, "cross_triple": "aarch64-linux-gnu", "rpc_key": "mine"}')
    (tmp_path / "broken.json").write_text('{"description": "no target"}')
    monkeypatch.setattr(targets, "TARGETS_DIR", tmp_path)
    assert targets.available() == ["broken", "myboard"]
    assert targets.load("myboard").rpc_key == "mine"
    with pytest.raises(UserError, match="malformed"):
        targets.load("broken")


def test_table_lists_every_preset():
    table = targets.describe_all()
    for name in REQUIRED:
        assert name in table
    assert "cortex-a72" in table
