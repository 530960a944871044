"""An ARM measurement with no board: aarch64 instructions (and simulated cache misses) per inference of a
library and of ONNX Runtime, counted inside the emulated Pi. A proxy to rank code by, never a latency.

QEMU counts retired guest instructions and can replay memory accesses through a set-associative LRU cache
model; nothing here models pipelines, NEON issue width, latencies, prefetchers, memory bandwidth or
contention between threads (docs/arm-without-a-board.md says how far the count tracks time).

How it runs (as root; the rootfs is the project's emulated Pi, compiler/device/emulator.py):
  * Debian's dynamic `qemu-aarch64` (package qemu-user, 7.2) loads TCG plugins; qemu-user-static cannot.
  * The plugins are built once from Debian's own qemu source (`apt-get source qemu`, the installed
    qemu-user's version) into the cache: tests/plugin/insn.c and contrib/plugins/cache.c as they are, and the
    project's marker-aware variants (qemu_plugins/: a counter that prints its running count when the guest
    writes to a marker file descriptor, and the same marker code patched into cache.c).
  * qemu-aarch64 (an x86-64 program), its libraries and the x86-64 loader are copied into the rootfs under
    /opt/qemu-count/, where the chroot runs the loader natively:
      chroot R /opt/qemu-count/ld-linux-x86-64.so.2 --library-path /opt/qemu-count/lib \
          /opt/qemu-count/qemu-aarch64 -plugin ... -d plugin -D <log> /opt/tvm/bin/python3 count_guest.py ...
  * Per inference: the guest (count_guest.py) loads the model, warms up, and runs n inferences between two
    marker system calls; the plugins print their counters at each marker, so start-up is left out. One
    thread (TVM_NUM_THREADS=1, ONNX Runtime intra_op 1), as the proxy counts work, not parallelism.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from compiler import paths
from compiler.artifact.runtime import sha256_file
from compiler.device import cores, emulator
from compiler.errors import DeviceError
from compiler.output import say

HERE = Path(__file__).resolve().parent
PLUGIN_SOURCES = HERE / "qemu_plugins"
GUEST_SCRIPT = HERE / "count_guest.py"
CANDIDATE_SCRIPT = HERE / "candidate_guest.py"    # tuning with no board (imports count_guest's marker)
GUEST_SCRIPTS = (GUEST_SCRIPT, CANDIDATE_SCRIPT)
GUEST_DIR = "/opt/qemu-count"                 # inside the rootfs
GUEST_PYTHON = "/opt/tvm/bin/python3"
GUEST_WORK = "/tmp/qemu-count"                # models and logs, inside the rootfs
QEMU_BINARY = "/usr/bin/qemu-aarch64"
X86_LOADER = "/lib64/ld-linux-x86-64.so.2"
HOST_PACKAGES = ["qemu-user", "libglib2.0-dev", "pkg-config", "gcc", "dpkg-dev"]

# Simulated caches by the preset's mcpu: the emulated ARM cores of compiler/device/cores.py.
CACHES = {name: core.caches for name, core in cores.CORES.items() if core.arch == "aarch64"}
MARK_START, MARK_STOP, MARK_ARM = 1, 2, 5      # as in count_guest.py
WRITE_SYSCALL = {"aarch64": 64, "x86_64": 1}   # the marker's write(2) number, by guest architecture
FIELDS = ["insns", "dacc", "dmiss", "iacc", "imiss", "l2acc", "l2miss"]


def log(message: str) -> None:
    say(f"[count] {message}")


def _run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(f"`{' '.join(map(str, cmd[:3]))} ...` exited with {result.returncode} ({tail[0]}): fix "
                          "what it says and run again")
    return result.stdout


def _sha(path) -> str:
    return sha256_file(path)


def _dpkg_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}|${Version}", pkg], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("install ok installed"):
        return None
    return r.stdout.split("|", 1)[1]


def ensure_host_packages():
    emulator.install_packages([p for p in HOST_PACKAGES if _dpkg_version(p) is None], "counting instructions")


def _ensure_deb_src():
    """A deb-src entry for every `deb` entry of the apt sources (deb822 .sources or one-line .list)."""
    sources = Path("/etc/apt/sources.list.d")
    text = "".join(p.read_text() for p in sources.glob("*.sources")) if sources.is_dir() else ""
    legacy = Path("/etc/apt/sources.list")
    lines = [l for p in [legacy, *sources.glob("*.list")] if p.is_file() for l in p.read_text().splitlines()]
    if re.search(r"^Types:.*\bdeb-src\b", text, re.M) or any(l.startswith("deb-src ") for l in lines):
        return False
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Types:.*\bdeb\b", stanza, re.M) and "debian" in stanza:
            out.append(re.sub(r"^Types:.*$", "Types: deb-src", stanza.strip(), flags=re.M))
    src_lines = ["deb-src " + l[4:] for l in lines if l.startswith("deb ") and "debian" in l]
    if out:
        (sources / "dcac-deb-src.sources").write_text("\n\n".join(out) + "\n")
    elif src_lines:
        (sources / "dcac-deb-src.list").write_text("\n".join(src_lines) + "\n")
    else:
        raise DeviceError("no Debian `deb` entry in the apt sources to mirror as deb-src: add a deb-src line for "
                          "your Debian mirror and run again")
    log("added deb-src entries for the Debian mirror; apt-get update")
    _run(["apt-get", "update", "-qq"])
    return True


def ensure_qemu_source(version: str) -> Path:
    """Debian's qemu source of the installed qemu-user's version, unpacked once in the cache."""
    src_version = re.sub(r"\+b\d+$", "", version)        # a binNMU (+bN) is built from the same source
    upstream = src_version.split(":", 1)[-1].rsplit("-", 1)[0]   # 7.2+dfsg
    base = paths.cache_dir() / f"qemu-src-{src_version.replace(':', '_')}"
    tree = base / f"qemu-{upstream}"
    if (base / ".complete").exists() and tree.is_dir():
        return tree
    _ensure_deb_src()
    base.mkdir(parents=True, exist_ok=True)
    log(f"apt-get source qemu={src_version} into {base}")
    try:
        _run(["apt-get", "source", "-qq", f"qemu={src_version}"], cwd=base)
    except DeviceError:
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "source", "-qq", f"qemu={src_version}"], cwd=base)
    if not (tree / "include" / "qemu" / "qemu-plugin.h").is_file():
        raise DeviceError(f"{tree}/include/qemu/qemu-plugin.h is missing after apt-get source: remove {base} and "
                          "run again")
    (base / ".complete").write_text(src_version + "\n")
    return tree


def build_plugins(src: Path, version: str) -> Path:
    """Compile the five plugins against this qemu version's qemu-plugin.h; cached by version and sources."""
    out = paths.cache_dir() / f"qemu-plugins-{version.replace(':', '_')}"
    own = [PLUGIN_SOURCES / name for name in ("dcac_options.h", "dcac_insn.c", "dcac_blocks.c", "dcac_cache_patch.c")]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in own)).hexdigest()[:16]
    stamp = out / ".complete"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return out
    out.mkdir(parents=True, exist_ok=True)
    cache_c = (src / "contrib" / "plugins" / "cache.c").read_text()
    # Three edits of cache.c: the marker code before qemu_plugin_install, an "arm" option, and the
    # callbacks registered through dcac_register_all (which holds back instrumentation until armed).
    edits = [
        ("QEMU_PLUGIN_EXPORT\nint qemu_plugin_install(",
         (PLUGIN_SOURCES / "dcac_cache_patch.c").read_text() + "QEMU_PLUGIN_EXPORT\nint qemu_plugin_install("),
        ('        } else if (g_strcmp0(tokens[0], "evict") == 0) {\n',
         '        } else if (g_strcmp0(tokens[0], "arm") == 0) {\n'
         '            dcac_arm_id = STRTOLL(tokens[1]);\n'
         '        } else if (g_strcmp0(tokens[0], "write_nr") == 0) {\n'
         '            dcac_write_nr = STRTOLL(tokens[1]);\n'
         '        } else if (g_strcmp0(tokens[0], "evict") == 0) {\n'),
        ("    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);\n"
         "    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);\n",
         "    dcac_plugin_id = id;\n    dcac_armed = dcac_arm_id < 0;\n    dcac_register_all(id);\n"),
    ]
    patched = cache_c
    for old, new in edits:
        if patched.count(old) != 1:
            raise DeviceError("cache.c of this qemu version does not look like 7.2's: the marker patch in "
                              "compiler/device/qemu_plugins/ needs updating for it")
        patched = patched.replace(old, new)
    (out / "dcac_cache.c").write_text(patched)
    for own_plugin in ["dcac_options.h", "dcac_insn.c", "dcac_blocks.c"]:
        shutil.copy2(PLUGIN_SOURCES / own_plugin, out / own_plugin)
    glib = _run(["pkg-config", "--cflags", "--libs", "glib-2.0"]).split()
    for name, source in [("libinsn.so", src / "tests" / "plugin" / "insn.c"),
                         ("libcache.so", src / "contrib" / "plugins" / "cache.c"),
                         ("libdcac_insn.so", out / "dcac_insn.c"),
                         ("libdcac_blocks.so", out / "dcac_blocks.c"),
                         ("libdcac_cache.so", out / "dcac_cache.c")]:
        # built beside, then renamed over: a qemu still running the old plugin keeps its mapping
        staged = out / f".{name}.{os.getpid()}.tmp"
        _run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{src / 'include' / 'qemu'}", f"-I{out}", str(source),
              "-o", str(staged), *glib])
        os.replace(staged, out / name)
    stamp.write_text(digest + "\n")
    log(f"built plugins into {out}")
    return out


def _ldd(binary):
    libs = []
    for line in _run(["ldd", binary]).splitlines():
        m = re.search(r"=>\s+(/\S+)", line)
        if m:
            libs.append(m.group(1))
    return libs


def ensure_host_counter() -> dict:
    """qemu-x86_64 and the plugins on this (x86-64) machine, for checking the cycle estimate against measured
    time: the guest is this machine's own Python running count_guest.py, no chroot."""
    ensure_host_packages()
    version = _dpkg_version("qemu-user")
    plugins = build_plugins(ensure_qemu_source(version), version)
    logs = paths.cache_dir() / "qemu-count-logs"
    logs.mkdir(parents=True, exist_ok=True)
    return {"rootfs": None, "qemu_version": version, "qemu": "/usr/bin/qemu-x86_64", "python": sys.executable,
            "guest_dir": str(HERE), "logs": logs, "guest_logs": str(logs),
            "write_nr": WRITE_SYSCALL["x86_64"],
            "plugins": {p.stem[3:]: str(p) for p in sorted(plugins.glob("lib*.so"))}}


def ensure_counter(arch: str = "aarch64") -> dict:
    """The counting qemu for `arch`: for aarch64, the emulated Pi with it inside (below); for x86_64, this
    machine (ensure_host_counter)."""
    if arch == "x86_64":
        return ensure_host_counter()
    return ensure_pi_counter()


def ensure_pi_counter() -> dict:
    """The emulated Pi with the counting qemu in it: plugins built from Debian's qemu source (once), and
    qemu-aarch64 + its libraries + the x86-64 loader + plugins + the guest script copied into the rootfs
    (again only when one of them changed). Returns the guest paths."""
    rootfs = emulator.ensure_rootfs()
    ensure_host_packages()
    version = _dpkg_version("qemu-user")
    plugins = build_plugins(ensure_qemu_source(version), version)
    dest = rootfs / GUEST_DIR.lstrip("/")
    files = {QEMU_BINARY: dest / "qemu-aarch64", X86_LOADER: dest / "ld-linux-x86-64.so.2"}
    for lib in _ldd(QEMU_BINARY):
        files[lib] = dest / "lib" / os.path.basename(lib)
    for so in sorted(plugins.glob("lib*.so")):
        files[str(so)] = dest / "plugins" / so.name
    for script in GUEST_SCRIPTS:
        files[str(script)] = dest / script.name
    wanted = "\n".join(f"{_sha(s)} {d.relative_to(rootfs)}" for s, d in sorted(files.items())) + "\n"
    stamp = dest / ".stamp"
    if not (stamp.exists() and stamp.read_text() == wanted):
        for source, copy in files.items():
            if copy.is_file() and _sha(copy) == _sha(source):
                continue
            copy.parent.mkdir(parents=True, exist_ok=True)
            # renamed over the old file: a run still mapping the old binary or plugin keeps it (writing in
            # place would crash that run with SIGBUS, or fail with ETXTBSY)
            staged = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
            shutil.copy2(os.path.realpath(source), staged)
            os.replace(staged, copy)
        stamp.write_text(wanted)
        log(f"counting qemu {version} with its plugins installed in the emulated Pi ({dest})")
    emulator.ensure_mounts(rootfs)
    return {"rootfs": rootfs, "qemu_version": version, "loader": f"{GUEST_DIR}/ld-linux-x86-64.so.2",
            "libdir": f"{GUEST_DIR}/lib", "qemu": f"{GUEST_DIR}/qemu-aarch64", "python": GUEST_PYTHON,
            "guest_dir": GUEST_DIR, "logs": rootfs / GUEST_WORK.lstrip("/") / "logs",
            "guest_logs": f"{GUEST_WORK}/logs", "write_nr": WRITE_SYSCALL["aarch64"],
            "plugins": {p.stem[3:]: f"{GUEST_DIR}/plugins/{p.name}" for p in sorted(plugins.glob("lib*.so"))}}


def stage_model(rootfs, path) -> str:
    """Copy a model into the rootfs (/tmp/qemu-count/models/<sha>/...); returns its path in the guest.
    A .so brings its .json sidecar and runtime.py when they are beside it; an .onnx its external data.
    With no rootfs (the host's own qemu) the model is used where it is."""
    path = Path(path).resolve()
    if rootfs is None:
        return str(path)
    extras = [path.with_suffix(".json"), path.parent / "runtime.py"] if path.suffix == ".so" else \
        [Path(str(path) + ".data"), path.parent / (path.stem + ".onnx.data")]
    staged = [f for f in [path, *extras] if f.is_file()]
    digest = hashlib.sha256("".join(f"{f.name}:{_sha(f)};" for f in staged).encode()).hexdigest()[:16]
    guest_dir = f"{GUEST_WORK}/models/{digest}"
    host_dir = rootfs / guest_dir.lstrip("/")
    host_dir.mkdir(parents=True, exist_ok=True)
    for f in staged:
        if not (host_dir / f.name).exists():
            partial = host_dir / f".{f.name}.tmp"
            shutil.copy2(f, partial)
            os.replace(partial, host_dir / f.name)
    return f"{guest_dir}/{path.name}"


def _parse_log(text: str) -> dict:
    """The marker lines the counting plugins print: [{id, insns | dacc, dmiss, iacc, imiss, l2acc, l2miss}]
    (the block profile's bare `marker <id>` lines, in a run with both, are not counters)."""
    markers = []
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("marker ") and len(parts) > 2:
            markers.append({"id": int(parts[1]), **{k: int(v) for k, v in zip(parts[2::2], parts[3::2])}})
    return {"markers": markers}


def _plugin_options(counter: dict, plugin: str, mcpu: str) -> list:
    """The -plugin argument's parts: 'insn' (instructions), 'cache' (the core's simulated L1/L2) or 'blocks'
    (the block profile), each armed at the guest's ARM marker."""
    common = [f"arm={MARK_ARM}", f"write_nr={counter['write_nr']}"]
    if plugin == "insn":
        return [counter["plugins"]["dcac_insn"], *common]
    if plugin == "blocks":
        return [counter["plugins"]["dcac_blocks"], *common]
    return [counter["plugins"]["dcac_cache"], *(f"{k}={v}" for k, v in cores.lookup(mcpu).caches.items()), *common]


def run_guest(counter: dict, guest_args: list, plugin, mcpu: str, timeout=None, script: Path = GUEST_SCRIPT) -> dict:
    """Run a guest script (count_guest.py unless told) under the instrumented qemu (inside the Pi's chroot for
    aarch64, directly for x86-64) with one plugin or several at once (a tuple: their marker lines share the log);
    the log, its counter markers and the guest's RESULT line. Instrumentation starts at the guest's ARM
    marker (model loaded), so start-up runs at plain qemu speed and the simulated caches start cold there."""
    plugins = (plugin,) if isinstance(plugin, str) else tuple(plugin)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.log"
    counter["logs"].mkdir(parents=True, exist_ok=True)
    guest_env = {"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    # qemu's default cpu ("max") offers SVE, SME and more: ONNX Runtime would pick kernels the board lacks.
    # On x86-64 "max" is what qemu 7.2 emulates best (AVX2, no AVX-512).
    qemu = [counter["qemu"], *(arg for p in plugins for arg in ("-plugin", ",".join(_plugin_options(counter, p, mcpu)))),
            "-d", "plugin", "-D", f"{counter['guest_logs']}/{name}",
            "-cpu", cores.lookup(mcpu).qemu_cpu, *(arg for k, v in guest_env.items() for arg in ("-E", f"{k}={v}")),
            counter["python"], f"{counter['guest_dir']}/{script.name}", *map(str, guest_args)]
    if counter["rootfs"] is not None:
        cmd = ["chroot", str(counter["rootfs"]), counter["loader"], "--library-path", counter["libdir"], *qemu]
    else:
        cmd = qemu
    host_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                "LANG": "C.UTF-8"}
    started = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, env=host_env, timeout=timeout)
    log_path = counter["logs"] / name
    text = log_path.read_text() if log_path.exists() else ""
    log_path.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(f"counting under qemu ({mcpu}) failed after {time.time() - started:.0f} s ({tail[0]})")
    parsed = {**_parse_log(text), "log": text}
    parsed["guest"] = next((json.loads(line[7:]) for line in result.stdout.splitlines()
                            if line.startswith("RESULT ")), None)
    parsed["seconds"] = round(time.time() - started, 1)
    return parsed


def _diff(a: dict, b: dict, n: int) -> dict:
    """(b - a) / n for the counters both have; with the cache plugin, instructions are its I-cache accesses."""
    per = {k: (b[k] - a[k]) / n for k in FIELDS if k in a and k in b}
    if "iacc" in per:
        per["insns"] = per["iacc"]
    return per


def count(engine: str, model, mcpu: str, plugin: str = "insn", per_kernel: bool = False, n: int = 2,
          warmup: int = 1, timeout=None) -> dict:
    """Per-inference counts of one engine ('tvm': a library with its sidecar; 'ort': an .onnx file) on the
    emulated CPU `mcpu` (cortex-a72, cortex-a76), one thread. plugin 'insn': instructions; 'cache':
    instructions and the simulated L1/L2 of that CPU. per_kernel (TVM): also every Relax VM call's counts,
    from one more inference."""
    counter = ensure_counter(cores.lookup(mcpu).arch)
    guest_args = ["--engine", engine, "--model", stage_model(counter["rootfs"], model), "--warmup", warmup,
                  "--n", n, *(["--per-kernel"] if per_kernel else [])]
    run = run_guest(counter, guest_args, plugin, mcpu, timeout)
    marks = {m["id"]: m for m in run["markers"]}
    if MARK_START not in marks or MARK_STOP not in marks:
        raise DeviceError("the counting plugin saw no markers from the guest: rebuild it (remove "
                          f"{paths.cache_dir()}/qemu-plugins-*) and run again")
    out = {"per_inference": _diff(marks[MARK_START], marks[MARK_STOP], n), "seconds": run["seconds"],
           "engine": engine, "plugin": plugin, "mcpu": mcpu, "n": n, "warmup": warmup, "guest": run["guest"],
           "qemu_version": counter["qemu_version"]}
    if per_kernel:
        out["kernels"] = per_kernel_table(run)
    return out


def per_kernel_table(run: dict) -> list:
    """Counts per VM call from the per-kernel markers: [{name, calls, insns, ...}], most first. Each region
    spans the call plus the VM instrument's Python round trip (about 11,000 instructions a call)."""
    guest = run["guest"]
    names, base = guest["kernels"], guest["kernel_base"]
    marks = [m for m in run["markers"] if m["id"] >= base]
    table = {}
    for a, b in zip(marks, marks[1:]):
        if (a["id"] - base) % 2 == 0 and b["id"] == a["id"] + 1:
            name = names[(a["id"] - base) // 2]
            row = table.setdefault(name, {"name": name, "calls": 0})
            row["calls"] += 1
            for key in FIELDS:
                if key in a and key in b:
                    row[key] = row.get(key, 0) + b[key] - a[key]
    for row in table.values():
        if "iacc" in row:
            row["insns"] = row["iacc"]
    return sorted(table.values(), key=lambda row: -row.get("insns", 0))
