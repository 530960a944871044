"""The device side of a tuning farm: TVM's RPC server plus two functions of the project's own.

Run it on a board (it needs only the apache-tvm wheel):
    python board_server.py --tracker 10.0.0.5:9190 --key rpi4 --host 10.0.0.17   # the board's private address
It is TVM's own `tvm.rpc.Server`. `dcac.device_info` lets the compiler record which device measured a
database (uname, CPU model, and whether it runs under emulation); `dcac.onnxruntime_benchmark` times
ONNX Runtime on the board itself, for `python -m compiler.bench --target rpi4 --tracker ...` (it needs
`pip install onnxruntime` on the board). Boards running the plain `python -m tvm.exec.rpc_server` work
for tuning and verification; their provenance then says the device is unknown.
"""
import argparse
import sys

DEFAULT_HOST = "127.0.0.1"  # safe by default: whoever reaches this port can run code on the board


def describe_machine() -> dict:
    """This machine from uname and /proc/cpuinfo (stdlib only: it runs on a board, and on the host through
    compiler/device/session.py, one parser for both). `flags` is the CPU's feature list (x86), else empty."""
    import platform

    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    machine = platform.machine()
    cpu_model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or (
        f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
        if "CPU implementer" in fields else "unknown")
    return {"uname": dict(platform.uname()._asdict()), "machine": machine, "cpu_model": cpu_model,
            # qemu-user shows the host's /proc/cpuinfo: an aarch64 Python seeing x86 flags is emulated.
            "emulated": machine == "aarch64" and ("vendor_id" in fields or "flags" in fields),
            "flags": fields.get("flags", "")}


def register_functions():
    """Runs inside the server process (TVM pickles it there), so it imports what it needs itself."""
    import json
    import time

    import tvm

    def device_info() -> str:
        description = describe_machine()
        description.pop("flags")
        return json.dumps({**description, "tvm": tvm.__version__})

    sessions = {}  # one ONNX Runtime session per (model, threads), kept across the benchmark's rounds

    def onnxruntime_benchmark(model_name: str, threads: int, runs: int) -> str:
        """Time `runs` ONNX Runtime runs (ms) of an uploaded model on seeded random inputs, here."""
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError as err:
            return json.dumps({"error": f"{err}: run `pip install onnxruntime` on the device"})
        key = (model_name, threads)
        if key not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = tvm.get_global_func("tvm.rpc.server.workpath")(model_name)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            rng = np.random.default_rng(0)
            feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()}
            session.run(None, feeds)  # warm-up: allocations and kernel selection
            sessions[key] = (session, feeds)
        session, feeds = sessions[key]
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1e3)
        return json.dumps({"times_ms": times, "version": ort.__version__})

    tvm.register_global_func("dcac.device_info", device_info, override=True)
    tvm.register_global_func("dcac.onnxruntime_benchmark", onnxruntime_benchmark, override=True)


EXAMPLES = [
    "python board_server.py --tracker 10.0.0.5:9190 --key rpi4 --host 10.0.0.17   # on the board, standalone",
    "python -m compiler device-server --tracker 127.0.0.1:9190 --key host          # this machine as a server",
]


def add_arguments(parser) -> None:
    parser.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    parser.add_argument("--key", required=True, help="the target preset's rpc_key, e.g. rpi4")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default loopback: the server runs any code a client uploads; "
                             "give the board's private-network address to serve a farm, never a public one)")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--port-end", type=int, default=9199)


def parse_args(argv=None):
    """Standalone on a board, where the compiler package is not installed: its own parser."""
    parser = argparse.ArgumentParser(description="TVM RPC server with device info, for a tuning farm")
    add_arguments(parser)
    return parser.parse_args(argv)


def run(args) -> int:
    """Serve until killed: register with the tracker under the key, measure what clients upload."""
    from tvm import rpc

    host, sep, port = args.tracker.rpartition(":")
    if not sep or not port.isdigit():
        print(f"error: --tracker '{args.tracker}' is not HOST:PORT: write e.g. --tracker 127.0.0.1:9190",
              file=sys.stderr)
        return 2
    server = rpc.Server(args.host, args.port, args.port_end, tracker_addr=(host, int(port)), key=args.key,
                        server_init_callback=register_functions)
    server.proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(run(parse_args()))
