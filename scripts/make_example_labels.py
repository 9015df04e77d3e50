"""Write data/examples/bigearthnet-labels.gpkg: polygons and points drawn over a real BigEarthNet patch.

The vertices below were placed by eye on a true-colour (B4/B3/B2) quick-look of patch
S2B_MSIL2A_20180421T114349_41_4 (Ireland, 21 April 2018; its BigEarthNet labels: non-irrigated
arable land, pastures, broad-leaved forest), each inside an area of one colour: bare or freshly
sown fields (Cropland), bright green pasture (Grassland), dark green woodland (Forest), and points
on bright buildings of the village along the road (Urban/Built-up). They are in patch pixels
(column, row), converted here to the patch's UTM coordinates and saved in EPSG:4326, so the file
exercises the reprojection to the scene's CRS. Class names are SEN12MS's simplified classes.

    python scripts/make_example_labels.py [--patches /work/shared/data/bigearthnet-s2/S2_patches]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import rasterio
from shapely.geometry import Point, Polygon

PATCH = "S2B_MSIL2A_20180421T114349_41_4"
OUT = Path(__file__).resolve().parents[1] / "data" / "examples" / "bigearthnet-labels.gpkg"

POLYGONS = [  # (class, [(column, row), ...]) in the patch's 10-m pixels
    ("Cropland", [(4, 12), (14, 4), (22, 12), (12, 20)]),
    ("Cropland", [(30, 14), (38, 11), (42, 18), (33, 22)]),
    ("Cropland", [(37, 36), (48, 30), (53, 40), (42, 46)]),
    ("Cropland", [(44, 62), (55, 58), (58, 67), (47, 70)]),
    ("Cropland", [(88, 1), (108, 1), (100, 14)]),
    ("Cropland", [(92, 108), (112, 94), (118, 96), (118, 118), (92, 118)]),
    ("Grassland", [(30, 3), (37, 2), (40, 9), (33, 12)]),
    ("Grassland", [(67, 22), (81, 20), (83, 30), (69, 33)]),
    ("Grassland", [(72, 55), (80, 52), (84, 62), (75, 66)]),
    ("Grassland", [(4, 44), (16, 42), (18, 56), (6, 58)]),
    ("Grassland", [(96, 22), (116, 18), (117, 34), (100, 38)]),
    ("Grassland", [(20, 48), (30, 42), (36, 52), (26, 58)]),
    ("Forest", [(86, 62), (104, 56), (110, 70), (92, 80)]),
    ("Forest", [(76, 78), (90, 86), (84, 96), (74, 90)]),
    ("Forest", [(2, 100), (12, 98), (14, 116), (3, 117)]),
]
POINTS = [("Urban/Built-up", (63.5, 52.5)), ("Urban/Built-up", (105.5, 44.5)),
          ("Urban/Built-up", (24.5, 92.5)), ("Urban/Built-up", (67.5, 100.5))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=Path, default=Path("/work/shared/data/bigearthnet-s2/S2_patches"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with rasterio.open(args.patches / PATCH / f"{PATCH}_B02.tif") as src:
        transform, crs = src.transform, src.crs
    geoms = [Polygon([transform @ (c, r) for c, r in pts]) for _, pts in POLYGONS]
    geoms += [Point(*(transform @ xy)) for _, xy in POINTS]
    names = [c for c, _ in POLYGONS] + [c for c, _ in POINTS]
    frame = gpd.GeoDataFrame({"class": names}, geometry=geoms, crs=crs).to_crs("EPSG:4326")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(args.out, layer="labels", driver="GPKG")
    print(f"{args.out}: {len(POLYGONS)} polygons, {len(POINTS)} points over {PATCH}")


if __name__ == "__main__":
    main()
