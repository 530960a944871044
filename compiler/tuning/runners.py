"""Where tuning candidates are built and measured: the builder (cross-linking), and the runner for the device a
run reached: this machine, TVM RPC servers behind a tracker (a frozen or vanished server costs only its in-flight
candidates), or no device at all (the cycle estimate, estimate_runner.py); and how a stopped run drops the
measurements still queued.
"""
import os

from compiler.artifact.linker import find_linker
from compiler.artifact.runtime import use_threads
from compiler.device.farm import session_if_served
from compiler.device.session import describe_device
from compiler.output import warn
from compiler.tuning import estimate_runner
from compiler.tuning.measure_inputs import alloc_local, alloc_rpc


def _rpc_runner(host: str, port: int, key: str, servers: int, options):
    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                       session_timeout_sec=int(options.session_timeout)),
        evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100,
                                                   enable_cpu_cache_flush=False),
        f_create_session=session_if_served, f_alloc_argument=alloc_rpc, max_workers=servers)
    # RPCRunner's own pool has no timeout: a frozen server (or none left) would hang tuning forever.
    # Waiting in the tracker queue behind the other workers counts too, hence the factor.
    runner.pool.shutdown(wait=False)
    runner.pool = PopenPoolExecutor(max_workers=servers, timeout=options.session_timeout * servers + 30)
    return runner


def make_runner(preset, reached, options, database):
    """(MetaSchedule runner, device description, servers-alive check) for the device `reached` (None: no board,
    the cycle estimate ranks candidates)."""
    from tvm.s_tir import meta_schedule as ms

    if reached is None:
        return estimate_runner.make_runner(preset, options.session_timeout), estimate_runner.describe(preset), None
    if reached.tracker is None:
        # Candidates run on the threads the built model will use (runtime.Model), not on TVM's x86 default
        # of half the CPUs; the runner's workers inherit the setting. A user's TVM_NUM_THREADS wins.
        threads = int(os.environ.get("TVM_NUM_THREADS") or preset.num_cores)
        use_threads(threads)
        _warn_if_threads_differ(database, threads)
        runner = ms.runner.LocalRunner(timeout_sec=options.session_timeout, f_alloc_argument=alloc_local)
        return runner, dict(describe_device(None), tvm_threads=threads), None
    host, port = reached.address
    device = describe_device(reached.session(options.session_timeout))
    if reached.emulated:
        device["emulated"] = True
    return (_rpc_runner(host, port, preset.rpc_key, reached.servers(), options), device,
            lambda: reached.servers() > 0)


def drop_pending_measurements(runner) -> None:
    """Cancel the candidates still queued in the runner's worker pool and stop its workers. A search that
    stops early (no server left, Ctrl-C) leaves the rest of MetaSchedule's submitted batches queued; each
    would wait out its session timeout on a tracker with no server, and the interpreter's exit waits for
    them all (minutes per candidate)."""
    pool = getattr(runner, "pool", None)
    threads = getattr(pool, "_threadpool", None)  # PopenPoolExecutor's queue of pending work (no public cancel)
    if threads is not None:
        threads.shutdown(wait=False, cancel_futures=True)
    if pool is not None:
        pool.shutdown(wait=False)  # kills the workers: a worker blocked on the tracker returns at once


def make_builder(preset, options):
    """The candidate builder: the project's persistent pool (or MetaSchedule's LocalBuilder), cross-linking."""
    from tvm.s_tir import meta_schedule as ms

    # Waits until needed: the builder module loads TVM at import, which a command refusing bad input must not.
    from compiler.tuning.builder import PersistentBuilder, SharedLibraryExport

    link = find_linker(preset.cross_triple)
    workers = max(1, min(2, os.cpu_count() or 1))
    if options.builder == "stock":
        builder = ms.builder.LocalBuilder(max_workers=workers, f_export=SharedLibraryExport(link))
        builder.close = lambda: None
        return builder
    return PersistentBuilder(link, max_workers=workers)


def _warn_if_threads_differ(database, threads: int) -> None:
    """A resumed host database whose earlier runs measured on another thread count mixes timings that do not
    compare (TVM's x86 default is half the CPUs): say so."""
    earlier = database.thread_counts() - {threads}
    if earlier:
        shown = ", ".join("TVM's default" if n is None else str(n) for n in sorted(earlier, key=str))
        warn(f"warning: earlier runs of {database.path} measured candidates on {shown} thread(s), this run on "
             f"{threads}: their timings do not compare; tune into a new --database to keep them apart")
