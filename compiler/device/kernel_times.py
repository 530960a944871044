"""Where one inference's time goes in a host library, per kernel: the Relax VM calls an instrument function
before and after every call (`vm.set_instrument`); the time between the two is that call's time, summed per
kernel. Used beside ONNX Runtime's profile (compiler/bench/kernel_profile.py) and to judge records against
default schedules (compiler/tuning/guard.py)."""
import collections
import time
from pathlib import Path


def tvm_kernel_times(library: Path, image, runs: int) -> dict:
    """{kernel name: [calls, total ms]} over `runs` inferences of a built library (host only); `image` is the
    input array, or a list of them for a model of several inputs."""
    import tvm
    from tvm.runtime import vm as tvm_vm

    machine = tvm_vm.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    totals = collections.defaultdict(lambda: [0, 0.0])
    started = {}

    def instrument(func, name, before_run, ret_value, *args):
        if before_run:
            started[name] = time.perf_counter()
        else:
            entry = totals[name]
            entry[0] += 1
            entry[1] += (time.perf_counter() - started.pop(name)) * 1e3
        return 0  # 0: keep instrumenting (VMInstrumentReturnKind.NO_OP)

    machine.set_input("main", *[tvm.runtime.tensor(array) for array in (image if isinstance(image, list) else [image])])
    machine.invoke_stateful("main")  # warm-up, uninstrumented
    machine.set_instrument(instrument)
    for _ in range(runs):
        machine.invoke_stateful("main")
    return dict(totals)
