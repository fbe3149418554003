"""Processes the harness starts: tie them to the harness's life, and ask whether one still runs."""

import ctypes
import os
import queue
import subprocess
import threading

PR_SET_PDEATHSIG = 1


def on_parent_death(sig: int):
    """A `preexec_fn` that makes the kernel send `sig` to the child when the harness dies (even
    by SIGKILL): SIGKILL for qemu, SIGTERM for mmdebstrap so that it unmounts what it mounted."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


_requests: "queue.Queue | None" = None
_requests_lock = threading.Lock()


def spawn(*args, **kwargs) -> subprocess.Popen:
    """`subprocess.Popen(*args, **kwargs)`, forked by a thread that lives as long as the harness.

    The kernel sends the parent-death signal when the *thread* that forked the child ends, not
    the process: a qemu started from a worker thread (one guest's set-up, one track of the
    scenario) would be killed as soon as that thread finished. A daemon thread ends only with
    the harness."""
    global _requests
    with _requests_lock:
        if _requests is None:
            _requests = queue.Queue()
            threading.Thread(target=_spawner, args=(_requests,), name="spawner", daemon=True).start()
    answer: "queue.Queue" = queue.Queue(maxsize=1)
    _requests.put((args, kwargs, answer))
    result = answer.get()
    if isinstance(result, BaseException):
        raise result
    return result


def _spawner(requests: "queue.Queue") -> None:
    while True:
        args, kwargs, answer = requests.get()
        try:
            answer.put(subprocess.Popen(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            answer.put(e)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
