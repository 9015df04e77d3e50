"""Preprocessing keeps data it can keep and ends cleanly: inf/nodata/out-of-range floats, an odd patch
size, unknown IGBP values, duplicate split and class-map lines, and workers killed with their parent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from preprocess_inputs import sen12ms_dataset

SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall")


# --- worker pools end with their parent ---------------------------------------------------------

def _children(pid: int) -> list[int]:
    """Process ids of the live (not zombie) children of `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_preprocess_leaves_no_worker_behind(tmp_path, sig):
    """`landmeta preprocess --workers 2` killed while its workers run: every worker is gone within 5 s."""
    root = sen12ms_dataset(tmp_path / "raw", seasons=SEASONS, scenes=tuple(range(1, 11)), patches=tuple(range(1, 9)))
    proc = subprocess.Popen([sys.executable, "-m", "landmeta", "preprocess", "sen12ms", "--root", str(root),
                             "--out", str(tmp_path / "store"), "--chip-size", "32", "--workers", "2"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: list[int] = []
    try:
        seen = ""
        while not re.search(r"\b([1-9]\d)/240\b", seen):  # at least 10 of the 240 patches done
            char = proc.stderr.read(1)
            assert char, f"preprocessing ended before it could be killed: {seen[-300:]}"
            seen += char
        workers = _children(proc.pid)
        assert len(workers) >= 2, f"expected 2 running workers, found {workers}"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [w for w in workers if _alive(w)]
        assert not survivors, f"workers {survivors} outlived their parent (killed with {sig.name}) by 5 s"
    finally:
        proc.kill()
        proc.wait()
        for w in workers:  # leave nothing behind if the assertion failed
            if _alive(w):
                os.kill(w, signal.SIGKILL)


_POOL_PARENT = """
import multiprocessing, os, sys, time
from landmeta.workers import die_with_parent

def child(use_prctl):
    die_with_parent(use_prctl)
    print(os.getpid(), flush=True)  # ready
    time.sleep(600)

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[2])
    worker = context.Process(target=child, args=(sys.argv[1] == "prctl",))
    worker.start()
    time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="lists processes through /proc")
@pytest.mark.parametrize("how", ["prctl", "watchdog"])
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_die_with_parent_ends_a_worker_whose_parent_was_killed(tmp_path, how, start):
    """Both mechanisms (Linux death signal, portable watchdog thread), fork and spawn: the worker is
    gone within 5 s of its parent's SIGKILL."""
    script = tmp_path / "parent.py"
    script.write_text(_POOL_PARENT)
    proc = subprocess.Popen([sys.executable, str(script), how, start], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    worker = int(proc.stdout.readline())  # printed once die_with_parent has run in the worker
    try:
        assert _alive(worker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"worker outlived its parent by 5 s ({how}, {start})"
    finally:
        proc.kill()
        proc.wait()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
