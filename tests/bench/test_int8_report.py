"""`bench --quantize int8`'s report: quality against float for both engines beside the times."""
from compiler.bench import int8
from compiler.device.quality import Quality


def test_the_report_puts_both_engines_quality_against_float_beside_the_rule():
    judged = Quality(128, "seeded standard-normal, seed 0", 14.1, 14.15, 0.62, 0.69).as_dict()
    times = {engine: 10.0 for engine in int8.ENGINES}
    row = {"median_ms": times, "ratios": {"TVM int8 / ONNX Runtime int8": 1.0},
           "onnxruntime_agreement": {"relative_error": 0.03, "quality": judged},
           "databases": {p: {"path": None} for p in ("float", "int8")}}
    report = {"device": "x (y)", "threads": 2, "runs_per_engine": 60, "command": "c", "models": {"mobilevit_xs": row}}
    text = int8.render(report)
    assert "| 14.1 dB, 62% | 14.2 dB, 69% | fails |" in text  # 7 points of top-1 below ONNX Runtime's
    assert "over 128 inputs (seeded standard-normal, seed 0)" in text and "minus 0.5 dB" in text
