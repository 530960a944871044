"""compiler/passes/fast_math.py: exp, sigmoid and erf lowered to vector arithmetic, as accurate as libm's in float32."""
import math

import numpy as np
import pytest

from compiler.passes import fast_math

VALUES = np.concatenate([np.linspace(-100, 100, 4001), [0.0, -0.0, 1e-8, -1e-8, 88.0, -87.0, 88.72, -103.0],
                         np.random.default_rng(0).standard_normal(1000) * 6]).astype("float32")


def build(function: str, lanes: int):
    """A kernel applying `function` elementwise, vectorised by `lanes` (1: scalar), with fast math."""
    import tvm
    from tvm import te

    fast_math.install()
    n = len(VALUES) // 16 * 16
    a = te.placeholder((n,), name="a")
    b = te.compute((n,), lambda i: getattr(te, function)(a[i]), name="b")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b]))
    if lanes > 1:
        _, inner = sch.split(sch.get_loops(sch.get_sblock("b"))[0], [None, lanes])
        sch.vectorize(inner)
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    return tvm.compile(sch.mod, target=target), n


@pytest.mark.parametrize("lanes", [1, 16])
@pytest.mark.parametrize("function", ["exp", "sigmoid", "erf"])
def test_matches_float64_reference(function, lanes):
    import tvm

    library, n = build(function, lanes)
    x = VALUES[:n]
    out = tvm.runtime.tensor(np.zeros(n, "float32"))
    library(tvm.runtime.tensor(x), out)
    got, wide = out.numpy().astype("float64"), x.astype("float64")
    if function == "exp":
        inside = np.abs(wide) < 87.0  # beyond, float32 exp is inf/denormal anyway
        expected = np.exp(wide[inside])
        assert np.max(np.abs(got[inside] - expected) / expected) < 5e-7
        assert np.all(got[wide > 89] > 1e38) and np.all(got[wide < -88] < 1e-37)
    elif function == "erf":
        expected = np.array([math.erf(v) for v in wide])
        assert np.max(np.abs(got - expected)) < 3e-7
        near = (np.abs(wide) < 1) & (wide != 0)  # where the result is small, its relative error too
        assert np.max(np.abs(got[near] - expected[near]) / np.abs(expected[near])) < 2e-6
        assert np.all(np.abs(got) <= 1) and got[wide == 0].tolist() == [0.0] * int(np.sum(wide == 0))
    else:
        expected = 1.0 / (1.0 + np.exp(-wide))
        assert np.max(np.abs(got - expected)) < 2e-7
        assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("function, libm", [("sigmoid", "expf"), ("erf", "erff")])
def test_vector_code_calls_no_libm(function, libm):
    library, _ = build(function, 16)
    assembly = library.mod.inspect_source("asm") if hasattr(library, "mod") else library.inspect_source("asm")
    assert libm not in assembly
