"""A world map of held-out regions, each point coloured by the reference method's gain over a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from landmeta.reporting.plots import save_figure
from landmeta.text import mpl_text


def region_gain(results: pd.DataFrame, regions: pd.DataFrame, reference: str, baseline: str,
                metric: str) -> pd.DataFrame:
    """Per region: mean over its tasks and shot counts ≥ 1 of reference − baseline, with lon/lat."""
    r = results[results["shots"] >= 1]
    pair = r[r["method"] == reference].merge(r[r["method"] == baseline], on=["task", "shots", "region"],
                                             suffixes=("_ref", "_base"))
    pair["gain"] = pair[f"{metric}_ref"] - pair[f"{metric}_base"]
    gain = pair.groupby("region", as_index=False).agg(gain=("gain", "mean"), tasks=("task", "nunique"))
    return gain.merge(regions[["region", "lon", "lat"]], on="region", how="left")


def land_outlines():
    """Country outlines (Natural Earth 1:110m, public domain) from the copy bundled with pyogrio, or
    None when that copy is absent; the map then shows the graticule only. Nothing is downloaded."""
    try:
        import geopandas as gpd
        import pyogrio
        path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
        return gpd.read_file(path) if path.is_file() else None
    except Exception:  # an unreadable optional basemap only drops the outlines
        return None


def gain_map(gain: pd.DataFrame, path: Path, reference: str, baseline: str, metric: str) -> Path | None:
    """World map (equirectangular, 30° graticule, country outlines when available); None when no
    region has a location."""
    located = gain.dropna(subset=["lon", "lat"])
    if located.empty:
        return None
    fig = Figure(figsize=(9, 4.9))
    ax = fig.add_subplot()
    land = land_outlines()
    if land is not None:
        land.plot(ax=ax, color="#e9e9e4", edgecolor="0.65", linewidth=0.3, zorder=1)
        ax.text(0.005, 0.005, "outlines: Natural Earth", transform=ax.transAxes, fontsize=5, color="0.5")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-180, 181, 30))
    ax.set_yticks(np.arange(-90, 91, 30))
    ax.grid(color="0.75", linewidth=0.6)
    ax.set_facecolor("#f4f7fb")
    limit = max(1e-6, float(np.abs(located["gain"]).max()))
    points = ax.scatter(located["lon"], located["lat"], c=located["gain"], cmap="RdBu",
                        norm=TwoSlopeNorm(0.0, -limit, limit), s=70, edgecolors="k", linewidths=0.6, zorder=3)
    if len(located) <= 40:
        for row in located.itertuples():
            east = row.lon > 90  # labels of eastern points go to their left, inside the frame
            ax.annotate(mpl_text(row.region), (row.lon, row.lat), fontsize=6, xytext=(-4 if east else 4, 4),
                        textcoords="offset points", ha="right" if east else "left")
    fig.colorbar(points, ax=ax, shrink=0.8, label=mpl_text(f"{metric}: {reference} − {baseline}"))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(mpl_text(f"held-out regions: gain of {reference} over {baseline} (mean over tasks, shots ≥ 1)"),
                 fontsize=9)
    return save_figure(fig, path)
