"""Worker processes that end with their parent: call `die_with_parent()` first in every pool initializer.

A worker blocked on its pool's pipe never notices that the parent was killed (SIGKILL, or SIGTERM
without cleanup), so it would wait forever, holding its files open. On Linux the kernel is asked
to send the worker SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`), after checking that
the parent has not already died between fork and this call. Elsewhere (or if prctl fails) a daemon
thread polls the parent process id and ends the worker within `POLL_SECONDS` of a change.

Linux ties the death signal to the thread that started the worker, so pools must be started by a
thread that outlives them (every landmeta pool is started by the main thread).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.5  # fallback: how often the parent's process id is checked


def die_with_parent(use_prctl: bool = True) -> None:
    """Make this (worker) process end, with SIGKILL, within seconds of its parent's death."""
    parent = _parent_pid()
    if not (use_prctl and _set_death_signal()):
        _start_watchdog(parent)
    if os.getppid() != parent:  # the parent died before the signal or the watchdog was in place
        _kill_self()


def _parent_pid() -> int:
    """The process id of the parent recorded by multiprocessing (immune to reparenting), else getppid."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def _set_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _start_watchdog(parent: int) -> None:
    """A daemon thread that kills this process once its parent process id is no longer `parent`."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        _kill_self()
    threading.Thread(target=watch, name="landmeta-parent-watchdog", daemon=True).start()


def _kill_self() -> None:
    """End this process at once, without cleanup (the parent that would expect it is gone)."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)
