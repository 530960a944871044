"""A local tuning farm: TVM's own RPC tracker plus emulated aarch64 servers, started and stopped here.

Real farms are a tracker that real boards register with (`--tracker host:port`); with no tracker the
compiler starts this one. `python -m compiler.farm up|status|down` keeps one running across jobs.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from compiler import atomic
from compiler.device import emulator
from compiler.errors import DeviceError, UserError
from compiler.paths import cache_dir

STATE_FILE = "farm.json"


def parse_tracker(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--tracker '{text}' is not HOST:PORT: write e.g. --tracker 127.0.0.1:9190")
    return host, int(port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracker_summary(host: str, port: int) -> dict:
    """The tracker's queue: {"queue_info": {key: {"free": n, "pending": n}}, "server_info": [...]}."""
    from tvm import rpc

    try:
        socket.create_connection((host, port), timeout=10).close()  # TVM itself retries a refused port for 60 s
        return rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError) as err:
        raise DeviceError(f"tracker {host}:{port} does not answer ({err}): start it or check --tracker") from None


def check_key(host: str, port: int, key: str) -> None:
    """A DeviceError unless the tracker answers and has a server registered under `key`: the tracker
    queues a request for a key no server has until one registers, so the request would wait for ever."""
    summary = tracker_summary(host, port)
    if servers_for_key(summary, key) == 0:
        keys = sorted({str(i.get("key", "")).split(":")[-1] for i in summary.get("server_info", [])} - {""})
        has = f"its servers' keys: {', '.join(keys)}" if keys else "no server is registered"
        raise DeviceError(f"tracker {host}:{port} has no '{key}' server ({has}): start compiler/device/board_server.py "
                          f"on the board with --key {key}, or check --tracker and --target")


def request_session(host: str, port: int, key: str, timeout: float):
    """An RPC session to a `key` device from the tracker, or a one-line DeviceError."""
    from tvm import rpc

    check_key(host, port, key)
    try:
        return rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=timeout)
    except (OSError, RuntimeError) as err:
        raise DeviceError(f"no '{key}' device from tracker {host}:{port}: {err}") from None


def session_if_served(rpc_config):
    """The tuning runner's `f_create_session`: a candidate fails at once when the tracker has no server left
    under its key, instead of waiting out its timeout in the tracker's queue (the tuner then stops, saying so)."""
    summary = tracker_summary(rpc_config.tracker_host, rpc_config.tracker_port)
    if servers_for_key(summary, rpc_config.tracker_key) == 0:
        raise DeviceError(f"no '{rpc_config.tracker_key}' server is registered with the tracker")
    return rpc_config.connect_server()


def free_servers(summary: dict, key: str) -> int:
    return int(summary.get("queue_info", {}).get(key, {}).get("free", 0))


def servers_for_key(summary: dict, key: str) -> int:
    """Servers registered under `key` (free or busy), from the tracker's server list."""
    return sum(1 for info in summary.get("server_info", []) if str(info.get("key", "")).split(":")[-1] == key)


def format_summary(summary: dict) -> str:
    """A readable table of the tracker's queue: keys, free/busy/pending servers."""
    keys = sorted(set(summary.get("queue_info", {})) |
                  {str(i.get("key", "")).split(":")[-1] for i in summary.get("server_info", [])})
    rows = [("key", "servers", "free", "busy", "pending")]
    for key in keys:
        queue = summary.get("queue_info", {}).get(key, {})
        total = servers_for_key(summary, key)
        free = int(queue.get("free", 0))
        rows.append((key, str(total), str(free), str(max(total - free, 0)), str(queue.get("pending", 0))))
    if len(rows) == 1:
        return "no servers registered"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows)


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until the tracker listens, so clients don't hit TVM's 5-second connect retry."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise DeviceError(f"the tracker did not start listening on {host}:{port} within {timeout:.0f} s")


def wait_for_servers(host: str, port: int, key: str, count: int, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    seen = 0
    while time.time() < deadline:
        try:
            seen = free_servers(tracker_summary(host, port), key)
        except DeviceError:
            seen = 0
        if seen >= count:
            return
        time.sleep(1.0)
    raise DeviceError(f"only {seen} of {count} '{key}' servers registered with {host}:{port} within {timeout:.0f} s")


@dataclass
class LocalFarm:
    """A tracker and `servers` emulated aarch64 RPC servers on loopback; a context manager."""

    key: str
    servers: int = 2
    port: int = 0
    log_dir: Optional[str] = None
    processes: List[subprocess.Popen] = field(default_factory=list)

    @property
    def tracker(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LocalFarm":
        self.port = self.port or free_port()
        log_dir = self.log_dir or str(cache_dir() / "farm-logs")
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, "tracker.log"), "ab") as out:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                 "--port-end", str(self.port + 1)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for_port("127.0.0.1", self.port)
        for index in range(self.servers):
            self.add_server(os.path.join(log_dir, f"server-{self.key}-{index}.log"))
        wait_for_servers("127.0.0.1", self.port, self.key, self.servers)
        return self

    def add_server(self, log_path: str) -> subprocess.Popen:
        process = emulator.start_server(self.tracker, self.key, port=free_port(), log_path=log_path)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            kill_group(process.pid)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def kill_group(pid: int) -> None:
    """Stop a server and the per-session children it forked (they share its process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _state_path():
    """Where `up` records what it started ($DCAC_FARM_STATE, default ~/.cache/dcac-compiler/farm.json)."""
    return Path(os.environ.get("DCAC_FARM_STATE") or cache_dir() / STATE_FILE)


EXAMPLES = [
    "python -m compiler farm up --key rpi4 --servers 2   # a tracker on 127.0.0.1:9190 with two emulated Pis",
    "python -m compiler farm status",
    "python compile.py --target rpi4 --tune --tracker 127.0.0.1:9190",
    "python -m compiler farm down",
]


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="farm_command", required=True)
    up = sub.add_parser("up", help="start a tracker and emulated servers (stays up until `down`)")
    up.add_argument("--key", default="rpi4", help="RPC key the servers register under (a preset's rpc_key)")
    up.add_argument("--servers", type=int, default=2)
    up.add_argument("--port", type=int, default=9190)
    sub.add_parser("status", help="print the tracker's queue")
    sub.add_parser("down", help="stop what `up` started")


def run(args) -> int:
    """up, status or down, with the farm's state in a file so that separate jobs share one farm."""
    state = json.loads(_state_path().read_text()) if _state_path().exists() else None
    if args.farm_command == "up":
        if state:
            raise UserError(f"a farm is already up at {state['tracker']}: `python -m compiler.farm down` first")
        farm = LocalFarm(key=args.key, servers=args.servers, port=args.port)
        try:
            farm.start()
        except BaseException:
            farm.stop()
            raise
        atomic.write_json(_state_path(), {"tracker": farm.tracker, "pids": [p.pid for p in farm.processes]})
        print(f"tracker at {farm.tracker}; {args.servers} emulated '{args.key}' servers "
              f"(use --tracker {farm.tracker})")
    elif args.farm_command == "status":
        if not state:
            raise UserError("no farm is up: start one with `python -m compiler.farm up`")
        host, port = parse_tracker(state["tracker"])
        print(f"tracker {state['tracker']}")
        print(format_summary(tracker_summary(host, port)))
    else:
        if not state:
            print("no farm is up")
            return 0
        for pid in state["pids"]:
            kill_group(pid)
        _state_path().unlink()
        print(f"stopped the farm at {state['tracker']}")
    return 0

