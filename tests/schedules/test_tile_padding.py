"""schedules/tile_padding.py: products over 197 tokens (a prime no tile divides) are computed on a padded domain,
with register rows and whole vectors, and compute what ONNX Runtime computes, on the host and on the emulated Pi."""
import re

import pytest

from test_defaults import assert_defaults_match_onnxruntime, default_plans


@pytest.mark.parametrize("target", ["host", "rpi4"])
def test_products_over_a_prime_are_padded(tmp_path, target):
    notes, _ = default_plans(tmp_path, "padded_products", target)
    products = {name: note for name, note in notes.items() if "matmul" in name}
    padded = {name: note for name, note in products.items() if "padded 197->" in note}
    assert len(padded) >= 2, products  # the dense layer's rows and the attention products
    for note in padded.values():
        rows = re.search(r"reg=\{'v_i\d': (\d+)\}", note)
        assert rows and int(rows.group(1)) >= 4, note  # a register tile of rows, where 197 gave one


def test_padding_is_chosen_only_where_it_pays():
    """A product whose rows and columns divide well keeps its plan; a prime is padded by little."""
    import tvm
    from tvm import te

    from schedules import tile_padding
    from schedules.machine import Machine

    def product(rows):
        a, b = te.placeholder((rows, 64), name="a"), te.placeholder((64, 128), name="b")
        k = te.reduce_axis((0, 64), name="k")
        c = te.compute((rows, 128), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="matmul")
        return te.create_prim_func([a, b, c])

    machine = Machine(lanes=16, vector_registers=32, cores=2, is_arm=False)
    assert tile_padding.choose(tvm.IRModule({"main": product(196)}), machine) is None
    chosen = tile_padding.choose(tvm.IRModule({"main": product(197)}), machine)
    assert chosen is not None and chosen[0] == "matmul"
    padded = -(-197 // chosen[1][0]) * chosen[1][0]
    assert 197 < padded <= 197 * (1 + tile_padding.MAX_WASTE), chosen


@pytest.mark.parametrize("target", ["host", pytest.param("rpi4", marks=[pytest.mark.slow, pytest.mark.emulated])])
def test_padded_products_match_onnxruntime(tmp_path, target):
    assert_defaults_match_onnxruntime(tmp_path, "padded_products", target)
