"""Plain against prepacked weights, both tuned from empty databases with the same MetaSchedule budget on
this CPU, measured in one run with ONNX Runtime and PyTorch eager (interleaved, same thread count).

    .venv/bin/python bench/layout.py --trials 2000 --runs 60 --json bench/results/layout-<cpu>.json

With --shipped the databases are this CPU's own in tuning_logs/host/<cpu>/ (tuned up to the budget,
resuming what is there); without it they go to build/bench-layout/<cpu>/<layout>/.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.bench.variants import compare_variants  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_variants("layout", {layout: {"layout": layout} for layout in ("plain", "prepack")}, __doc__))
