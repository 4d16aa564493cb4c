"""Child processes that never outlive their parent (the demo's process tree)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> None:
    """Ask Linux to send `sig` to this (child) process when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def spawn(
    command: Sequence[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    parent_death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (so a terminal Ctrl-C reaches only the parent, which then stops
    children in order) and have it signalled if the parent dies without cleaning up."""
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(parent_death_signal),
        )
    finally:
        if log_path:
            output.close()


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
    """Signal `process` and wait; SIGKILL its whole session if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
