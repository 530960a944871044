"""Target presets: every file loads into a TVM target MetaSchedule accepts; unknown names are explained."""
from pathlib import Path

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


BOARD = {"description": "my board", "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55",
                                               "num-cores": 8}, "cross_triple": "aarch64-linux-gnu", "rpc_key": "mine"}


def test_a_preset_file_of_your_own(tmp_path):
    """`--target path/to/board.json` (or any path with a slash) loads the user's file; its "name" field, else
    its stem, names its databases and artifacts."""
    import json

    (tmp_path / "board.json").write_text(json.dumps(BOARD))
    preset = targets.load(str(tmp_path / "board.json"))
    assert (preset.name, preset.rpc_key, preset.num_cores, preset.target["mcpu"]) == ("board", "mine", 8, "cortex-a55")
    (tmp_path / "named").write_text(json.dumps(dict(BOARD, name="orange-pi")))
    assert targets.load(f"{tmp_path}/named").name == "orange-pi"
    assert targets.is_preset_file("boards/x") and targets.is_preset_file("x.json") and not targets.is_preset_file("rpi4")


@pytest.mark.parametrize("content, fragments", [
    (None, ["not found", "give the path of a preset JSON file"]),
    ("folder", ["is a folder", "give the path of a preset JSON file"]),
    (b"\xff\xfe\x00binary", ["cannot be read", "give a readable preset JSON file"]),
    ('{"description": "half a file', ["is malformed", "it needs description, target, cross_triple and rpc_key"]),
    ("[1, 2]", ["is malformed", "it needs description"]),
    ('{"description": "no target"}', ["is malformed", "'target'", "it needs description"]),
    ({**BOARD, "target": "llvm\n-mcpu=x"}, ["is malformed", "it needs description"]),
    ({**BOARD, "name": 5}, ["is malformed", "name must be a non-empty string, not 5"]),
])
def test_a_broken_preset_file_is_a_one_line_user_error(tmp_path, content, fragments):
    import json

    path = tmp_path / "board.json"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UserError) as err:
        targets.load(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_compile_py_turns_a_broken_preset_file_into_exit_2(tmp_path):
    from test_cli import assert_user_error, run_cli

    (tmp_path / "board.json").write_text("{not json")
    assert_user_error(run_cli("--target", tmp_path / "board.json"), "board.json is malformed", "it needs description")


def test_the_presets_are_package_data_of_compiler_presets():
    """Installed (editable or not), `compiler.presets` is the targets/ folder; a source checkout that was never
    installed reads the same folder."""
    from conftest import ROOT

    assert Path(str(targets.TARGETS_DIR)).resolve() == ROOT / "targets"
    assert Path(str(targets._presets_folder())).resolve() == ROOT / "targets"


def test_a_checkout_that_was_never_installed_reads_targets_beside_compiler(monkeypatch):
    from conftest import ROOT

    def not_installed(package):
        raise ModuleNotFoundError(f"No module named '{package}'")

    monkeypatch.setattr(targets.importlib.resources, "files", not_installed)
    assert targets._presets_folder() == ROOT / "targets"


def test_missing_presets_are_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "TARGETS_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match="target presets are not installed"):
        targets.available()


@pytest.mark.slow
def test_a_non_editable_install_has_the_presets(tmp_path):
    """A wheel built from the project (no network: --no-deps --no-build-isolation) holds every preset and every
    module; unpacked, and with neither the source tree nor the editable install importable (python -S), it
    lists the presets, and so does a copy of compile.py run against it."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile

    from conftest import ROOT

    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for folder in ("compiler", "schedules", "targets"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "wheels")], check=True, cwd=tmp_path, capture_output=True)
    [wheel] = (tmp_path / "wheels").glob("dcac_compiler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"compiler/presets/{p.name}" for p in (ROOT / "targets").glob("*.json")}
    modules = {p.relative_to(ROOT).as_posix() for folder in ("compiler", "schedules") for p in (ROOT / folder).rglob("*.py")}
    assert len(shipped) >= len(REQUIRED) and shipped <= names and modules <= names, sorted(shipped | modules - names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    show = "from compiler import targets; print(targets.TARGETS_DIR); print(' '.join(targets.available()))"
    for isolation in (["-S"], []):  # -S: not even the project venv (nor its editable install) is importable
        shown = subprocess.run([sys.executable, *isolation, "-c", show], capture_output=True, text=True,
                               cwd=tmp_path, env=env, check=True).stdout.splitlines()
        assert shown[0] == str(site / "compiler" / "presets") and set(REQUIRED) <= set(shown[1].split()), shown

    shutil.copy(ROOT / "compile.py", tmp_path / "compile.py")
    result = subprocess.run([sys.executable, str(tmp_path / "compile.py"), "--list-targets"], capture_output=True,
                            text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines()[1:]}
    assert set(REQUIRED) <= rows, result.stdout
