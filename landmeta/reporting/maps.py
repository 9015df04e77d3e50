"""A world map of held-out regions, each point coloured by the reference method's gain over a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from landmeta.reporting.plots import save_figure


def region_gain(results: pd.DataFrame, regions: pd.DataFrame, reference: str, baseline: str,
                metric: str) -> pd.DataFrame:
    """Per region: mean over its tasks and shot counts ≥ 1 of reference − baseline, with lon/lat."""
    r = results[results["shots"] >= 1]
    pair = r[r["method"] == reference].merge(r[r["method"] == baseline], on=["task", "shots", "region"],
                                             suffixes=("_ref", "_base"))
    pair["gain"] = pair[f"{metric}_ref"] - pair[f"{metric}_base"]
    gain = pair.groupby("region", as_index=False).agg(gain=("gain", "mean"), tasks=("task", "nunique"))
    return gain.merge(regions[["region", "lon", "lat"]], on="region", how="left")


def gain_map(gain: pd.DataFrame, path: Path, reference: str, baseline: str, metric: str) -> Path | None:
    """Equirectangular map with a 30° graticule; None when no region has a location."""
    located = gain.dropna(subset=["lon", "lat"])
    if located.empty:
        return None
    fig = Figure(figsize=(9, 4.9))
    ax = fig.add_subplot()
    lon_pad = max(10.0, float(np.ptp(located["lon"])) * 0.15)
    lat_pad = max(8.0, float(np.ptp(located["lat"])) * 0.15)
    ax.set_xlim(max(-180, located["lon"].min() - lon_pad), min(180, located["lon"].max() + lon_pad))
    ax.set_ylim(max(-90, located["lat"].min() - lat_pad), min(90, located["lat"].max() + lat_pad))
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
            ax.annotate(str(row.region), (row.lon, row.lat), fontsize=6, xytext=(4, 4), textcoords="offset points")
    fig.colorbar(points, ax=ax, shrink=0.8, label=f"{metric}: {reference} − {baseline}")
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(f"held-out regions: gain of {reference} over {baseline} (mean over tasks, shots ≥ 1)", fontsize=9)
    return save_figure(fig, path)
