"""A pytest plugin that writes every test's duration (setup + call + teardown, each phase too), its file, its
markers and its outcome to the JSON file named by $DCAC_TEST_DURATIONS. bench/test_tiers.py loads it with
`-p test_durations` through PYTEST_ADDOPTS, so the tier still runs exactly as its make target says.

Under pytest-xdist the controller receives every worker's reports and writes the file alone. A shared fixture's
build is charged to the setup of the first test that asks for it, which is where its time is really spent.
"""
import json
import os
import time

_tests: dict = {}
_is_worker = False  # an xdist worker: its controller receives the same reports and writes the files


def pytest_configure(config):
    global _is_worker
    _is_worker = hasattr(config, "workerinput")


def _entry(report) -> dict:
    return _tests.setdefault(report.nodeid, {
        "nodeid": report.nodeid, "file": report.nodeid.split("::")[0],
        "markers": sorted(name for name in ("slow", "emulated") if name in report.keywords),
        "worker": None, "setup": 0.0, "call": 0.0, "teardown": 0.0, "outcome": "passed"})


def pytest_runtest_logreport(report):
    entry = _entry(report)
    entry[report.when] = round(report.duration, 3)
    node = getattr(report, "node", None)  # pytest-xdist's worker, on the controller's copy of a report
    entry["worker"] = getattr(getattr(node, "gateway", None), "id", None) or entry["worker"]
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
    target = os.environ.get("DCAC_TEST_DURATIONS")
    if target and report.when == "teardown" and not _is_worker:  # a line per finished test, to watch a long run
        with open(target + ".log", "a") as handle:
            handle.write(json.dumps(entry) + "\n")


def pytest_sessionstart(session):
    session.config._durations_started = time.time()


def pytest_sessionfinish(session):
    target = os.environ.get("DCAC_TEST_DURATIONS")
    if not target or _is_worker:
        return
    tests = []
    for entry in _tests.values():
        entry["seconds"] = round(entry["setup"] + entry["call"] + entry["teardown"], 3)
        tests.append(entry)
    tests.sort(key=lambda entry: -entry["seconds"])
    from compiler import atomic

    atomic.write_json(target, {"session_seconds": round(time.time() - session.config._durations_started, 1),
                               "tests": tests})
