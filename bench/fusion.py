"""Stock against DC-AC fusion, both tuned with the same MetaSchedule budget on the host, with ONNX Runtime
and PyTorch eager measured in the same run (interleaved rounds, same thread count, median of the runs).

    .venv/bin/python bench/fusion.py --trials 150 --runs 60 --json bench/results/fusion-<cpu>.json

Databases go to build/bench-fusion/<cpu>/<mode>/ so an interrupted run resumes; --trials is per fusion mode.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.bench.variants import compare_variants  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_variants("fusion", {mode: {"fusion": mode} for mode in ("stock", "dcac")}, __doc__))
