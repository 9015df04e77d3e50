"""Atomic writes: nothing half-written, refusals of non-empty outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from landmeta.errors import OutputExistsError
from landmeta.io import atomic_dir, atomic_path, atomic_write_json, provenance


def test_atomic_dir_renames_only_on_success(tmp_path: Path):
    out = tmp_path / "store"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert not out.exists() and not any(tmp_path.iterdir())
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("whole")
    assert (out / "a.txt").read_text() == "whole"


def test_atomic_dir_refuses_non_empty_unless_overwrite(tmp_path: Path):
    out = tmp_path / "store"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_dir(out):
            pass
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(ValueError):
        with atomic_dir(out, overwrite=True) as tmp:
            raise ValueError
    assert (out / "keep.txt").read_text() == "precious"  # old content survives a failed overwrite
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_atomic_path_and_json(tmp_path: Path):
    target = tmp_path / "x.bin"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyError
    assert not target.exists() and not any(tmp_path.iterdir())
    atomic_write_json(tmp_path / "p.json", provenance(seed=3))
    assert '"seed": 3' in (tmp_path / "p.json").read_text()
