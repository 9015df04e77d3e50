"""Vector labels over one scene (polygons and points, any CRS) as a support set.

Labels are read with geopandas and reprojected to the scene's CRS. Windows of the store's chip
size are planned around the labelled features (never overlapping) and only those windows are read
(`Scene.read`) and rasterised (`rasterio.features.rasterize`, all_touched off; points become small
discs), so time and memory do not depend on the scene's size, and the working memory not on the
number of features: the support tensors are allocated once and filled window by window.
Pixels outside every feature, and where features of different classes overlap, are unlabelled
(255). A classifier gets the majority class of each window.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from landmeta.classes import IGNORE_INDEX
from landmeta.data.chips import around_features
from landmeta.data.transforms import normalise, resize_chips
from landmeta.errors import DataError, LandmetaWarning
from landmeta.inference.maps import GDAL_CACHE_BYTES
from landmeta.inference.scene import Scene, open_scene
from landmeta.inference.support import IGNORE_NAMES, SupportSet, _mask_lookup
from landmeta.meta.checkpoint import Checkpoint

DEFAULT_CLASS_FIELD = "class"
POLYGONS = ("Polygon", "MultiPolygon")
POINTS = ("Point", "MultiPoint")


@dataclass(frozen=True)
class LabelSource:
    """Vector labels over a scene: the scene, the labels file, its layer, class field, point radius."""

    scene: Path
    labels: Path
    layer: str | None = None
    class_field: str = DEFAULT_CLASS_FIELD
    point_radius: float | None = None  # in scene pixels; None = one pixel at the model's resolution


@dataclass
class LabelledSupport:
    """A support set cut from vector labels, with the windows it came from and what was left out."""

    support: SupportSet
    windows: list[tuple[int, int, int, int]]  # (row, col, height, width) in scene pixels
    features: int  # features used (inside the scene, not ignored)
    outside: int  # features left out: outside the scene's footprint
    overlap_pixels: int  # pixels of the windows where features of different classes overlap
    point_radius: float
    feature_boxes: np.ndarray  # (features, 4) int pixel boxes row0, col0, row1, col1 (end exclusive)
    feature_classes: np.ndarray  # (features,) class of each box, as in `support.y`


@dataclass
class _Features:
    """Labelled features in scene pixel space: geometries (scene CRS), class per feature, pixel boxes."""

    polygons: list[Any]
    polygon_class: np.ndarray
    points: np.ndarray  # (n, 2) float (col, row) in pixels
    point_class: np.ndarray
    boxes: np.ndarray  # (n_polygons + n_points, 4) int row0, col0, row1, col1 (end exclusive)


def read_label_support(source: LabelSource, ckpt: Checkpoint, class_map: Path | None = None,
                       progress: bool = False) -> LabelledSupport:
    """Rasterise `source`'s labels around windows of its scene into a support set for `ckpt`.

    DataError (one line, naming the file) on a scene without a CRS, an unreadable or empty layer, a
    missing class field, geometries other than polygons and points, class names the checkpoint
    does not know, labels outside the scene; LandmetaWarning for overlaps and features left out.
    """
    kind = ckpt.kind
    if kind == "classification" and class_map is not None:
        raise DataError(f"{class_map}: a class map applies to segmentation labels; "
                        f"a classifier's classes are the names in the class field")
    frame = _read_layer(source)
    values, names, classes = _class_ids(frame[source.class_field], source, ckpt, class_map)
    keep = values >= 0  # features of 'ignore' classes are left out
    frame, values = frame[keep], values[keep]
    size = ckpt.store_chip_size
    radius = float(source.point_radius) if source.point_radius is not None else size / ckpt.chip_size
    with open_scene(Path(source.scene), list(ckpt.bands)) as scene:
        if scene.crs is None:
            raise DataError(f"{source.scene}: the scene has no CRS, so vector labels cannot be placed on it "
                            f"(use a georeferenced GeoTIFF)")
        features, outside = _to_pixels(frame, values, scene, radius, source)
        windows = around_features(features.boxes, scene.height, scene.width, size)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # scattered windows: keep GDAL's block cache small
            support, used, overlap = _cut(scene, features, windows, radius, ckpt, names, classes, progress)
    if not used:
        raise DataError(f"{source.labels}: no labelled pixels in the scene (features smaller than a pixel "
                        f"or over nodata?)")
    if overlap:
        warnings.warn(f"{source.labels}: {overlap} pixels where features of different classes overlap "
                      f"are left unlabelled", LandmetaWarning, stacklevel=2)
    if kind == "classification" and len(set(support.y.tolist())) < 2:
        raise DataError(f"{source.labels}: the windows hold {len(set(support.y.tolist()))} class; "
                        f"a classifier needs at least 2 classes")
    return LabelledSupport(support=support, windows=used, features=len(features.boxes), outside=outside,
                           overlap_pixels=overlap, point_radius=radius, feature_boxes=features.boxes,
                           feature_classes=np.concatenate([features.polygon_class, features.point_class]))


def _read_layer(source: LabelSource) -> Any:
    """The labels' features with a CRS, a class field and polygon or point geometries only."""
    import geopandas as gpd
    import pyogrio

    path = Path(source.labels)
    if not path.exists():
        raise DataError(f"{path}: no such labels file")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises its own DataSourceError and friends
        raise DataError(f"{path}: cannot read as vector labels ({_gist(exc)})") from exc
    if source.layer is not None and source.layer not in layers:
        raise DataError(f"{path}: no layer {source.layer!r} (layers: {', '.join(layers)})")
    try:
        frame = gpd.read_file(path, layer=source.layer)
    except Exception as exc:
        raise DataError(f"{path}: cannot read layer {source.layer or layers[0]!r} ({_gist(exc)})") from exc
    where = f"{path}" + (f" layer {source.layer!r}" if source.layer else "")
    if len(frame) == 0:
        raise DataError(f"{where}: the layer has no features")
    if source.class_field not in frame.columns:
        fields = [c for c in frame.columns if c != frame.geometry.name]
        raise DataError(f"{where}: no field {source.class_field!r} (fields: {', '.join(fields) or 'none'}); "
                        f"name the class field with --class-field")
    if frame.crs is None:
        raise DataError(f"{where}: the labels have no CRS (a Shapefile without its .prj?); "
                        f"save them with one")
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.all():
        raise DataError(f"{where}: every feature has an empty geometry")
    if empty.any():
        warnings.warn(f"{where}: {int(empty.sum())} features without a geometry are left out",
                      LandmetaWarning, stacklevel=3)
        frame = frame[~empty]
    types = frame.geometry.geom_type
    bad = sorted(set(types) - set(POLYGONS) - set(POINTS))
    if bad:
        raise DataError(f"{where}: {int(types.isin(bad).sum())} features are {', '.join(bad)}; "
                        f"labels must be polygons or points")
    missing = frame[source.class_field].isna()
    if missing.any():
        raise DataError(f"{where}: {int(missing.sum())} features have no value in field {source.class_field!r}")
    return frame


def _class_ids(values: Any, source: LabelSource, ckpt: Checkpoint,
               class_map: Path | None) -> tuple[np.ndarray, list[str], list[int] | None]:
    """Per feature: the output class (-1 = ignore); the adapted model's class names and checkpoint ids."""
    ckpt_names = list(ckpt.class_names)
    known = {_key(n): i for i, n in enumerate(ckpt_names)}
    text = [str(v).strip() for v in values]
    if ckpt.kind == "classification":  # like class folders: the names become the classes
        names = sorted({t for t in text if _key(t) not in IGNORE_NAMES}, key=_key)
        local = {_key(n): i for i, n in enumerate(names)}
        ids = np.array([local.get(_key(t), -1) for t in text], dtype=np.int64)
        classes = [known[_key(n)] for n in names] if all(_key(n) in known for n in names) else None
        return ids, names, classes
    if class_map is None:
        unknown = sorted({t for t in text if _key(t) not in known and _key(t) not in IGNORE_NAMES})
        if unknown:
            raise DataError(f"{source.labels}: classes {', '.join(map(repr, unknown[:10]))} in field "
                            f"{source.class_field!r} are not classes of the checkpoint "
                            f"({', '.join(ckpt_names)}; or 'ignore'); rename them, or pass --class-map FILE "
                            f"(lines name,id) when the field holds ids")
        return np.array([known.get(_key(t), -1) for t in text], dtype=np.int64), ckpt_names, None
    lut = _mask_lookup(ckpt, class_map)
    mapped_ids: list[int] = []
    for t in text:
        try:
            number = float(t)
        except ValueError:
            number = math.nan
        if not (number.is_integer() and 0 <= number < IGNORE_INDEX and lut.known[int(number)]):
            raise DataError(f"{source.labels}: value {t!r} of field {source.class_field!r} is not an id "
                            f"of the class map {class_map}")
        mapped = int(lut.table[int(number)])
        mapped_ids.append(-1 if mapped == IGNORE_INDEX else mapped)
    return np.array(mapped_ids, dtype=np.int64), ckpt_names, None


def _to_pixels(frame: Any, values: np.ndarray, scene: Scene, radius: float,
               source: LabelSource) -> tuple[_Features, int]:
    """Reproject to the scene's CRS; pixel boxes of the features inside the scene (others counted)."""
    try:
        frame = frame.to_crs(scene.crs)
    except Exception as exc:
        raise DataError(f"{source.labels}: cannot reproject the labels to the scene's CRS ({_gist(exc)})") from exc
    inverse = ~scene.transform
    is_point = frame.geometry.geom_type.isin(POINTS).to_numpy()
    polygons = list(frame.geometry[~is_point])
    polygon_class = values[~is_point]
    boxes = []
    for geom in polygons:
        x0, y0, x1, y1 = geom.bounds
        corners = np.array([inverse @ (x, y) for x in (x0, x1) for y in (y0, y1)])  # (col, row)
        boxes.append((np.floor(corners[:, 1].min()), np.floor(corners[:, 0].min()),
                      np.ceil(corners[:, 1].max()), np.ceil(corners[:, 0].max())))
    points, point_class = [], []
    for geom, value in zip(frame.geometry[is_point], values[is_point]):
        for part in getattr(geom, "geoms", [geom]):
            points.append(inverse @ (part.x, part.y))
            point_class.append(value)
    reach = math.ceil(radius) + 1
    for col, row in points:
        boxes.append((math.floor(row) - reach, math.floor(col) - reach,
                      math.floor(row) + reach + 1, math.floor(col) + reach + 1))
    box = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    inside = (box[:, 2] > 0) & (box[:, 0] < scene.height) & (box[:, 3] > 0) & (box[:, 1] < scene.width)
    if not inside.any():
        lx0, ly0, lx1, ly1 = frame.total_bounds
        sx0, sy0, sx1, sy1 = rasterio_bounds(scene)
        raise DataError(f"{source.labels}: the labels lie outside the scene's footprint (labels "
                        f"{lx0:.0f}, {ly0:.0f}, {lx1:.0f}, {ly1:.0f}; scene {source.scene} "
                        f"{sx0:.0f}, {sy0:.0f}, {sx1:.0f}, {sy1:.0f} in {scene.crs})")
    outside = int((~inside).sum())
    if outside:
        warnings.warn(f"{source.labels}: {outside} of {len(inside)} features lie outside the scene's "
                      f"footprint and are left out", LandmetaWarning, stacklevel=3)
    n_poly = len(polygons)
    keep_poly, keep_point = inside[:n_poly], inside[n_poly:]
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, scene.height)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, scene.width)
    features = _Features(
        polygons=[g for g, k in zip(polygons, keep_poly) if k], polygon_class=polygon_class[keep_poly],
        points=np.array(points, dtype=np.float64).reshape(-1, 2)[keep_point],
        point_class=np.array(point_class, dtype=np.int64)[keep_point],
        boxes=np.concatenate([box[:n_poly][keep_poly], box[n_poly:][keep_point]]).astype(np.int64))
    return features, outside


def rasterio_bounds(scene: Scene) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the scene in its CRS."""
    xs, ys = zip(*[scene.transform @ (c, r) for c in (0, scene.width) for r in (0, scene.height)])
    return min(xs), min(ys), max(xs), max(ys)


def _cut(scene: Scene, features: _Features, windows: list[tuple[int, int, int, int]], radius: float,
         ckpt: Checkpoint, names: list[str], classes: list[int] | None,
         progress: bool) -> tuple[SupportSet, list[tuple[int, int, int, int]], int]:
    """Read and rasterise each window; the support tensors, the windows kept, overlap pixels."""
    chip = ckpt.chip_size
    segmentation = ckpt.kind == "segmentation"
    x = torch.empty((len(windows), len(scene.bands), chip, chip), dtype=torch.float32)
    y = torch.empty((len(windows), chip, chip) if segmentation else (len(windows),), dtype=torch.long)
    mean, std = ckpt.norm_mean, ckpt.norm_std
    n_poly = len(features.polygons)
    used: list[tuple[int, int, int, int]] = []
    overlap = 0
    iterator: Any = windows
    if progress:
        from tqdm import tqdm
        iterator = tqdm(windows, desc="label windows", unit="window")
    for row, col, h, w in iterator:
        b = features.boxes
        hit = np.flatnonzero((b[:, 0] < row + h) & (b[:, 2] > row) & (b[:, 1] < col + w) & (b[:, 3] > col))
        mask, clash = _window_mask(features, hit[hit < n_poly], hit[hit >= n_poly] - n_poly, row, col, h, w,
                                   radius, scene)
        image, valid = scene.read(row, col, h, w)
        mask[~valid] = IGNORE_INDEX
        labelled = mask != IGNORE_INDEX
        if not labelled.any():
            continue
        overlap += clash
        k = len(used)
        x[k] = resize_chips(torch.from_numpy(np.nan_to_num(normalise(image, mean, std)))[None], chip,
                            mask=False)[0]
        if segmentation:
            y[k] = resize_chips(torch.from_numpy(mask)[None, None], chip, mask=True)[0, 0].long()
        else:
            y[k] = int(np.bincount(mask[labelled]).argmax())
        used.append((row, col, h, w))
    tiles = [f"r{r}c{c}" for r, c, _, _ in used]
    return SupportSet(x=x[:len(used)], y=y[:len(used)], tiles=tiles, class_names=names, classes=classes), \
        used, overlap


def _window_mask(features: _Features, polys: np.ndarray, points: np.ndarray, row: int, col: int, h: int,
                 w: int, radius: float, scene: Scene) -> tuple[np.ndarray, int]:
    """(h, w) uint8 class ids of one window (255 unlabelled and where classes overlap); overlap pixels."""
    transform = window_transform(Window(col, row, w, h), scene.transform)
    mask = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
    count = np.zeros((h, w), dtype=np.uint8)
    rr, cc = np.mgrid[0:h, 0:w]
    for cls in np.union1d(features.polygon_class[polys], features.point_class[points]):
        layer = np.zeros((h, w), dtype=bool)
        shapes = [features.polygons[i] for i in polys if features.polygon_class[i] == cls]
        if shapes:
            layer |= rasterize(shapes, out_shape=(h, w), transform=transform, fill=0, default_value=1,
                               all_touched=False, dtype=np.uint8).astype(bool)
        for i in points[features.point_class[points] == cls]:
            pc, pr = features.points[i] - (col, row)
            disc = (rr + 0.5 - pr) ** 2 + (cc + 0.5 - pc) ** 2 <= radius ** 2
            r, c = math.floor(pr), math.floor(pc)
            if 0 <= r < h and 0 <= c < w:
                disc[r, c] = True  # the point's own pixel, whatever the radius
            layer |= disc
        count += layer
        mask[layer] = cls
    clash = count > 1
    mask[clash] = IGNORE_INDEX
    return mask, int(clash.sum())


def _key(name: str) -> str:
    return name.strip().lower()


def _gist(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
