"""Run a shipped model: load the .so with its JSON sidecar, check inputs, run, benchmark; locally or over RPC.

This file is the device side. It imports only tvm, numpy and the standard library (never the rest of
this package), so copying it next to `model.so` and `model.json` is all a board needs:

    from runtime import Model
    model = Model("attendnext.so")
    logits, = model.run(image)          # numpy in, list of numpy out
    print(model.benchmark())            # {"median_ms": ..., "p90_ms": ..., ...}

With `session=` (a `tvm.rpc` session) the same object uploads the library to a remote board and runs it
there: that is how the compiler verifies and benchmarks on devices.
"""
import hashlib
import json
import math
import os
import statistics

import numpy as np

SIDECAR_SCHEMA = 1


class ModelError(Exception):
    """A library or an input that does not match its sidecar."""


def sha256_file(path) -> str:
    """The file's sha256, hex (the compiler's one helper: it may import the runtime, never the reverse)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(library_path: str) -> dict:
    sidecar_path = os.path.splitext(library_path)[0] + ".json"
    if not os.path.isfile(sidecar_path):
        raise ModelError(f"{sidecar_path} is missing: a library is only loaded with the sidecar built beside it")
    with open(sidecar_path) as handle:
        sidecar = json.load(handle)
    if sidecar.get("schema_version") != SIDECAR_SCHEMA:
        raise ModelError(f"{sidecar_path} has schema {sidecar.get('schema_version')}, this runtime reads "
                         f"{SIDECAR_SCHEMA}: rebuild the model or update runtime.py")
    return sidecar


def use_threads(threads: int) -> None:
    """Run this process's TVM kernels on `threads` threads. TVM reads TVM_NUM_THREADS once, when the process
    first runs a parallel kernel; without it TVM takes half the logical CPUs on x86 (it assumes every core is
    hyper-threaded), which on a VM's vCPUs is half the cores the model was built and tuned for."""
    os.environ["TVM_NUM_THREADS"] = str(int(threads))


class Model:
    """A compiled model and its sidecar; refuses a library whose sha256 differs from the sidecar's.

    Run locally, it uses `threads` threads, else TVM_NUM_THREADS if set, else the cores of the target it was
    built for (the sidecar's num-cores); set before the process runs its first model."""

    def __init__(self, library_path, session=None, threads=None):
        library_path = os.fspath(library_path)
        self.sidecar = read_sidecar(library_path)
        actual = sha256_file(library_path)
        if actual != self.sidecar["library_sha256"]:
            raise ModelError(f"{library_path} has sha256 {actual[:12]}..., its sidecar expects "
                             f"{self.sidecar['library_sha256'][:12]}...: the library was swapped or corrupted; "
                             "copy the .so and .json from the same build")
        import tvm  # here, not at the top: the compiler imports this file for its sha256 and schema, and a

        # command that fails on bad input should not pay TVM's start-up (seconds) to say so

        if session is None:
            cores = self.sidecar.get("target", {}).get("num-cores")
            if threads or (not os.environ.get("TVM_NUM_THREADS") and cores):
                use_threads(threads or cores)
            library = tvm.runtime.load_module(library_path)
            self.device = tvm.cpu()
        else:
            session.upload(library_path)
            library = session.load_module(os.path.basename(library_path))
            self.device = session.cpu()
        self.vm = tvm.runtime.vm.VirtualMachine(library, self.device)
        self.inputs = self.sidecar["inputs"]
        self.outputs = self.sidecar["outputs"]

    def _check(self, arrays):
        if len(arrays) != len(self.inputs):
            raise ModelError(f"the model takes {len(self.inputs)} input(s) "
                             f"({', '.join(i['name'] for i in self.inputs)}), got {len(arrays)}")
        checked = []
        for spec, array in zip(self.inputs, arrays):
            array = np.asarray(array)
            if tuple(array.shape) != tuple(spec["shape"]) or str(array.dtype) != spec["dtype"]:
                raise ModelError(f"input '{spec['name']}' must be {spec['dtype']}{list(spec['shape'])}, "
                                 f"got {array.dtype}{list(array.shape)}")
            checked.append(np.ascontiguousarray(array))
        return checked

    def set_inputs(self, *arrays, **named) -> None:
        """Copy inputs to the device once (positional in sidecar order, or by name)."""
        if named:
            missing = [i["name"] for i in self.inputs if i["name"] not in named]
            if missing or len(named) != len(self.inputs):
                raise ModelError(f"inputs by name must be exactly {', '.join(i['name'] for i in self.inputs)}")
            arrays = tuple(named[i["name"]] for i in self.inputs)
        import tvm

        device_arrays = [tvm.runtime.tensor(a, self.device) for a in self._check(arrays)]
        self.vm.set_input("main", *device_arrays)

    def run(self, *arrays, **named) -> list:
        """Run once; returns the outputs as numpy arrays, in the sidecar's order."""
        self.set_inputs(*arrays, **named)
        self.vm.invoke_stateful("main")
        outputs = self.vm.get_outputs("main")
        if hasattr(outputs, "numpy"):  # a single tensor, not a tuple
            outputs = [outputs]
        return [out.numpy() for out in outputs]

    def benchmark(self, *arrays, repeat: int = 50, number: int = 1, warmup: int = 5) -> dict:
        """Time `repeat` runs on the device itself (not the RPC round trip); median and p90 in ms.

        Inputs default to seeded random data of the sidecar's shapes.
        """
        if not arrays:
            rng = np.random.default_rng(0)
            arrays = [rng.standard_normal(i["shape"]).astype(i["dtype"]) for i in self.inputs]
        self.set_inputs(*arrays)
        for _ in range(warmup):
            self.vm.invoke_stateful("main")
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
        times = sorted(t * 1e3 for t in timer("main").results)
        return {"median_ms": statistics.median(times), "p90_ms": times[math.ceil(0.9 * len(times)) - 1],
                "mean_ms": statistics.fmean(times), "min_ms": times[0], "runs": len(times), "times_ms": times}
