"""The synthetic dataset: layouts, formats, georeference, statistics, determinism, bad output folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer

from landmeta.classes import DEEPGLOBE_COLORS, DEEPGLOBE_UNKNOWN_COLOR, IGBP_TO_SIMPLIFIED, igbp_lookup
from landmeta.cli import main
from landmeta.errors import OutputExistsError
from landmeta.synth import SCALES, generate
from landmeta.synth.sen12ms import SEASONS
from landmeta.data.sen12ms import S2_BANDS

KINDS = {"s1": (2, "float32"), "s2": (13, "uint16"), "lc": (4, "uint8")}


def _patches(root: Path) -> list[Path]:
    return sorted((root / "sen12ms").glob("ROIs*/s2_*/*.tif"))


def _sibling(s2: Path, kind: str) -> Path:
    return s2.parent.parent / s2.parent.name.replace("s2_", f"{kind}_") / s2.name.replace("_s2_", f"_{kind}_")


def _region_lonlat(s2: Path) -> tuple[float, float]:
    with rasterio.open(s2) as src:
        x, y = src.xy(src.height // 2, src.width // 2)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return lon, lat


def test_sen12ms_layout_and_formats(synth_tiny: Path) -> None:
    s2_files = _patches(synth_tiny)
    sc = SCALES["tiny"]
    assert len(s2_files) == sc.regions * sc.patches
    assert {p.parent.parent.name for p in s2_files} == set(SEASONS)
    for s2 in s2_files:
        season, folder = s2.parent.parent.name, s2.parent.name
        scene = folder.split("_")[1]
        assert s2.name.startswith(f"{season}_s2_{scene}_p") and s2.suffix == ".tif"
        grids = set()
        for kind, (count, dtype) in KINDS.items():
            with rasterio.open(_sibling(s2, kind)) as src:
                assert (src.count, src.dtypes[0], src.width, src.height) == (count, dtype, 256, 256)
                epsg = src.crs.to_epsg()
                assert 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760
                assert src.transform.a == 10.0 and src.transform.e == -10.0
                grids.add((epsg, tuple(src.transform)))
                if kind == "s2":
                    assert list(src.descriptions) == S2_BANDS
        assert len(grids) == 1  # S1, S2 and LC of a patch share one grid


def test_sen12ms_values_are_physical(synth_tiny: Path) -> None:
    table = igbp_lookup()
    for s2 in _patches(synth_tiny)[::5]:
        with rasterio.open(s2) as src:
            dn = src.read()
        valid = dn[1] > 0
        refl = dn[:, valid] / 10000.0
        assert 0.005 < np.median(refl[1]) < 0.95 and 0.005 < np.median(refl[7]) < 0.95  # blue, NIR (snow is bright)
        assert np.all(dn[:, ~valid] == 0)  # nodata is zero in every band
        with rasterio.open(_sibling(s2, "s1")) as src:
            db = src.read()
        assert np.all(np.isfinite(db)) and -35 < np.median(db[0]) < 5 and np.median(db[1]) < np.median(db[0])
        with rasterio.open(_sibling(s2, "lc")) as src:
            igbp = src.read(1)
        assert set(np.unique(igbp)) <= set(IGBP_TO_SIMPLIFIED)
        assert np.all(table[igbp] != 255)


def test_regions_georeferenced_around_the_globe(synth_tiny: Path) -> None:
    meta = json.loads((synth_tiny / "synth.json").read_text())
    by_region: dict[str, list[tuple[float, float]]] = {}
    for s2 in _patches(synth_tiny):
        by_region.setdefault(s2.parent.parent.name + "/" + s2.parent.name, []).append(_region_lonlat(s2))
    assert len(by_region) == SCALES["tiny"].regions
    centres = {}
    for region, points in by_region.items():
        pts = np.array(points)
        assert np.ptp(pts[:, 0]) < 0.2 and np.ptp(pts[:, 1]) < 0.2  # patches of a scene lie close together
        centres[region] = pts.mean(0)
    lons = np.array([c[0] for c in centres.values()])
    assert np.ptp(lons) > 180
    assert len({r["continent"] for r in meta["sen12ms_regions"]}) >= 3
    for row in meta["sen12ms_regions"]:  # the recorded location is the one the georeference gives
        c = centres[f"{row['season']}/s2_{row['scene']}"]
        assert abs(c[0] - row["lon"]) < 0.2 and abs(c[1] - row["lat"]) < 0.2


def test_every_scale_is_shaped_like_sen12ms() -> None:
    """Many season-scenes over the four seasons, cut 60/20/20 like the paper (default: its 75/25/25)."""
    from collections import Counter

    from landmeta.data.regions import random_split
    from landmeta.synth.sen12ms import make_regions

    for name, sc in SCALES.items():
        regions = make_regions(sc.regions, sc.patches, np.random.default_rng([0, 0]))  # drawn, not rendered
        assert len({r.name for r in regions}) == sc.regions and {r.season for r in regions} == {0, 1, 2, 3}
        assert all(len(r.patches) == sc.patches for r in regions)
        counts = Counter(random_split([r.name for r in regions], seed=0).values())
        assert counts["train"] == round(0.6 * sc.regions) and counts["val"] == counts["test"], name
    assert SCALES["default"].regions >= 120 and SCALES["large"].regions >= 250
    assert Counter(random_split([str(i) for i in range(SCALES["default"].regions)], 0).values()) == \
        {"train": 75, "val": 25, "test": 25}


def test_class_statistics_differ_between_regions(synth_tiny: Path) -> None:
    table = igbp_lookup()
    mixes = {}
    for s2 in _patches(synth_tiny):
        with rasterio.open(_sibling(s2, "lc")) as src:
            ids = table[src.read(1)]
        key = s2.parent.parent.name + s2.parent.name
        mixes[key] = mixes.get(key, 0) + np.bincount(ids.ravel(), minlength=10)
    fractions = np.array([m / m.sum() for m in mixes.values()])
    present = fractions > 0.01
    assert np.all(present.sum(1) >= 3)  # several classes per region
    assert np.all(present.sum(1) < 10)  # some classes absent in every region
    assert present.any(0).sum() >= 8  # most classes occur somewhere
    distances = np.abs(fractions[:, None] - fractions[None]).sum(-1) / 2
    assert np.median(distances[np.triu_indices(len(fractions), 1)]) > 0.3  # class mixes differ


def test_label_maps_are_spatially_coherent(synth_tiny: Path) -> None:
    with rasterio.open(_sibling(_patches(synth_tiny)[0], "lc")) as src:
        igbp = src.read(1)
    same = np.mean(igbp[:, 1:] == igbp[:, :-1])
    assert same > 0.9  # neighbours mostly share a class: parcels, not pixel noise


def test_deepglobe_tiles(synth_tiny: Path) -> None:
    sc = SCALES["tiny"]
    sats = sorted((synth_tiny / "deepglobe").glob("*_sat.jpg"))
    assert len(sats) == sc.styles * sc.tiles_per_style
    allowed = {tuple(c) for c in DEEPGLOBE_COLORS} | {DEEPGLOBE_UNKNOWN_COLOR}
    seen = set()
    for sat in sats:
        image = Image.open(sat)
        assert image.mode == "RGB" and image.size == (sc.tile_size, sc.tile_size)
        mask = np.array(Image.open(sat.with_name(sat.name.replace("_sat.jpg", "_mask.png"))).convert("RGB"))
        assert mask.shape == (sc.tile_size, sc.tile_size, 3)
        colours = {tuple(c) for c in np.unique(mask.reshape(-1, 3), axis=0)}
        assert colours <= allowed
        seen |= colours
    assert len(seen - {DEEPGLOBE_UNKNOWN_COLOR}) >= 5


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix == ".tif":
            with rasterio.open(path) as src:
                h.update(src.read().tobytes())
                h.update(str(src.transform).encode() + src.crs.to_string().encode())
        elif path.suffix in (".jpg", ".png"):
            h.update(np.asarray(Image.open(path)).tobytes())
        h.update(path.relative_to(root).as_posix().encode())
    return h.hexdigest()


def test_deterministic_for_a_seed(synth_tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", scale="tiny", seed=0)
    assert _digest(again) == _digest(synth_tiny)
    meta = json.loads((again / "synth.json").read_text())
    sc = SCALES["tiny"]
    assert meta["seed"] == 0 and meta["scale"] == "tiny"
    assert meta["counts"]["sen12ms_patches"] == sc.regions * sc.patches


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="full"):
        generate(out, scale="tiny")
    assert (out / "keep.txt").read_text() == "mine"
    assert not any(p.name.startswith(".full") for p in tmp_path.iterdir())


def test_cli_refuses_then_overwrites(synth_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "junk").write_text("")
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and str(out) in err[0]
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3", "--overwrite"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    sc = SCALES["tiny"]
    assert str(out) in line and f"{sc.regions * sc.patches} patches" in line
    assert f"{sc.styles * sc.tiles_per_style} DeepGlobe tiles" in line
    assert not (out / "junk").exists() and json.loads((out / "synth.json").read_text())["seed"] == 3
    assert _digest(out) != _digest(synth_tiny)  # another seed, another dataset
