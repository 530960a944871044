"""compiler/bench/shape_cells.py and bench/shape_sweep.py: every cell is a valid one-input ONNX model whose outputs
have the shapes its parameters give, the table covers every kernel class the sweep promises, and bad input is
one line."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.bench import shape_cells
from compiler.errors import UserError
from test_cli import assert_user_error

ROOT = __import__("conftest").ROOT
PROMISED = {"conv", "dense", "matmul", "pool", "reduce", "eltwise", "split/concat", "norm", "softmax"}


@pytest.mark.parametrize("cell", shape_cells.CELLS, ids=lambda cell: cell.name)
def test_cell_is_checked_and_runs_in_onnxruntime_with_its_declared_shapes(cell):
    model = shape_cells.model(cell)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"] and model.opset_import[0].version == 17
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal(cell.shape).astype("float32")
    outputs = session.run(None, {"x": image})
    declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
    assert [o.shape for o in outputs] == declared
    assert all(np.isfinite(o).all() for o in outputs)


def test_odd_maps_and_group_widths_give_the_published_shapes():
    cells = {cell.name: cell for cell in shape_cells.CELLS}
    output = shape_cells.model(cells["depthwise 5x5 s2 72 57x57"]).graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in output.dim] == [1, 72, 29, 29]  # padding 2 on an odd map, as PyTorch pads it
    assert cells["grouped 3x3 gw8 368 7x7"].params["groups"] == 46  # RegNetX-200MF's last stage
    assert cells["depthwise 7x7 40 56x56"].params["groups"] == 40


def test_the_table_covers_every_kind_with_unique_filterable_names():
    kinds = [cell.kind for cell in shape_cells.CELLS]
    assert set(kinds) == PROMISED == set(shape_cells.KINDS)
    names = [cell.name for cell in shape_cells.CELLS]
    assert len(set(names)) == len(names)
    assert not [name for name in names if "," in name or name != name.strip()]  # --cells splits on commas
    assert 45 <= len(names) <= 60


def test_select_takes_kinds_exactly_and_names_in_part():
    assert {c.kind for c in shape_cells.select("conv")} == {"conv"}  # not the epilogues named "conv 1x1 ..."
    assert [c.name for c in shape_cells.select("SOFTMAX 3x197, gw24")] == ["grouped 3x3 gw24 96 28x28",
                                                                           "softmax 3x197 rows of 197"]
    assert shape_cells.select(None) == shape_cells.CELLS
    with pytest.raises(UserError, match="nosuch: matches no cell"):
        shape_cells.select("norm,nosuch")


@pytest.mark.parametrize("args,fragment", [(["--runs", "0"], "--runs 0"), (["--cells", "nosuch"], "matches no cell"),
                                           (["--target", "rpi4"], "not available yet")])
def test_bad_input_is_one_line(args, fragment):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "shape_sweep.py"), *args], capture_output=True,
                            text=True, cwd=ROOT)
    assert_user_error(result, fragment)


def test_a_cell_builds_and_verifies_for_the_host(tmp_path):
    from compiler.driver import CompileOptions, compile_model

    cell = next(c for c in shape_cells.CELLS if c.name == "split + swap + concat 116 28x28")
    path = shape_cells.build(cell, tmp_path / "cell.onnx")
    built = compile_model(CompileOptions(target="host", model=str(path), database="none", verify=True,
                                         out=str(tmp_path / "cell")))
    assert built.verified
