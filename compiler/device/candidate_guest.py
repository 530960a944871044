"""Guest side of tuning with no board: runs inside the emulated Pi (aarch64 Python at /opt/tvm), under the
counting qemu with the block-profile and cache plugins (compiler/tuning/estimate_runner.py).

Reads a manifest of tuning candidates (each a kernel library MetaSchedule's builder made, and its
arguments' shapes and dtypes), loads them all, then for each candidate i:

    one warm-up call  marker(BASE + 2i)  one call  marker(BASE + 2i + 1)

so the region between the two markers is one call with its data warm, as a board's timer would see it after
its first run. A marker is write(MARKER_FD, buf, id), as in count_guest.py. Arguments are seeded floats
uniform in [-1, 1) (compiler/tuning/measure_inputs.py says why) and zero integers.

Prints one JSON line, prefixed with "RESULT ", on stdout: per candidate, null or the error that stopped it.
"""
import argparse
import json
import sys

from count_guest import ARM, marker

BASE = 16                   # candidate i's markers: BASE + 2i (before its call) and BASE + 2i + 1 (after)


def arguments(tvm, np, args, rng):
    out = []
    for shape, dtype in args:
        if dtype.startswith(("float", "bfloat")):
            data = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        else:
            data = np.zeros(shape, dtype=dtype)
        out.append(tvm.runtime.tensor(data, tvm.cpu()))
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--manifest", required=True, help="JSON: {candidates: [{path, args: [[shape, dtype]]}]}")
    a = p.parse_args(argv)
    import numpy as np
    import tvm

    with open(a.manifest) as f:
        candidates = json.load(f)["candidates"]
    rng = np.random.default_rng(0)
    loaded, errors = [], []
    for candidate in candidates:
        try:
            lib = tvm.runtime.load_module(candidate["path"])
            loaded.append((lib[lib.entry_name], arguments(tvm, np, candidate["args"], rng)))
            errors.append(None)
        except Exception as err:  # a candidate that does not load is reported, the others still run
            loaded.append(None)
            errors.append(f"load: {type(err).__name__}: {' '.join(str(err).split())[:300]}")
    marker(ARM)
    for i, entry in enumerate(loaded):
        if entry is None:
            continue
        function, args = entry
        try:
            function(*args)
            marker(BASE + 2 * i)
            function(*args)
            marker(BASE + 2 * i + 1)
        except Exception as err:
            errors[i] = f"run: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
    print("RESULT " + json.dumps({"errors": errors, "base": BASE}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
