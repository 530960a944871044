"""schedules/row_reductions.py: a kernel that reduces rows runs one row per parallel job, its reductions in vector
partial sums, and computes what ONNX Runtime computes, on the host and on the emulated Pi."""
import pytest

from test_defaults import assert_defaults_match_onnxruntime, default_plans


@pytest.mark.parametrize("target", ["host", "rpi4"])
def test_layer_norm_softmax_and_long_means_take_the_row_schedule(tmp_path, target):
    """The layer norm, the softmax over rows of 24 and the mean over 784 pixels take it on both ISAs; the softmax
    over rows of 197 (prime) takes it step by step with a partial last vector, as the mean over 49 pixels does where
    7-lane partial sums do not fit a vector."""
    notes, _ = default_plans(tmp_path, "row_reductions", target)
    rows = {name: note for name, note in notes.items() if note.startswith("row reductions")}
    assert any(name.startswith("layer_norm") for name in rows), notes
    assert any("softmax" in name and "of 24" in note for name, note in rows.items()), notes
    assert any("of 784" in note for note in rows.values()), notes
    assert any("of 197" in note and "the last vector partial" in note for note in rows.values()), notes
    sevens = [note for note in rows.values() if "of 49" in note]  # 7-lane partial sums on AVX-512, 4 and a part on NEON
    assert sevens and all(("the last vector partial" in note) == (target == "rpi4") for note in sevens), notes


@pytest.mark.parametrize("target", ["host", pytest.param("rpi4", marks=[pytest.mark.slow, pytest.mark.emulated])])
def test_row_reductions_match_onnxruntime(tmp_path, target):
    assert_defaults_match_onnxruntime(tmp_path, "row_reductions", target)
