"""`landmeta adapt`: support folders of real GeoTIFF/PNG tiles, the engine's adaptation, saved checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from inference_factory import (
    CLASSES,
    COLORS,
    check_qgis,
    class_field,
    has_qgis,
    make_checkpoint,
    reflectance,
    write_geotiff,
    write_png,
)

from landmeta.cli import main
from landmeta.errors import DataError
from landmeta.inference.support import read_support
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _support(folder: Path, tiles: int = 5, size: tuple[int, int] = (64, 96), mask_values=None) -> Path:
    """Segmentation support: GeoTIFF images (uint16 DN) with PNG masks of class ids."""
    for i in range(tiles):
        cls = class_field(*size, seed=i)
        write_geotiff(folder / "images" / f"t{i}.tif", reflectance(cls, 4, seed=i))
        write_png(folder / "masks" / f"t{i}.png", cls if mask_values is None else np.asarray(mask_values)[cls]
                  .astype(np.uint8))
    return folder


def _accuracy(capsys, model: Path, scene: Path, truth: np.ndarray, out: Path) -> float:
    code, _, err = _run(capsys, "predict", "--model", model, "--input", scene, "--out", out, "--window", 128)
    assert code == 0, err
    return float((rasterio.open(out / f"{scene.stem}_classes.tif").read(1) == truth).mean())


def test_adapt_then_predict_a_held_out_scene(tmp_path, capsys):
    """A U-Net adapted on 5 labelled tiles maps an unseen scene of the region far better than before."""
    torch.manual_seed(0)
    base = make_checkpoint(tmp_path / "base.pt", store_chip_size=64)
    support = _support(tmp_path / "support")
    code, out, err = _run(capsys, "adapt", "--checkpoint", base, "--support", support,
                          "--out", tmp_path / "models" / "region.pt", "--steps", 20, "--lr", 0.1)
    assert code == 0, err
    assert "5 tiles" in out and "20 steps" in out
    assert "adapt: 100%" in err and "20/20" in err  # the progress bar follows the steps
    adapted = Checkpoint.load(tmp_path / "models" / "region.pt")
    assert adapted.method == "maml" and adapted.adapted_from == str(base.resolve())
    assert adapted.adaptation["tiles"] == [f"images/t{i}.tif" for i in range(5)]
    assert adapted.adaptation["steps"] == 20 and adapted.adaptation["lr"] == 0.1
    assert adapted.adaptation["chips"] == 10  # each 64x96 tile gives two 64-px windows
    assert adapted.training is None and list(adapted.class_names) == CLASSES
    truth = class_field(128, 192, seed=99)
    scene = write_geotiff(tmp_path / "scene.tif", reflectance(truth, 4, seed=99))
    before = _accuracy(capsys, base, scene, truth, tmp_path / "before")
    after = _accuracy(capsys, tmp_path / "models" / "region.pt", scene, truth, tmp_path / "after")
    assert after > 0.8 and after > before + 0.3


@pytest.mark.parametrize("method,norm_stats", [("maml", "support"), ("maml", "trained"), ("pretrain", "support")])
def test_on_step_is_called_once_per_adaptation_step(tmp_path, method, norm_stats):
    """The adapt progress bar advances once per inner-loop or fine-tuning step (BatchNorm
    statistics afterwards are not a step)."""
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt", method=method))
    data = read_support(_support(tmp_path / "support", tiles=2, size=(32, 32)), ckpt)
    seen: list[int] = []
    adapt(ckpt, ckpt.model(), data.x, data.y, steps=4, lr=0.01, norm_stats=norm_stats,
          on_step=lambda: seen.append(1))
    assert len(seen) == 4


def test_class_map_renames_the_users_ids(tmp_path):
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt"))
    support = _support(tmp_path / "support", tiles=1, size=(32, 32), mask_values=[2, 0, 1])  # Forest->2 ...
    (tmp_path / "classes.csv").write_text("cropland,0\nwater,1\nForest,2\n")
    data = read_support(support, ckpt, tmp_path / "classes.csv")
    truth = class_field(32, 32, seed=0)
    assert (data.y[0].numpy() == truth).all()  # back to the checkpoint's ids
    with pytest.raises(DataError, match="not in the checkpoint's classes"):
        read_support(support, ckpt.replace(class_names=tuple(CLASSES[:2])))  # value 2 unknown without a map


def test_rgb_masks_are_read_with_the_checkpoints_colours(tmp_path):
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "base.pt"))
    truth = class_field(32, 32, seed=3)
    write_geotiff(tmp_path / "s" / "images" / "a.tif", reflectance(truth, 4))
    rgb = np.asarray(COLORS, dtype=np.uint8)[truth]
    rgb[:4] = 0  # black = unlabelled
    write_png(tmp_path / "s" / "masks" / "a.png", rgb)
    y = read_support(tmp_path / "s", ckpt).y[0].numpy()
    assert (y[:4] == 255).all() and (y[4:] == truth[4:]).all()


@pytest.mark.parametrize("case,message", [
    ("unknown", "pass --class-map"),
    ("empty", "no image tiles"),
    ("unlabelled", "no labelled pixels"),
    ("bad_map", "is not a class of the checkpoint"),
    ("bands", "the model expects 4 bands"),
    ("corrupt", "cannot"),
    ("layout", "needs images/ and masks/"),
])
def test_bad_support_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    base = make_checkpoint(tmp_path / "base.pt")
    support = tmp_path / "support"
    extra: list[str] = []
    if case == "unknown":
        _support(support, tiles=2, size=(32, 32), mask_values=[0, 1, 7])
    elif case == "empty":
        (support / "images").mkdir(parents=True)
    elif case == "unlabelled":
        _support(support, tiles=1, size=(32, 32), mask_values=[255, 255, 255])
    elif case == "bad_map":
        _support(support, tiles=1, size=(32, 32))
        (tmp_path / "map.csv").write_text("Forest,0\nSnow,1\nWater,2\n")
        extra = ["--class-map", tmp_path / "map.csv"]
    elif case == "bands":
        write_geotiff(support / "images" / "a.tif", reflectance(class_field(32, 32), 3))
        write_png(support / "masks" / "a.png", class_field(32, 32))
    elif case == "corrupt":
        _support(support, tiles=1, size=(32, 32))
        (support / "images" / "t0.tif").write_bytes(b"II*\x00 not a tiff")
    elif case == "layout":
        write_geotiff(support / "Forest" / "a.tif", reflectance(class_field(32, 32), 4))
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--support", support,
                        "--out", tmp_path / "models" / "r.pt", *extra)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("landmeta adapt: error:") and message in last
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_classifier_adapts_to_class_folders_and_maps_coarsely(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "cls.pt", kind="classification", method="maml", chip_size=32,
                           class_names=CLASSES + ["Urban"], colors=COLORS + [(165, 165, 165)], num_classes=4)
    support = tmp_path / "support"
    for name, spectrum in (("Water", 2), ("Forest", 0)):  # the spectra of classes 2 and 0 of the scene
        for i in range(3):
            write_geotiff(support / name / f"{name}{i}.tif",
                          reflectance(np.full((32, 32), spectrum, np.uint8), 4, seed=i))
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--support", support,
                        "--out", tmp_path / "m.pt", "--steps", 10, "--lr", 0.1)
    assert code == 0, err
    adapted = Checkpoint.load(tmp_path / "m.pt")
    assert adapted.class_names == ("Forest", "Water")  # folders, sorted: the adapted outputs
    assert adapted.class_colors == (COLORS[0], COLORS[2])
    truth = np.kron(np.array([[0, 2], [2, 0]]), np.ones((32, 32), np.int64)).astype(np.uint8)
    scene = write_geotiff(tmp_path / "scene.tif", reflectance(truth, 4, seed=9))
    code, _, err = _run(capsys, "predict", "--model", tmp_path / "m.pt", "--input", scene, "--out", tmp_path / "maps")
    assert code == 0, err
    pred = rasterio.open(tmp_path / "maps" / "scene_classes.tif").read(1)
    assert (pred == np.where(truth == 0, 0, 1)).all()  # Forest (output 0) where forest, Water (1) elsewhere


def test_existing_output_is_refused(tmp_path, capsys):
    base = make_checkpoint(tmp_path / "base.pt")
    support = _support(tmp_path / "support", tiles=1, size=(32, 32))
    (tmp_path / "r.pt").write_bytes(b"keep")
    code, _, err = _run(capsys, "adapt", "--checkpoint", base, "--support", support, "--out", tmp_path / "r.pt")
    assert code == 2 and "--overwrite" in err and (tmp_path / "r.pt").read_bytes() == b"keep"


@pytest.mark.slow
def test_trained_unet_adapts_to_a_held_out_region_and_maps_it(synth_tiny, tmp_path, capsys):
    """preprocess -> train (tiny U-Net) -> adapt on 2 patches of a meta-test region, with its
    IGBP masks renamed by a class map -> predict a third patch of that region."""
    from landmeta.classes import IGBP_TO_SIMPLIFIED, SIMPLIFIED_CLASSES
    from landmeta.data.store import ChipStore

    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    store, run = tmp_path / "store", tmp_path / "run"
    assert main(["preprocess", "sen12ms", "--root", str(synth_tiny / "sen12ms"), "--out", str(store),
                 "--bands", *s2, "--no-progress"]) == 0
    assert main(["train", "--config", "tiny-seg", "--data", str(store), "--out", str(run), "--no-progress"]) == 0
    region = ChipStore.open(store).regions_in("test")[0]  # e.g. ROIs1158_spring_7
    season, scene = region.rsplit("_", 1)
    patches = sorted((synth_tiny / "sen12ms" / season / f"s2_{scene}").glob("*.tif"))
    assert len(patches) >= 3
    support = tmp_path / "support"
    for patch in patches[:2]:
        (support / "images").mkdir(parents=True, exist_ok=True)
        (support / "masks").mkdir(exist_ok=True)
        (support / "images" / patch.name).symlink_to(patch)
        lc = patch.parent.parent / f"lc_{scene}" / patch.name.replace("_s2_", "_lc_")
        (support / "masks" / patch.name).symlink_to(lc)
    lines = ["ignore,0"] + [f"{SIMPLIFIED_CLASSES[IGBP_TO_SIMPLIFIED[v]]},{v}" for v in range(1, 18)]
    (tmp_path / "igbp.csv").write_text("\n".join(lines) + "\n")
    code, out, err = _run(capsys, "adapt", "--checkpoint", run / "best.pt", "--support", support,
                          "--out", tmp_path / "region.pt", "--class-map", tmp_path / "igbp.csv")
    assert code == 0, err
    adapted = Checkpoint.load(tmp_path / "region.pt")
    assert adapted.adaptation["chips"] == 8  # 2 patches of 256² in 128-px chips (the store's size)
    code, out, err = _run(capsys, "predict", "--model", tmp_path / "region.pt", "--input", patches[2],
                          "--out", tmp_path / "maps", "--polygons")
    assert code == 0, err
    with rasterio.open(patches[2]) as src, rasterio.open(tmp_path / "maps" / f"{patches[2].stem}_classes.tif") as m:
        assert m.crs == src.crs and m.transform == src.transform and m.shape == src.shape
        assert set(np.unique(m.read(1))) <= set(range(len(SIMPLIFIED_CLASSES)))
        assert m.colormap(1)[0][:3] == (0, 153, 0)  # Forest's colour from the store, via the checkpoint
    if has_qgis():  # and QGIS shows it in place with the store's colours and class names
        done = check_qgis("--map", tmp_path / "maps" / f"{patches[2].stem}_classes.tif", "--input", patches[2],
                          "--store", store)
        assert done.returncode == 0 and done.stdout.rstrip().endswith("all checks passed"), done.stdout
