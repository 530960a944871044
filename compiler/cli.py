"""The one command-line face: `python -m compiler <command>` (console script `dcac`); `python compile.py` is
its `compile` command under the name the README leads with.

Every command is one row of COMMANDS: the module that adds its arguments (`add_arguments(parser)`) and runs
it (`run(args) -> exit code`), and the defaults the row sets (`tune` is `compile` with tuning on). One
handler turns errors into exit codes for all of them: a user's mistake (UserError) is 2, a device's
failure (DeviceError) 1, Ctrl-C 130, each as one line; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .errors import DeviceError, UserError

# name -> (module, defaults set on the parsed arguments, one-line help)
COMMANDS = {
    "compile": ("compiler.compile_command", {}, "build a model into a shared library for a target"),
    "tune": ("compiler.compile_command", {"tune": True}, "tune its kernels with MetaSchedule, then build"),
    "explain": ("compiler.compile_command", {"explain": True}, "kernels and bytes per DC-AC block, stock vs dcac"),
    "verify": ("compiler.compile_command", {"verify": True}, "build, run on the device, compare with ONNX Runtime"),
    "bench": ("compiler.bench", {}, "measure TVM beside ONNX Runtime and PyTorch in one run"),
    "farm": ("compiler.farm", {}, "a local tracker with emulated aarch64 servers, kept up across jobs"),
    "emulator": ("compiler.emulator", {}, "set up (once) or check the emulated Raspberry Pi"),
    "device-server": ("compiler.device_server", {}, "the board side of a farm: TVM's RPC server plus device info"),
}

INTERRUPTED = "interrupted: finished work is kept (tuning resumes when you run the same command again)"


def guarded(run, debug: bool = False) -> int:
    """Call `run()` and map what it raises to an exit code with one line on stderr (or a traceback with
    `debug`). Any other exception is a bug and keeps its traceback."""
    try:
        return run() or 0
    except (UserError, DeviceError) as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _configure(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """Give `parser` the arguments, examples and defaults of command `name`."""
    module_name, defaults, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser.description = module.__doc__.split("\n\n")[0]
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in module.EXAMPLES)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.set_defaults(_run=module.run, **defaults)
    return parser


def build_parser(prog: str = "python -m compiler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (_, _, help_text) in COMMANDS.items():
        _configure(commands.add_parser(name, help=help_text), name)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: args._run(args), debug=args.debug)


def run_command(name: str, prog: str, argv=None) -> int:
    """One command under its own name: `python compile.py`, `python -m compiler.bench` and the others."""
    args = _configure(argparse.ArgumentParser(prog=prog), name).parse_args(argv)
    return guarded(lambda: args._run(args), debug=args.debug)
