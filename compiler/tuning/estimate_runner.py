"""Tuning with no board: a MetaSchedule runner whose cost is a candidate's cycle estimate on the preset's core.

Candidates are cross-built on the host as for a board (compiler/tuning/builder.py). Each batch is copied into
the emulated Pi and run by one qemu process with the block-profile and cache plugins at once
(compiler/device/candidate_guest.py: a warm-up call, then one call between markers per candidate); the
estimate is the one `python -m compiler bench --count-instructions` reports (compiler/device/cycle_estimate.py:
llvm-mca's steady state per block times its executions, plus the simulated misses at the core's published
cost). MetaSchedule receives estimated cycles / the preset's clock as the run time.

The estimate is a model, not a board: a database tuned against it is labelled so in its provenance and in
every artifact built with it, is applied only where no database measured on a board exists, and seeds a
tuning run on real boards (compiler/tuning/database.py).
"""
import json
import shutil
import uuid
from typing import List

from compiler.errors import DeviceError

MEASURED_BY = "cycle-estimate"
DEFAULT_CLOCK_GHZ = 1.0   # a preset without "clock_ghz": estimated cycles are reported as nanoseconds


def label(preset) -> str:
    """The one line every database tuned this way carries."""
    return f"tuned against the cycle estimate for {preset.target.get('mcpu')}, no board"


def clock_ghz(preset) -> float:
    return preset.clock_ghz or DEFAULT_CLOCK_GHZ


class CandidateEstimator:
    """Estimated cycles of a batch of candidate kernels on the core `mcpu`, in one qemu run."""

    def __init__(self, mcpu: str, timeout_per_candidate: float = 120.0):
        from compiler.device import cores, cycle_estimate, instruction_count

        self.core = cores.lookup(mcpu)
        self.mcpu = mcpu
        self.counter = instruction_count.ensure_counter(self.core.arch)
        self.costs = cycle_estimate.BlockCosts(self.core)
        self.timeout_per_candidate = timeout_per_candidate

    def estimate(self, candidates: List[tuple]) -> List[tuple]:
        """[(library path, [(shape, dtype)])] -> [(cycles, None) or (None, error)], in order. A batch whose
        qemu run fails as a whole (a candidate crashing the process) is split until the culprit stands alone."""
        if not candidates:
            return []
        try:
            return self._run(candidates)
        except (DeviceError, OSError) as err:
            if len(candidates) == 1:
                return [(None, f"estimate: {err}")]
            half = len(candidates) // 2
            return self.estimate(candidates[:half]) + self.estimate(candidates[half:])

    def _run(self, candidates: List[tuple]) -> List[tuple]:
        from compiler import paths
        from compiler.device import cycle_estimate, instruction_count as ic

        rootfs = self.counter["rootfs"]
        batch = f"candidates/{uuid.uuid4().hex[:12]}"
        host_dir = (rootfs / ic.GUEST_WORK.lstrip("/") / batch) if rootfs is not None else \
            paths.cache_dir() / "qemu-count-logs" / batch
        guest_dir = f"{ic.GUEST_WORK}/{batch}" if rootfs is not None else str(host_dir)
        host_dir.mkdir(parents=True)
        try:
            manifest = []
            for i, (library, args) in enumerate(candidates):
                shutil.copy2(library, host_dir / f"c{i}.so")
                manifest.append({"path": f"{guest_dir}/c{i}.so", "args": [[list(s), d] for s, d in args]})
            (host_dir / "manifest.json").write_text(json.dumps({"candidates": manifest}))
            run = ic.run_guest(self.counter, ["--manifest", f"{guest_dir}/manifest.json"], ("blocks", "cache"),
                               self.mcpu, timeout=60 + self.timeout_per_candidate * len(candidates),
                               script=ic.CANDIDATE_SCRIPT)
        finally:
            shutil.rmtree(host_dir, ignore_errors=True)
        if not run["guest"]:
            raise DeviceError("the candidate guest printed no result")
        profile = cycle_estimate.parse_profile(run["log"])
        counters = {m["id"]: m for m in run["markers"]}
        base, out = run["guest"]["base"], []
        for i, error in enumerate(run["guest"]["errors"]):
            start, stop = counters.get(base + 2 * i), counters.get(base + 2 * i + 1)
            if error is not None or start is None or stop is None:
                out.append((None, error or "the candidate's markers are missing from the profile"))
                continue
            misses = {k: stop[k] - start[k] for k in ("dmiss", "imiss", "l2miss") if k in start and k in stop}
            core_part = cycle_estimate.core_cycles(profile, profile.counts_at(base + 2 * i + 1), self.costs)
            out.append((cycle_estimate.estimate(core_part, misses, self.core)["cycles"], None))
        return out


def make_runner(preset, timeout_per_candidate: float):
    """The MetaSchedule runner (a PyRunner) for `preset`'s core; candidates' run times are estimated cycles over
    the preset's clock."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    estimator = CandidateEstimator(str(preset.target.get("mcpu")), timeout_per_candidate)
    hz = clock_ghz(preset) * 1e9

    @derived_object
    class Done(ms.runner.PyRunnerFuture):
        def __init__(self, result):
            super().__init__()
            self.value = result

        def done(self) -> bool:
            return True

        def result(self):
            return self.value

    @derived_object
    class CycleEstimateRunner(ms.runner.PyRunner):
        def run(self, runner_inputs) -> list:
            batch = [(str(r.artifact_path), [(tuple(int(d) for d in a.shape), str(a.dtype)) for a in r.args_info])
                     for r in runner_inputs]
            return [Done(ms.runner.RunnerResult(run_secs=[cycles / hz] if cycles is not None else None,
                                                error_msg=error))
                    for cycles, error in estimator.estimate(batch)]

    return CycleEstimateRunner()


def describe(preset) -> dict:
    """The `device` of a board-less database's provenance: what stood in for the board, and the machine that ran
    the estimate (the estimate does not depend on it: qemu and llvm-mca model the preset's core)."""
    from compiler.device import cores, cycle_estimate
    from compiler.device.session import host_description

    core = cores.lookup(str(preset.target.get("mcpu")))
    host = host_description()
    return {"board": None, "measured_by": MEASURED_BY, "core": core.name, "qemu_cpu": core.qemu_cpu,
            "mca_cpu": core.mca_cpu, "mca_model": core.mca_model, "llvm": cycle_estimate.llvm_version(),
            "clock_ghz": clock_ghz(preset), "threads": 1, "note": label(preset),
            "estimated_on": {"cpu_model": host["cpu_model"], "llvm_cpu": host["llvm_cpu"]}}

