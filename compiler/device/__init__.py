"""Reaching a device (the host, boards behind a tracker, the emulated Pi), the board-side server, and verification."""
