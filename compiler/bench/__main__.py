"""`python -m compiler.bench`: the `bench` command under the name it has always had (compiler/cli.py)."""
import sys

from compiler.cli import run_command

sys.exit(run_command("bench", prog="python -m compiler.bench"))
