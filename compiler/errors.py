"""User-facing errors: one line, a fix, exit code 2 -- never a traceback for a user mistake.

`guarded` is the one place that maps them to exit codes, for the command line and the bench scripts alike.
"""
import sys
import traceback


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message on one line and exits with code 2."""

    exit_code = 2


class DeviceError(Exception):
    """A device or farm problem (unreachable tracker, crashed server); exit code 1, not the user's fault."""

    exit_code = 1


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
