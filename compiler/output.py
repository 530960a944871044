"""The one channel for progress and warnings: stderr, at the verbosity `-q` / `-v` chose.

Results (tables, verify lines) go to stdout; everything a run says about itself goes through `say`,
`warn` or `detail` here, so that `-q` silences progress and keeps warnings, and `-v` adds details.
"""
import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def say(message: str) -> None:
    """Progress: shown unless -q."""
    if _level >= NORMAL:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning or a note the user must see: shown even with -q."""
    print(message, file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """What only -v shows."""
    if _level >= VERBOSE:
        print(message, file=sys.stderr, flush=True)
