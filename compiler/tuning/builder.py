"""MetaSchedule's candidate builder, made fast and cross-linking.

Stock `LocalBuilder` starts a new worker pool for every batch and its default build function imports
`tvm.s_tir.tensor_intrin` in each fresh worker (10-17 s here, mostly CUDA intrinsics): most of a
tuning batch went to start-up, and under load whole batches timed out. This builder keeps its pool
across batches (recycling it every few batches, since stock restarts it for a worker memory leak),
skips that import, and exports each candidate as a .so linked on the host with the preset's linker,
so boards need no compiler.
"""
import os
import tempfile
import time
from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from compiler.artifact.linker import Linker
from compiler.passes.fast_math import install


def build_candidate(mod, target, _params):
    """Build one scheduled candidate; the schedule is already tensorized, so no intrinsics import.
    Candidates are compiled with the same exp/sigmoid/erf lowering as the final build (compiler/passes/fast_math.py),
    so tuning ranks schedules by the cost they will have in the shipped library."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    install()
    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


@dataclass(frozen=True)
class SharedLibraryExport:
    """`f_export`: link the candidate into a .so with `linker` (pickled into the build workers)."""

    linker: Linker

    def __call__(self, runtime_module) -> str:
        path = os.path.join(tempfile.mkdtemp(prefix="dcac-candidate-"), "candidate.so")
        runtime_module.export_library(path, fcompile=self.linker)
        return path


@derived_object
class PersistentBuilder(ms.builder.PyBuilder):
    """A LocalBuilder whose worker pool outlives a batch."""

    def __init__(self, linker: Linker, max_workers: int, timeout_sec: float = 120.0, recycle_after: int = 25):
        super().__init__()
        self.export = SharedLibraryExport(linker)
        self.max_workers = max_workers
        self.timeout_sec = timeout_sec
        self.recycle_after = recycle_after
        self.pool = None
        self.batches = 0
        self.first_build_at = None  # when the first batch came to be built: the run's start-up ends there

    def _pool(self) -> PopenPoolExecutor:
        if self.pool is None or self.batches >= self.recycle_after:
            self.close()
            self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec)
            self.batches = 0
        self.batches += 1
        return self.pool

    def build(self, build_inputs):
        if self.first_build_at is None:
            self.first_build_at = time.time()
        jobs = [(build_candidate, self.export, item.mod, item.target, None) for item in build_inputs]
        results = []
        for outcome in self._pool().map_with_error_catching(lambda job: _worker_func(*job), jobs):
            if outcome.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(None, f"build timed out after {self.timeout_sec:.0f} s"))
            else:
                results.append(ms.builder.BuilderResult(None, f"build failed: {outcome.value}"))
        return results

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
