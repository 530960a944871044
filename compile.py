#!/usr/bin/env python3
"""Compile AttendNeXt (or a baseline, or any ONNX vision model) into a shared library for an ARM board.

    python compile.py --target rpi4                    # AttendNeXt -> dist/attendnext-rpi4/
    python compile.py --model mobilenetv3_large --target host   # a registered model -> dist/mobilenetv3_large-host/
    python compile.py --target rpi4 --verify           # ... and check it on the (emulated) Pi
    python compile.py --list-targets
    python compile.py --list-models                    # registered models: parameters, MACs, paper

The main command of the project: `python -m compiler compile` under its own name (compiler/cli.py has
the other commands; compiler/compile_command.py the arguments).
"""
import sys

from compiler.cli import run_command


def main(argv=None) -> int:
    return run_command("compile", prog="compile.py", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
