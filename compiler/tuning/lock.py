"""One writer per tuning database: an OS file lock on `<database>/.lock`, held by whatever writes there.

A tuning run (with its seeding, checkpoints, report and provenance) holds it from before it reads the
database until its last write. It is `fcntl.flock`, so a process that dies, even by kill -9, releases it
with its open files: no stale lock is ever left to clean up. The file's content (pid, host, since, command)
only names the holder in the message a second writer gets; the lock itself is the kernel's.
"""
import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from compiler.errors import UserError
from compiler.output import warn

LOCK_FILE = ".lock"


def holder(folder: Path) -> dict:
    """Who holds (or last held) the lock of `folder`, as it wrote itself into the lock file."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict) -> str:
    if not info:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"(`{info.get('command', '?')}`)")


@contextlib.contextmanager
def unless_held(folder: Path):
    """For a reader: hold the lock for the block if nobody does (yields True: the files may be repaired and
    read in place), else yield False at once (a writer is appending, or the folder is not ours to write: read
    a snapshot, touch nothing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")
    except OSError:  # a folder this user cannot write: nobody writes it through us; read, touch nothing
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _refusal(folder: Path) -> UserError:
    return UserError(f"the tuning database {folder} is being written by {describe_holder(holder(folder))}: wait for "
                     "it to finish, or pass --wait-for-database to start when it does (and resume from its records)")


def refuse_if_held(folder: Path) -> None:
    """Fail at once, before any slow work, if another process writes `folder` (the writer's own lock is taken
    later, by `exclusive`). A folder with no lock file has no writer, and is left uncreated."""
    if not (Path(folder) / LOCK_FILE).exists():
        return
    with unless_held(folder) as free:
        if not free:
            raise _refusal(Path(folder))


@contextlib.contextmanager
def exclusive(folder: Path, wait: bool = False, command: str = None):
    """Hold the database's write lock for the block. Held by another process: a UserError (exit 2) naming the
    database and the holder, or with `wait`, a message and a wait until it is released."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise _refusal(folder) from None
            warn(f"waiting for {describe_holder(holder(folder))} to finish writing the tuning database {folder} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
            warn(f"the tuning database {folder} is free: resuming from what is in it")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
