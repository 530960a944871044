"""Guest side of the instruction counter: runs inside the emulated Pi (aarch64 Python at /opt/tvm).

Loads a TVM-compiled library (through runtime.py's Model when its sidecar is beside it, else
tvm.runtime directly) or an ONNX Runtime session (1 intra-op thread, ORT_ENABLE_ALL), runs `--warmup`
inferences, then `--n` inferences on a fixed seeded input between two markers:

    marker 5 (arm)  ... warm-up ...  marker 1  ... n inferences ...  marker 2

A marker is write(MARKER_FD, buf, id): an invalid file descriptor, so the call fails (EBADF) and does
nothing; the counting plugins (dcac_insn, dcac_cache) print their running counters when they see it.
With the stock plugins (insn.c / cache.c) the markers are simply ignored and the host subtracts two runs.

--per-kernel (TVM only) adds a pair of markers around every call the Relax VM makes (vm.set_instrument),
during one extra inference after marker 2; the id -> name table is printed as JSON on stdout.

Prints one JSON line, prefixed with "RESULT ", on stdout.
"""
import argparse
import json
import os
import sys
import time

MARKER_FD = 252076          # must match DCAC_MARKER_FD in the plugins
START, STOP = 1, 2          # region markers
ARM = 5                     # model loaded, warm-up next: the plugins start instrumenting here (arm=5)
KERNEL_BASE = 16            # per-kernel markers: KERNEL_BASE + 2*index (+1 after the call)
_BUF = memoryview(bytearray(1 << 16))


def marker(mid: int) -> None:
    try:
        os.write(MARKER_FD, _BUF[:mid])
    except OSError:
        pass


def parse_shape(text):
    return tuple(int(d) for d in text.replace("x", ",").split(",") if d)


def make_input(shape, dtype="float32", seed=0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class TVMEngine:
    def __init__(self, path, shape):
        import tvm

        self.tvm = tvm
        here = os.path.dirname(os.path.abspath(path))
        sidecar = os.path.splitext(path)[0] + ".json"
        self.via = "runtime.py"
        if os.path.isfile(os.path.join(here, "runtime.py")) and os.path.isfile(sidecar):
            sys.path.insert(0, here)
            from runtime import Model

            self.model = Model(path, threads=1)
            self.vm = self.model.vm
            self.shape = tuple(self.model.inputs[0]["shape"]) if len(self.model.inputs) == 1 else shape
        else:  # a bare library: the Relax VM directly
            self.via = "tvm.runtime"
            self.model = None
            os.environ.setdefault("TVM_NUM_THREADS", "1")
            lib = tvm.runtime.load_module(path)
            self.vm = tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())
            self.shape = shape
        self.version = tvm.__version__

    def run(self, x):
        if self.model is not None:
            return self.model.run(x)
        self.vm.set_input("main", self.tvm.runtime.tensor(x, self.tvm.cpu()))
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        outs = [out] if hasattr(out, "numpy") else list(out)
        return [o.numpy() for o in outs]


ORT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disable": "ORT_DISABLE_ALL"}


class ORTEngine:
    def __init__(self, path, shape, level="all"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level])
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()[0]
        self.name = inp.name
        static = [d if isinstance(d, int) else None for d in inp.shape]
        self.shape = shape or tuple(static)
        self.version = ort.__version__
        self.via = "onnxruntime"

    def run(self, x):
        return self.sess.run(None, {self.name: x})


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=["tvm", "ort"], required=True)
    p.add_argument("--model", required=True, help=".so (tvm) or .onnx (ort)")
    p.add_argument("--shape", help="input shape, e.g. 1,3,224,224 (default: from the sidecar / ONNX)")
    p.add_argument("--n", type=int, default=1, help="inferences between the markers")
    p.add_argument("--warmup", type=int, default=1, help="inferences before the first marker")
    p.add_argument("--ort-opt", choices=sorted(ORT_LEVELS), default="all", help="ORT graph optimisation level")
    p.add_argument("--per-kernel", action="store_true", help="TVM: markers around every VM call (one run)")
    a = p.parse_args(argv)

    t0 = time.time()
    shape = parse_shape(a.shape) if a.shape else None
    engine = TVMEngine(a.model, shape) if a.engine == "tvm" else ORTEngine(a.model, shape, a.ort_opt)
    if engine.shape is None or any(d is None for d in engine.shape):
        p.error(f"give --shape: the model's input shape is {engine.shape}")
    x = make_input(engine.shape)
    t_load = time.time()
    marker(ARM)
    out = None
    for _ in range(a.warmup):
        out = engine.run(x)
    marker(START)
    for _ in range(a.n):
        out = engine.run(x)
    marker(STOP)
    t_run = time.time()

    kernels = None
    if a.per_kernel:
        if a.engine != "tvm":
            p.error("--per-kernel needs --engine tvm")
        names, index = [], {}

        def instrument(func, name, before_run, ret, *args):
            i = index.get(name)
            if i is None:
                i = index[name] = len(names)
                names.append(name)
            marker(KERNEL_BASE + 2 * i + (0 if before_run else 1))
            return 0  # VMInstrumentReturnKind.NO_OP

        engine.vm.set_instrument(instrument)
        marker(3)
        engine.run(x)
        marker(4)
        kernels = names

    first = out[0] if out else None
    result = {
        "engine": a.engine, "via": engine.via, "version": engine.version, "model": a.model,
        "shape": list(engine.shape), "n": a.n, "warmup": a.warmup,
        "output_shape": list(first.shape) if first is not None else None,
        "output_checksum": float(abs(first).sum()) if first is not None else None,
        "load_s": round(t_load - t0, 3), "run_s": round(t_run - t_load, 3),
        "kernels": kernels, "kernel_base": KERNEL_BASE,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
