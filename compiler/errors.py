"""User-facing errors: one line, a fix, exit code 2 -- never a traceback for a user mistake."""


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message on one line and exits with code 2."""

    exit_code = 2


class DeviceError(Exception):
    """A device or farm problem (unreachable tracker, crashed server); exit code 1, not the user's fault."""

    exit_code = 1
