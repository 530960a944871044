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

from compiler.errors import guarded
from compiler.output import NORMAL, QUIET, VERBOSE, set_verbosity

# name -> (module, defaults set on the parsed arguments, one-line help)
COMMANDS = {
    "compile": ("compiler.compile_command", {}, "build a model into a shared library for a target"),
    "tune": ("compiler.compile_command", {"tune": True}, "tune its kernels with MetaSchedule, then build"),
    "explain": ("compiler.compile_command", {"explain": True}, "kernels and bytes per DC-AC block, stock vs dcac"),
    "verify": ("compiler.compile_command", {"verify": True}, "build, run on the device, compare with ONNX Runtime"),
    "bench": ("compiler.bench.command", {}, "measure TVM beside ONNX Runtime and PyTorch in one run"),
    "farm": ("compiler.device.farm", {}, "a local tracker with emulated aarch64 servers, kept up across jobs"),
    "emulator": ("compiler.device.emulator", {}, "set up (once) or check the emulated Raspberry Pi"),
    "device-server": ("compiler.device.board_server", {}, "the board side of a farm: TVM's RPC server plus device info"),
}

def _configure(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """Give `parser` the arguments, examples and defaults of command `name`."""
    module_name, defaults, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser.description = module.__doc__.split("\n\n")[0]
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in module.EXAMPLES)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET,
                          help="only results, warnings and errors")
    loudness.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE,
                          help="also details")
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
    set_verbosity(args.verbosity if args.verbosity is not None else NORMAL)
    return guarded(lambda: args._run(args), debug=args.debug)


def run_command(name: str, prog: str, argv=None) -> int:
    """One command under its own name: `python compile.py`, `python -m compiler.bench` and the others."""
    args = _configure(argparse.ArgumentParser(prog=prog), name).parse_args(argv)
    set_verbosity(args.verbosity if args.verbosity is not None else NORMAL)
    return guarded(lambda: args._run(args), debug=args.debug)
