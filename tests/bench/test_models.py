"""python -m compiler.bench --models: five backbones side by side, their JSON, table and plot."""
import json
import os
import subprocess
import sys

import pytest

from compiler.bench import models as bench_models
from compiler.bench.measure import table
from compiler.errors import UserError
from compiler.tuning import database as tuning_db
from test_command import run_bench
from test_cli import assert_user_error, run_cli

ROOT = __import__("conftest").ROOT


def test_model_names_put_attendnext_first_and_refuse_unknown_names():
    assert bench_models.model_names("fbnet_c,attendnext,fbnet_c") == ["attendnext", "fbnet_c"]
    assert bench_models.model_names("all")[0] == "attendnext" and len(bench_models.model_names("all")) == 5
    with pytest.raises(UserError, match="unknown model 'resnet50'"):
        bench_models.model_names("attendnext,resnet50")
    with pytest.raises(UserError, match="give 'all' or a comma list"):
        bench_models.model_names(" , ")


def _row(params, times):
    return {"params": params, "macs": 10 * params, "engines": table(times),
            "database": {"path": None, "kernels_tuned": 0, "kernels_total": 9}}


def test_speedups_are_each_baselines_median_over_attendnexts_in_the_same_engine(tmp_path):
    models = {"attendnext": _row(3_000_000, {"ONNX Runtime": [2.0, 2.0, 4.0], "TVM": [1.0, 3.0, 1.0]}),
              "fbnet_c": _row(5_000_000, {"ONNX Runtime": [6.0, 6.0, 1.0], "TVM": [5.0, 5.0, 9.0]})}
    ratios = bench_models.speedups(models)
    assert ratios == {"fbnet_c": {"ONNX Runtime": 3.0, "TVM": 5.0}}
    report = {"device": "a CPU", "threads": 2, "runs_per_engine": 3, "command": "cmd", "models": models,
              "speedups": ratios, "emulated": True, "notes": []}
    markdown = bench_models.render_markdown(report)
    assert "| fbnet_c | 5.00 | 0.05 | 6.00 | 5.00 | untuned |" in markdown
    assert "| fbnet_c | 3.00x | 5.00x |" in markdown and "EMULATED" in markdown
    bench_models.plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench_models.speedups({"fbnet_c": models["fbnet_c"]}) == {}


@pytest.mark.parametrize("args, fragment", [
    (["--models", "resnet50"], "unknown model 'resnet50'"),
    (["--models", "all", "--profile"], "leave out --profile, --database and --fusion"),
])
def test_bad_models_input_is_one_line(args, fragment):
    assert_user_error(run_bench(*args), fragment)


@pytest.fixture(scope="module")
def tuned_logs(tmp_path_factory):
    """A scratch tuning_logs/ holding MobileOne-S1 tuned for 4 trials (AttendNeXt has no database there), and the
    tuning run's result."""
    folder = tmp_path_factory.mktemp("models")
    env = dict(os.environ, DCAC_TUNING_LOGS=str(folder / "logs"))
    tuned = run_cli("--model", "mobileone_s1", "--target", "host", "--tune", "--trials", "4", "--judge-records", "off", "--out",
                    folder / "tuned", env=env)
    return folder, env, tuned


@pytest.mark.slow
def test_a_tiny_tune_of_a_registered_model_lands_in_tuning_logs(tuned_logs):
    folder, env, tuned = tuned_logs
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    assert list((folder / "logs").rglob(tuning_db.RECORDS)), "no database in the scratch tuning_logs/"


@pytest.mark.slow
def test_models_json_with_a_tiny_tuned_database_and_an_untuned_model(tuned_logs):
    """MobileOne-S1 with its 4-trial database from the scratch tuning_logs/, AttendNeXt with none there."""
    folder, env, tuned = tuned_logs
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    out = folder / "models.json"
    result = subprocess.run([sys.executable, "-m", "compiler.bench", "--target", "host", "--models",
                             "mobileone_s1,attendnext", "--runs", "2", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["attendnext", "mobileone_s1"]
    for name, row in report["models"].items():
        assert set(row) >= {"params", "macs", "engines", "kernels_tuned", "kernels_total"}
        assert set(row["engines"]) == {"TVM", "ONNX Runtime", "PyTorch eager"}
        assert all(engine["runs"] == 2 and engine["median_ms"] > 0 for engine in row["engines"].values())
        assert isinstance(row["params"], int) and isinstance(row["macs"], int) and row["kernels_total"] > 0
    assert report["models"]["mobileone_s1"]["params"] == 4_764_840
    one, attendnext = report["models"]["mobileone_s1"], report["models"]["attendnext"]
    assert 0 < one["kernels_tuned"] < one["kernels_total"] and one["database"]["trials"] >= 4
    assert attendnext["kernels_tuned"] == 0 and attendnext["database"]["path"] is None
    assert report["speedups"]["mobileone_s1"]["ONNX Runtime"] == pytest.approx(
        one["engines"]["ONNX Runtime"]["median_ms"] / attendnext["engines"]["ONNX Runtime"]["median_ms"])
    assert report["machine"]["llvm_cpu"] and "--models mobileone_s1,attendnext" in report["command"]
    markdown = out.with_suffix(".md").read_text()
    assert "| attendnext |" in markdown and "untuned" in markdown and "Untuned (no tuning database" in markdown
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_backbones_are_compared_with_databases_of_one_cpu(tmp_path, monkeypatch):
    """This CPU has a database for AttendNeXt only; another CPU has all three models: all three come from it."""
    from compiler import targets
    from compiler.device.session import host_description
    from compiler.tuning import database as tuning_db

    monkeypatch.setenv("DCAC_TUNING_LOGS", str(tmp_path))
    preset = targets.load("host")
    here = tuning_db.cpu_of(preset)
    names = ["attendnext", "fbnet_c", "mobileone_s1"]

    def make(cpu, name):  # another CPU of this machine's vector width: the lookup's policy applies its databases
        folder = tuning_db.default_path("host", cpu, name, "stock", "prepack")
        folder.mkdir(parents=True)
        (folder / tuning_db.RECORDS).write_text("")
        features = host_description()["cpu_features"]
        tuning_db.TuningDatabase(folder).write_provenance({"device": {"cpu_features": features}})

    make(here, "attendnext")
    assert bench_models.common_databases(preset, names, "prepack") == {}  # no CPU has all three yet
    for name in names:
        make("othercpu", name)
    chosen = bench_models.common_databases(preset, names, "prepack")
    assert {name: path.parent.name for name, path in chosen.items()} == dict.fromkeys(names, "othercpu")
    for name in names[1:]:
        make(here, name)
    chosen = bench_models.common_databases(preset, names, "prepack")
    assert {path.parent.name for path in chosen.values()} == {here}  # this CPU's own, once it has them all
