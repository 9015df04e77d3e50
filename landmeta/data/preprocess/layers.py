"""The store's regions.gpkg: layer `tiles` (one outline per chip, appended in batches while the tiles
are recorded, so memory does not grow with the dataset) and layer `regions` (one footprint per
region with its split, season, cluster and class counts, written once the split is known).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from landmeta.data.preprocess.summary import Region

TILE_BATCH = 4096  # rows of the `tiles` layer written at a time


class TileLayer:
    """The `tiles` layer of regions.gpkg, appended in batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.started = False

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= TILE_BATCH:
            self.flush()

    def flush(self) -> None:
        import geopandas as gpd
        import pyogrio
        if not self.rows:
            return
        gdf = gpd.GeoDataFrame(self.rows, geometry="geometry", crs="EPSG:4326")
        pyogrio.write_dataframe(gdf, self.path, layer="tiles", driver="GPKG", geometry_type="Polygon",
                                append=self.started)
        self.started = True
        self.rows = []


def write_regions(path: Path, names: list[str], regions: dict[str, Region], split: dict[str, str],
                  clusters: np.ndarray, class_names: list[str]) -> None:
    """Write the `regions` layer: a row per region of `names`, footprint = union of its tiles' outlines."""
    import geopandas as gpd
    import pyogrio
    from shapely import union_all
    from shapely.geometry import MultiPolygon
    rows = []
    for r, cluster in zip(names, clusters):
        info = regions[r]
        shape = union_all(info.footprints) if info.footprints else None
        if shape is not None and shape.geom_type == "Polygon":
            shape = MultiPolygon([shape])
        counts = {class_names[k]: int(v) for k, v in sorted(info.labels.items()) if 0 <= k < len(class_names)}
        rows.append({"region": r, "split": split[r], "season": info.season, "cluster": int(cluster),
                     "n_chips": info.n_chips, "class_counts": json.dumps(counts), "geometry": shape})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    pyogrio.write_dataframe(gdf, path, layer="regions", driver="GPKG", geometry_type="MultiPolygon")
