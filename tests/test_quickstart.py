"""The README's quickstart, run as written: a user's ONNX file (here a small CNN exported with free batch and
spatial axes, as torch exports one) built for the Pi 5 and verified, the artifact folder copied onto the "board"
(the emulated Pi), and the README's own remote command run there through `runtime.py`.

Only what cannot run here is substituted: `scp` copies into the emulated Pi's file system, `ssh` runs the quoted
command in it, with the device's Python environment first on PATH (the README's board has
`pip install apache-tvm numpy` in its python3).
"""
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import onnx_models

ROOT = Path(__file__).resolve().parent.parent


def quickstart_block() -> list:
    """The commands of the fenced block after "Your own model, to a board", continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    after = text.split("Your own model, to a board", 1)[1]
    block = after.split("```", 2)[1]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def export_any_size(path: Path) -> Path:
    """A small CNN with global pooling, exported with dynamic batch, height and width (bound by --input-shape)."""
    torch.manual_seed(0)
    model = onnx_models.TinyCNN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}})
    return path


def test_the_quickstart_block_is_three_commands():
    build, copy, remote = quickstart_block()
    assert build.startswith(".venv/bin/python compile.py --model net.onnx ")
    assert copy.startswith("scp -r dist/net ")
    assert remote.startswith("ssh ") and "from runtime import Model" in remote


@pytest.mark.emulated
def test_the_quickstart_runs_as_written(tmp_path):
    from compiler.device import emulator

    build, copy, remote = quickstart_block()
    export_any_size(tmp_path / "net.onnx")
    argv = shlex.split(build)
    assert argv[:2] == [".venv/bin/python", "compile.py"]
    result = subprocess.run([sys.executable, str(ROOT / "compile.py"), *argv[2:]], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"verify logits: .* ok", result.stdout), result.stdout
    artifact = tmp_path / shlex.split(copy)[2]
    assert sorted(p.name for p in artifact.iterdir()) == ["net.json", "net.so", "runtime.py"]

    # scp: into the board's home; ssh: the quoted command, run there
    root = emulator.ensure_rootfs()
    emulator.ensure_mounts(root)
    home = Path("/tmp") / f"quickstart-{tmp_path.name}"
    subprocess.run(["cp", "-r", str(tmp_path / "dist"), str(root / home.relative_to("/"))], check=True)
    try:
        command = shlex.split(remote)[2]  # ssh pi@board '<command>'
        on_board = f"export PATH={Path(emulator.DEVICE_PYTHON).parent}:$PATH; cd {home} && {command}"
        ran = subprocess.run(["chroot", str(root), "/bin/sh", "-c", on_board], capture_output=True, text=True,
                             timeout=600)
    finally:
        subprocess.run(["rm", "-rf", str(root / home.relative_to("/"))], check=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().splitlines()[-1] == "(1, 10)"  # TinyCNN's ten logits, batch 1
