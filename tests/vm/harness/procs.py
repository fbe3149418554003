"""Processes the harness starts: tie them to the harness's life, and ask whether one still runs."""

import ctypes
import os

PR_SET_PDEATHSIG = 1


def on_parent_death(sig: int):
    """A `preexec_fn` that makes the kernel send `sig` to the child when the harness dies (even
    by SIGKILL): SIGKILL for qemu, SIGTERM for mmdebstrap so that it unmounts what it mounted."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
