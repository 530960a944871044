"""The emulated Raspberry Pi: an arm64 Debian root file system run by qemu-user, with TVM's RPC server.

No ARM board is reachable from CI, so the project builds its own aarch64 device: debootstrap makes an
arm64 Debian, the aarch64 apache-tvm wheels go into a venv inside it, and qemu-user (through binfmt_misc)
runs its Python. It is cached under ~/.cache and reused. It proves correctness and the farm's behaviour;
its timings say nothing about a real board's speed.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from compiler import atomic
from compiler.errors import DeviceError, UserError
from compiler.output import say
from compiler.paths import cache_dir

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DCAC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the device's venv holds: the TVM runtime (same version as the host compiler) and what its RPC
# server needs. Bump ROOTFS_VERSION when this changes so old caches are rebuilt, not trusted.
DEVICE_WHEELS = [
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
    "numpy==2.2.6",
    "ml_dtypes==0.5.4",
    "typing_extensions",
    "psutil",
    "cloudpickle",
]
ROOTFS_VERSION = "bookworm-tvm0.27.0.post1-v1"
# Installed on top of a ready root file system (no rebuild when this list changes): ONNX Runtime is the
# comparison engine of `compiler.bench --target rpi4` on the device itself. numpy stays at the device's pin.
DEVICE_EXTRAS = ["onnxruntime==1.32.0", "numpy==2.2.6"]
DEVICE_PYTHON = "/opt/tvm/bin/python"
HOST_PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")


def log(message: str) -> None:
    say(f"[emulated-pi] {message}")


def rootfs_dir() -> Path:
    return cache_dir() / f"rootfs-arm64-{ROOTFS_VERSION}"


def is_ready() -> bool:
    return (rootfs_dir() / ".complete").exists()


def _run(cmd, **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        for line in tail:
            log(f"  {line}")
        raise DeviceError(f"setting up the emulated Pi failed: `{' '.join(map(str, cmd[:3]))} ...` exited with "
                          f"{result.returncode} ({tail[-1] if tail else 'no output'}); fix what it says and run again")


def ensure_host_tools() -> None:
    """qemu-user-static and debootstrap from Debian; installed with apt when we are root."""
    install_packages([pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None], "the emulated Pi")


def install_packages(missing: list, needed_by: str) -> None:
    """Install the Debian packages `missing` with apt when we are root; otherwise say the command to run.
    --no-install-recommends: qemu-user recommends qemu-user-binfmt, which conflicts with qemu-user-static."""
    if not missing:
        return
    command = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0:
        raise UserError(f"{needed_by} needs {' '.join(missing)}: run `sudo {command}`")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def ensure_binfmt() -> None:
    """Let the kernel hand aarch64 ELF files to qemu: mount binfmt_misc and register qemu-aarch64."""
    if (BINFMT_DIR / "qemu-aarch64").exists():
        return
    if os.geteuid() != 0:
        raise UserError("aarch64 binaries cannot run here: as root, register qemu-aarch64 with binfmt_misc "
                        "(`update-binfmts --enable qemu-aarch64`)")
    if not (BINFMT_DIR / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)])
    line = next(l for l in BINFMT_CONF.read_text().splitlines() if l.startswith(":"))
    (BINFMT_DIR / "register").write_text(line)


def _mounts_under(path: Path):
    prefix = str(path.resolve())
    with open("/proc/mounts") as handle:
        points = [line.split()[1] for line in handle]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def remove_tree(path: Path) -> None:
    """Remove a (partial) root file system; unmount anything under it first so nothing host-side is deleted."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _download_wheels(name: str, requirements) -> Path:
    """aarch64 CPython 3.11 wheels of `requirements` (with their dependencies), cached under `name`."""
    wheels = cache_dir() / name
    if (wheels / ".complete").exists():
        return wheels
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading aarch64 wheels: {' '.join(requirements)}")
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(wheels),
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
          "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
          "--platform", "manylinux2014_aarch64", "--platform", "any", *requirements])
    (wheels / ".complete").touch()
    return wheels


def _pip_install_from(root: Path, wheels: Path, requirements) -> None:
    """Install `requirements` into the device's venv from a folder of wheels, offline."""
    inside = root / "tmp" / wheels.name
    shutil.copytree(wheels, inside, dirs_exist_ok=True)
    try:
        _run(["chroot", str(root), "/opt/tvm/bin/pip", "install", "-q", "--no-index",
              "--find-links", f"/tmp/{wheels.name}", *requirements])
    finally:
        shutil.rmtree(inside, ignore_errors=True)


def ensure_device_extras(root: Path) -> None:
    """Add DEVICE_EXTRAS to a ready device once; the marker names what is installed."""
    marker = root / ".extras"
    wanted = "\n".join(DEVICE_EXTRAS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:12]
    wheels = _download_wheels(f"wheels-aarch64-extras-{digest}", DEVICE_EXTRAS)
    log(f"installing {' '.join(DEVICE_EXTRAS)} into the device (about a minute, once)")
    _pip_install_from(root, wheels, DEVICE_EXTRAS)
    atomic.write_text(marker, wanted)


def ensure_rootfs() -> Path:
    """Build the arm64 Debian with the TVM runtime once (about 4 minutes); later calls reuse it."""
    final = rootfs_dir()
    if is_ready():
        ensure_binfmt()
        ensure_device_extras(final)
        return final
    ensure_host_tools()
    ensure_binfmt()
    wheels = _download_wheels(f"wheels-aarch64-{ROOTFS_VERSION}", DEVICE_WHEELS)
    stage = final.with_name(final.name + ".partial")
    remove_tree(stage)
    try:
        log(f"debootstrap arm64 {DEBIAN_SUITE} into {stage} (about 3 minutes, once)")
        _run(["debootstrap", "--arch=arm64", "--variant=minbase",
              "--include=python3,python3-venv,python3-pip", DEBIAN_SUITE, str(stage), DEBIAN_MIRROR])
        log("installing the aarch64 TVM runtime into the device's venv")
        _run(["chroot", str(stage), "python3", "-m", "venv", "/opt/tvm"])
        _pip_install_from(stage, wheels, DEVICE_WHEELS)
        _run(["chroot", str(stage), DEVICE_PYTHON, "-c", "import tvm, tvm.rpc; print(tvm.__version__)"])
        remove_tree(stage / "proc")  # debootstrap may leave proc mounted; the folder itself is recreated
        (stage / "proc").mkdir(exist_ok=True)
        (stage / ".complete").write_text(ROOTFS_VERSION + "\n")
        os.replace(stage, final)
    except BaseException:
        remove_tree(stage)
        raise
    ensure_device_extras(final)
    log(f"ready: {final}")
    return final


def ensure_mounts(root: Path) -> None:
    """The RPC server forks and uses POSIX semaphores: it needs /proc and /dev inside the chroot."""
    for name, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])):
        point = root / name
        if str(point.resolve()) not in _mounts_under(point):
            point.mkdir(exist_ok=True)
            _run(["mount", *args, str(point)])


def device_command(*args: str) -> list:
    """A command line that runs the device's Python with `args`, inside the emulated Pi."""
    root = ensure_rootfs()
    ensure_mounts(root)
    return ["chroot", str(root), DEVICE_PYTHON, *args]


def start_server(tracker: str, key: str, port: int = 9090, log_path=None) -> subprocess.Popen:
    """Start one emulated aarch64 RPC server that registers with `tracker` ("host:port") under `key`.

    It runs compiler/device/board_server.py (TVM's server plus device info), copied into the device as a
    user would copy it onto a board.
    """
    root = ensure_rootfs()
    server = root / "opt" / "dcac" / "board_server.py"
    server.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(__file__).with_name("board_server.py"), server)
    cmd = device_command("/opt/dcac/board_server.py", "--tracker", tracker, "--key", key,
                         "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 200))
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


EXAMPLES = [
    "python -m compiler emulator setup   # once: arm64 Debian + the aarch64 TVM runtime, cached in ~/.cache",
    "python -m compiler emulator check   # prints: aarch64 <tvm version>",
]


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["setup", "check"], help="setup: build and cache; check: run uname")


def run(args) -> int:
    started = time.time()
    root = ensure_rootfs()
    if args.action == "check":
        out = subprocess.run(device_command("-c", "import platform, tvm; print(platform.machine(), tvm.__version__)"),
                             capture_output=True, text=True, check=True).stdout.strip()
        print(out)
    else:
        print(f"emulated Pi ready at {root} ({time.time() - started:.0f} s)")
    return 0

