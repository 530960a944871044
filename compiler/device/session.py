"""The one way to reach a device and to say what it is: the host itself, a board behind a tracker, or the
project's emulated farm (compiler/device/farm.py), started for the occasion and stopped after.

`open_device` yields a `Device`: where its RPC sessions come from (None for the host itself), how many
servers measure for it, and whether it is emulated. `open_session` is the one-session shortcut verify and
bench use; `describe_device(session)` is the one description provenance, bench and verify record (the host
describes itself here; a board through compiler/device/board_server.py's `dcac.device_info`, which shares its
/proc/cpuinfo parsing with this module).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Optional

from compiler.device.board_server import describe_machine
from compiler.device.farm import LocalFarm, check_key, parse_tracker, request_session, servers_for_key, tracker_summary
from compiler.errors import DeviceError

VECTOR_FEATURES = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
SESSION_TIMEOUT = 600.0  # one verification or benchmark session on a slow board


def host_description() -> dict:
    """This machine: uname, CPU model, LLVM cpu, the vector features its code may use."""
    import tvm

    machine = describe_machine()
    flags = set(machine.pop("flags", "").split())
    machine.pop("tvm", None)
    return {**machine, "llvm_cpu": str(tvm.target.codegen.llvm_get_system_cpu()),
            "cpu_features": sorted(flags & VECTOR_FEATURES), "emulated": False}


def describe_device(session) -> dict:
    """What the measuring device says about itself: the host (session None), or a board over RPC (a plain
    `tvm.exec.rpc_server` has no dcac.device_info: then the device is unknown)."""
    if session is None:
        return host_description()
    try:
        return json.loads(session.get_function("dcac.device_info")())
    except Exception:
        return {"cpu_model": "unknown (plain TVM rpc_server)", "emulated": None}


@dataclass
class Device:
    """A device to measure on. `tracker` is None for the host itself (measured in this process)."""

    key: str
    tracker: Optional[str]
    emulated: bool

    @property
    def address(self):
        return parse_tracker(self.tracker)

    def servers(self) -> int:
        """Servers registered for this device's key (busy or free); 1 for the host."""
        return 1 if self.tracker is None else servers_for_key(tracker_summary(*self.address), self.key)

    def session(self, timeout: float = SESSION_TIMEOUT):
        """An RPC session to one of the device's servers, or None for the host itself."""
        return None if self.tracker is None else request_session(*self.address, self.key, timeout)


@contextlib.contextmanager
def open_device(preset, tracker: Optional[str] = None, servers: int = 1):
    """The host (host preset, no tracker), the boards behind `tracker`, or `servers` emulated boards of
    `preset.rpc_key` started here for the time of the `with` block."""
    if tracker is not None:
        check_key(*parse_tracker(tracker), preset.rpc_key)
        yield Device(preset.rpc_key, tracker, emulated=False)
    elif preset.is_host:
        yield Device(preset.rpc_key, None, emulated=False)
    else:
        if servers < 1:
            raise DeviceError(f"an emulated farm for '{preset.rpc_key}' needs at least one server")
        with LocalFarm(key=preset.rpc_key, servers=servers) as farm:
            yield Device(preset.rpc_key, farm.tracker, emulated=True)


@contextlib.contextmanager
def open_session(preset, tracker: Optional[str] = None, servers: int = 1, timeout: float = SESSION_TIMEOUT):
    """One session to the preset's device (None for the host itself): see open_device."""
    with open_device(preset, tracker, servers) as device:
        yield device.session(timeout)
