"""The device side of a tuning farm: TVM's RPC server plus two functions of the project's own.

Run it on a board (it needs only the apache-tvm wheel):
    python device_server.py --tracker 10.0.0.5:9190 --key rpi4 --host 10.0.0.17   # the board's private address
It is TVM's own `tvm.rpc.Server`. `dcac.device_info` lets the compiler record which device measured a
database (uname, CPU model, and whether it runs under emulation); `dcac.onnxruntime_benchmark` times
ONNX Runtime on the board itself, for `python -m compiler.bench --target rpi4 --tracker ...` (it needs
`pip install onnxruntime` on the board). Boards running the plain `python -m tvm.exec.rpc_server` work
for tuning and verification; their provenance then says the device is unknown.
"""
import argparse

DEFAULT_HOST = "127.0.0.1"  # safe by default: whoever reaches this port can run code on the board


def register_functions():
    """Runs inside the server process (TVM pickles it there), so it imports what it needs itself."""
    import json
    import platform
    import time

    import tvm

    def device_info() -> str:
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
        return json.dumps({
            "uname": dict(platform.uname()._asdict()),
            "machine": machine,
            "cpu_model": cpu_model,
            # qemu-user shows the host's /proc/cpuinfo: an aarch64 Python seeing x86 flags is emulated.
            "emulated": machine == "aarch64" and ("vendor_id" in fields or "flags" in fields),
            "tvm": tvm.__version__,
        })

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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="TVM RPC server with device info, for a tuning farm")
    parser.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    parser.add_argument("--key", required=True, help="the target preset's rpc_key, e.g. rpi4")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default loopback: the server runs any code a client uploads; "
                             "give the board's private-network address to serve a farm, never a public one)")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--port-end", type=int, default=9199)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from tvm import rpc

    host, port = args.tracker.rsplit(":", 1)
    server = rpc.Server(args.host, args.port, args.port_end, tracker_addr=(host, int(port)), key=args.key,
                        server_init_callback=register_functions)
    server.proc.join()


if __name__ == "__main__":
    main()
