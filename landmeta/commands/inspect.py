"""`landmeta inspect data/NAME`: regions per split, classes per region, chips per class, a map."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from landmeta.data.store import ChipStore
from landmeta.vocab import SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `inspect` sub-command to the parser."""
    parser = sub.add_parser("inspect", help="summarise a chip store and map its regions")
    parser.add_argument("store", type=Path, help="chip store folder (from `landmeta preprocess`)")
    parser.add_argument("--out", type=Path, help="folder for regions_map.png (default: the store)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `landmeta inspect`; returns the exit status."""
    store = ChipStore.open(args.store)
    m = store.manifest
    print(f"{store.path}: source {m['source']}, {len(store)} chips of {store.chip_size} px, "
          f"bands {' '.join(store.bands)}, kinds {', '.join(store.kinds)}")
    print(f"skipped inputs: {len(m.get('skipped', []))}; warnings: {len(m.get('warnings', []))}")

    print("\nregions per split")
    for split in SPLITS:
        names = store.regions_in(split)
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        print(f"  {split:5s} {len(names):5d}  {shown}")

    chips = store.chips.assign(split=store.chips["region"].map(store.regions.set_index("region")["split"]))
    labelled = chips[chips["label"] >= 0]
    class_of = labelled["label"].map(dict(enumerate(store.class_names)))
    table = pd.crosstab(labelled["region"], class_of)
    print("\nchips per class in each region (majority label)")
    print(table.to_string(max_rows=40))
    per_class = pd.crosstab(class_of, labelled["split"])
    print("\nchips per class and split")
    print(per_class.to_string())

    out = args.out or store.path
    path = plot_region_map(store.regions, out / "regions_map.png")
    print(f"\nmap: {path}" if path else "\nmap: no region has a location (no georeference)")
    return 0


def plot_region_map(regions: pd.DataFrame, path: Path) -> Path | None:
    """Region centroids on plain lon/lat axes with a graticule, coloured by split; None if no location."""
    located = regions.dropna(subset=["lon", "lat"])
    if located.empty:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landmeta.io import atomic_path
    colors = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for split, color in colors.items():
        sel = located[located["split"] == split]
        ax.scatter(sel["lon"], sel["lat"], s=18, c=color, label=f"{split} ({len(sel)})", edgecolors="k",
                   linewidths=0.3)
    lon0, lon1 = located["lon"].min(), located["lon"].max()
    lat0, lat1 = located["lat"].min(), located["lat"].max()
    pad = max(1.0, 0.1 * max(lon1 - lon0, lat1 - lat0))
    ax.set_xlim(max(-180, lon0 - pad), min(180, lon1 + pad))
    ax.set_ylim(max(-90, lat0 - pad), min(90, lat1 + pad))
    ax.set_aspect(1.0 / max(0.1, np.cos(np.radians((lat0 + lat1) / 2))))
    ax.grid(True, linestyle=":", linewidth=0.6)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(f"{len(located)} regions by split (EPSG:4326)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
