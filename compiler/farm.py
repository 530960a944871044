"""`python -m compiler.farm`: the `farm` command under the name it has always had (compiler/cli.py).

The farm itself is compiler/device/farm.py; this module only keeps the older command path working.
"""
import sys

from compiler.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("farm", prog="python -m compiler.farm"))
