"""The guard's verdicts (compiler/tuning/guard.py) from known per-kernel times: a record is kept only when it
beats its default schedule in the model by the margin, in most blocks."""
from pathlib import Path

from compiler.tuning import guard

TUNED, DEFAULTS = Path("tuned.so"), Path("defaults.so")


def fake_measure(times: dict):
    """A measure function replaying per-block times: {library: {kernel: [ms per block, ...]}}."""
    calls = {TUNED: 0, DEFAULTS: 0}

    def measure(library, inputs, runs):
        block = calls[library]
        calls[library] += 1
        return {kernel: series[block] for kernel, series in times[library].items()}
    return measure


def test_a_record_slower_than_its_default_schedule_in_the_model_loses():
    times = {TUNED: {"faster": [0.5, 0.5, 0.6], "slower": [2.0, 2.1, 1.9], "noise": [1.0, 0.97, 1.01],
                     "flaky": [0.5, 1.5, 1.5]},
             DEFAULTS: {"faster": [1.0, 1.0, 1.0], "slower": [1.0, 1.0, 1.0], "noise": [1.0, 1.0, 1.0],
                        "flaky": [1.0, 1.0, 1.0], "not_judged": [1.0, 1.0, 1.0]}}
    measure = guard.Measure(fake_measure(times), "ms per inference", rounds=3, runs=1, pause=0, method="replayed")
    verdicts = guard.judge(TUNED, DEFAULTS, [], ["faster", "slower", "noise", "flaky", "absent"], measure)
    assert {name: v["choice"] for name, v in verdicts.items()} == {
        "faster": "record", "slower": "default", "noise": "default", "flaky": "default"}
    assert verdicts["slower"]["why"].startswith("record 2.00x its default schedule in the model, cheaper in 0 of 3")
    assert verdicts["faster"]["with_record"] == 0.5 and verdicts["faster"]["with_default"] == 1.0


def test_verdicts_apply_only_to_the_model_they_judged(tmp_path):
    (tmp_path / guard.CHOICES).write_text('{"model_sha256": "abc", "kernels": {"k1": {"choice": "default", '
                                          '"why": "slower"}, "k2": {"choice": "record", "why": "faster"}}}')
    assert guard.kept_default(tmp_path, "abc") == {"k1": "slower"}
    assert guard.kept_default(tmp_path, "another model") == {}
    assert guard.kept_default(tmp_path / "no-database", "abc") == {}
