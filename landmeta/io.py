"""Atomic file and folder writes, one writer per output, and the provenance record every output carries.

Files and folders are created with the user's umask (0666 / 0777 masked), as `open` and `mkdir` do.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from landmeta import __version__
from landmeta.errors import LandmetaWarning, OutputBusyError, OutputExistsError


def umask() -> int:
    """The process's umask, read without changing it where Linux's /proc tells it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600 files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text to `path` atomically, with the user's umask."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; rename it into place only on success.

    For writers that need a file name (rasterio, torch.save, matplotlib, GeoPackage).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty folder unless `overwrite`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    return out


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold the exclusive write lock of the output `out` for the block.

    The lock is `fcntl.flock` on `.NAME.lock` beside `out`, holding the writer's PID, host and start
    time; the kernel releases it when the writer dies however it dies. A second writer gets
    OutputBusyError; a lock file left by a dead writer is taken over with a LandmetaWarning.
    """
    out = Path(out)
    where = Path(os.path.abspath(out))  # "." and ".." have a name only once resolved
    where.parent.mkdir(parents=True, exist_ok=True)
    lock = where.with_name(f".{where.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").split()
            os.close(fd)
            pid, host, since = (holder + ["?", "?", "?"])[:3]
            remote = "" if host == socket.gethostname() else f" on {host}"
            raise OutputBusyError(f"{out}: already being written by PID {pid}{remote} since {since}") from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # else the previous holder removed the file between our open and flock
        os.close(fd)
    try:
        stale = os.pread(fd, 512, 0).decode(errors="replace").split()
        if stale:
            warnings.warn(f"{out}: took over the lock left by PID {stale[0]} (since {stale[-1]}), "
                          "which is no longer running", LandmetaWarning, stacklevel=3)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {since}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _make_aside(out: Path, kind: str) -> Path:
    """A new empty folder `.NAME.KIND-XXXX` beside `out`, with the user's umask."""
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{kind}-"))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700 folders
    return tmp


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder aside (`.NAME.partial-XXXX`) and rename it to `out` only when the block succeeds.

    The whole build holds `out`'s write lock. An interrupted build leaves no half folder at `out`
    (and the next build removes what a killed one left aside); an existing `out` is replaced only at
    the very end, and only with `overwrite`.
    """
    out = Path(out)
    with output_lock(out):
        check_output_dir(out, overwrite)
        for left in out.parent.glob(f".{glob.escape(out.name)}.partial*"):
            shutil.rmtree(left, ignore_errors=True)
        tmp = _make_aside(out, "partial")
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            old = _make_aside(out, "old")
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def provenance(**extra: Any) -> dict[str, Any]:
    """What made an output: code version, time, command line, Python and library versions."""
    import numpy
    record: dict[str, Any] = {
        "landmeta_version": code_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    if "torch" in sys.modules:
        record["torch"] = sys.modules["torch"].__version__
    record.update(extra)
    return record
