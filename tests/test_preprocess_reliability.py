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
import pandas as pd
import pytest
import rasterio

from landmeta.cli import main
from landmeta.data.preprocess import PreprocessOptions, preprocess
from landmeta.errors import DataError
from preprocess_inputs import sen12ms_dataset, write_tif

SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall")
LOWEST = np.finfo(np.float32).min  # GDAL's float nodata


def run(source, root, out, workers=None, **kw):
    kw.setdefault("chip_size", 32)
    return preprocess(source, root, out, PreprocessOptions(**kw), workers=workers)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform


def rewrite(path, change, nodata=None):
    """Rewrite a GeoTIFF in place with `change(pixels)` applied, optionally declaring a nodata value."""
    pixels, transform = read(path)
    change(pixels)
    write_tif(path, pixels, transform=transform)
    if nodata is not None:
        with rasterio.open(path, "r+") as dst:
            dst.nodata = nodata


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


# --- floats: non-finite and nodata before any range check; out-of-range values clipped ------------

def test_inf_and_float_nodata_are_nodata_and_big_values_clipped_never_a_dropped_tile(tmp_path, capsys):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    s1 = {p: root / f"ROIs1158_spring/s1_{p[0]}/ROIs1158_spring_s1_{p[0]}_p{p[1]}.tif" for p in ((1, 1), (1, 2), (2, 1))}
    def damage(a):
        a[0, 0, 0], a[1, 1, 1], a[0, 2, 2] = np.inf, -np.inf, LOWEST  # +inf, -inf in VH, GDAL's float nodata
    rewrite(s1[1, 1], damage)
    rewrite(s1[1, 2], lambda a: a[1, 3:5, 3].fill(-9999.0), nodata=-9999.0)  # declared nodata, one band
    def too_big(a):
        a[0, 10, 10], a[1, 10, 11] = 1e6, -3e38  # valid values beyond float16: clipped, counted
    rewrite(s1[2, 1], too_big)
    for workers in (0, 2):
        out = run("sen12ms", root, tmp_path / f"store{workers}", workers=workers)
        m = manifest(out)
        assert m["skipped"] == [] and m["num_chips"] == 8 * 4
        assert m["counts"]["nodata_pixels"] == 3 + 2 and m["counts"]["nodata_tiles"] == 2
        assert m["counts"]["clipped_values"] == 2 and m["counts"]["clipped_tiles"] == 1
        images, masks = np.load(out / "images.npy"), np.load(out / "masks.npy")
        assert np.isfinite(images).all()
        for y, x in ((0, 0), (1, 1), (2, 2)):  # patch p1 of spring_1: chips 0..3, (y, x) in chip 0
            assert masks[0, y, x] == 255 and (images[0, :, y, x] == 0).all()
        for y in (3, 4):  # patch p2 of spring_1: chips 4..7
            assert masks[4, y, 3] == 255 and (images[4, :, y, 3] == 0).all()
        chips = [c for c in range(len(images)) if abs(float(images[c, 0].max())) == 65504]
        assert len(chips) == 1 and images[chips[0], 1].min() == -65504 and masks[chips[0], 10, 10] != 255
        warning = [w for w in m["warnings"] if "clipped" in w]
        assert len(warning) == 1 and str(s1[2, 1]) in warning[0] and "s2_" not in warning[0]
        assert warning[0].startswith("2 values beyond ±65504")
    assert main(["preprocess", "sen12ms", "--root", str(root), "--out", str(tmp_path / "cli"), "--chip-size", "32",
                 "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert any("clipped" in line and "warning" in line and str(s1[2, 1]) in line
               for line in (printed.out + printed.err).splitlines())


def test_folder_float_tiles_nodata_in_any_band_and_inf(tmp_path):
    rng = np.random.default_rng(0)
    for region in ("a", "b", "c"):
        for cls in ("x", "y"):
            for k in range(2):
                pixels = rng.normal(0, 1, (3, 32, 32)).astype(np.float32)
                path = write_tif(tmp_path / "raw" / region / cls / f"t{k}.tif", pixels)
                with rasterio.open(path, "r+") as dst:
                    dst.nodata = float(LOWEST)
    bad = tmp_path / "raw/a/x/t0.tif"
    def damage(a):
        a[2, 0, 0], a[0, 1, 1], a[1, 2, 2] = LOWEST, np.inf, 7e4  # nodata in one band, inf, out of range
    rewrite(bad, damage, nodata=float(LOWEST))
    out = run("folder", tmp_path / "raw", tmp_path / "store")
    m = manifest(out)
    assert m["skipped"] == [] and m["num_chips"] == 12
    assert m["counts"]["nodata_pixels"] == 2 and m["counts"]["clipped_values"] == 1
    images = np.load(out / "images.npy")
    assert (images[0, :, 0, 0] == 0).all() and (images[0, :, 1, 1] == 0).all() and images[0, 1, 2, 2] == 65504
    assert any(str(bad) in w for w in m["warnings"])


# --- one odd SEN12MS patch never decides the grid -----------------------------------------------

@pytest.mark.parametrize("odd", ["lc", "all"])
def test_an_odd_first_patch_is_skipped_and_named_not_the_whole_dataset(tmp_path, odd):
    """The first patch's lc file (or its whole triplet) is 32² while the others are 64²: only it is lost."""
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    first = {k: root / f"ROIs1158_spring/{k}_1/ROIs1158_spring_{k}_1_p1.tif" for k in ("s1", "s2", "lc")}
    for kind in (["lc"] if odd == "lc" else ["s1", "s2", "lc"]):
        pixels, transform = read(first[kind])
        write_tif(first[kind], np.ascontiguousarray(pixels[:, :32, :32]), transform=transform)
    out = run("sen12ms", root, tmp_path / "store")
    m = manifest(out)
    assert m["num_chips"] == 7 * 4 and m["counts"]["inputs_skipped"] == 1
    skipped = m["skipped"][0]
    assert str(first["lc"]) in skipped["file"] + skipped["reason"]
    assert "patch is 32x32, the dataset's patches are 64x64" in skipped["reason"]
    assert "ROIs1158_spring_1_p1" not in set(pd.read_csv(out / "chips.csv")["parent"])


# --- unknown IGBP values ------------------------------------------------------------------------

def test_unknown_igbp_values_are_ignored_and_counted(tmp_path, capsys):
    root = sen12ms_dataset(tmp_path / "raw", scenes=(1, 2))
    lc = root / "ROIs1868_summer/lc_2/ROIs1868_summer_lc_2_p1.tif"
    def damage(a):
        a[0, :2, :3], a[0, 5, 5] = 0, 18  # 6 pixels of 0 (no class), 1 of 18
    rewrite(lc, damage)
    out = run("sen12ms", root, tmp_path / "store")
    m = manifest(out)
    assert m["counts"]["unknown_label_pixels"] == 7 and m["counts"]["unknown_label_tiles"] == 1
    assert m["num_chips"] == 32 and m["skipped"] == []
    warning = [w for w in m["warnings"] if "IGBP" in w]
    assert len(warning) == 1 and "outside 1..17 (0, 18)" in warning[0] and str(lc) in warning[0]
    masks = np.load(out / "masks.npy")  # the patch's mask ignores those pixels
    row = pd.read_csv(out / "chips.csv").query("tile == 'ROIs1868_summer_2_p1_r0c0'").index[0]
    assert (masks[row, :2, :3] == 255).all() and masks[row, 5, 5] == 255


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
                            stderr=subprocess.PIPE, start_new_session=True)
    workers: list[int] = []
    try:
        seen = ""
        while not re.search(r"\b([1-9]\d)/240\b", seen):  # at least 10 of the 240 patches done
            chunk = os.read(proc.stderr.fileno(), 65536)  # whole chunks: reading must not lag the writer
            assert chunk, f"preprocessing ended before it could be killed: {seen[-300:]}"
            seen += chunk.decode(errors="replace")
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


# --- duplicate lines in split files, hold-out lists and class maps -------------------------------

def test_duplicate_split_and_holdout_lines_are_errors_naming_file_and_line(tmp_path, capsys):
    root = sen12ms_dataset(tmp_path / "raw", seasons=SEASONS[:3], scenes=(1,), patches=(1,))
    regions = [f"{s}_1" for s in SEASONS]
    split = tmp_path / "split.csv"
    split.write_text(f"# regions\n{regions[0]},train\n{regions[1]},val\n\n{regions[2]},test\n{regions[1]},val\n")
    with pytest.raises(DataError, match=rf"split.csv: line 6: '{regions[1]},val' lists region '{regions[1]}' "
                                        rf"again \(first on line 3\)"):
        run("sen12ms", root, tmp_path / "a", split_file=split)
    split.write_text(f"{regions[0]},train\n{regions[1]},val\n{regions[2]},test\n{regions[0]},test\n")  # conflicting
    with pytest.raises(DataError, match=rf"line 4: '{regions[0]},test' lists region '{regions[0]}' again"):
        run("sen12ms", root, tmp_path / "a", split_file=split)
    holdout = tmp_path / "holdout.txt"
    holdout.write_text(f"{regions[2]}\n# again:\n{regions[2]}\n")
    assert main(["preprocess", "sen12ms", "--root", str(root), "--out", str(tmp_path / "b"), "--chip-size", "32",
                 "--holdout", str(holdout), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"holdout.txt: line 3: '{regions[2]}' lists region '{regions[2]}' again" in err[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_duplicate_class_map_names_and_colours_are_errors(tmp_path, capsys):
    from landmeta.data.folder import read_class_map
    root = tmp_path / "raw"
    for region in ("a", "b", "c"):
        write_tif(root / region / "images" / "t.tif", np.zeros((1, 32, 32), np.float32))
        write_tif(root / region / "masks" / "t.tif", np.zeros((1, 32, 32), np.uint8))
    cmap = tmp_path / "classes.csv"
    cmap.write_text("water,0\n# comment\nforest,1\nwater,2\n")
    assert main(["preprocess", "folder", "--root", str(root), "--out", str(tmp_path / "s"), "--class-map", str(cmap),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classes.csv: class name 'water' is given twice (ids 0 and 2)" in err[0]
    assert not (tmp_path / "s").exists()
    cmap.write_text("water,0,0,0,255\nforest,1,0,128,0\nlake,2,0,0,255\n")  # any class map: one colour, one id
    with pytest.raises(DataError, match=r"classes.csv: line 3: colour \(0, 0, 255\) of 'lake' is already that of 'water'"):
        read_class_map(cmap)
    cmap.write_text("ignore,0\nForest,1\nForest,2\n")  # a support's map may merge ids into one class
    assert read_class_map(cmap)[0] == ["ignore", "Forest", "Forest"]
