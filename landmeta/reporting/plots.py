"""Figures (matplotlib, no display needed): shot curves with 95% CI bands, qualitative examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from landmeta.classes import IGNORE_INDEX
from landmeta.io import atomic_path
from landmeta.text import mpl_text


def save_figure(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def shot_curves(summary: pd.DataFrame, metric: str, methods: list[str], path: Path, title: str = "") -> Path:
    """One line per method over shots (mean) with a shaded 95% CI band."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    rows = summary[summary["metric"] == metric]
    for method in methods:
        r = rows[rows["method"] == method].sort_values("shots")
        if r.empty:
            continue
        x, m, ci = r["shots"].to_numpy(), r["mean"].to_numpy(), np.nan_to_num(r["ci"].to_numpy())
        line, = ax.plot(x, m, marker="o", label=mpl_text(method))
        ax.fill_between(x, m - ci, m + ci, color=line.get_color(), alpha=0.18, linewidth=0)
    shots = sorted(rows["shots"].unique())
    ax.set_xticks(shots)
    ax.set_xlabel("shots (labelled samples per class / support tiles)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} on held-out regions (mean ± 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def _legend(fig: Figure, class_ids: list[int], names: list[str], colors: np.ndarray) -> None:
    handles = [Patch(facecolor=colors[c] / 255.0, edgecolor="k", label=mpl_text(names[c])) for c in class_ids]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))


def colour_mask(mask: np.ndarray, colors: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB; ignored pixels dark grey."""
    out = np.full(mask.shape + (3,), 40, np.uint8)
    known = mask != ignore_index
    out[known] = colors[np.clip(mask[known], 0, len(colors) - 1)]
    return out


def segmentation_example(ex: dict, names: list[str], colors: np.ndarray, path: Path,
                         ignore_index: int = IGNORE_INDEX, max_rows: int = 2) -> Path:
    """Rows of query chips: image, ground truth, then each method's prediction; a support chip and its
    mask first (0-shot: none)."""
    methods = list(ex["predictions"])
    n = min(max_rows, len(ex["query_rgb"]))
    has_support = len(ex["support_rgb"]) > 0
    cols = 2 + 2 * has_support + len(methods)
    fig = Figure(figsize=(1.9 * cols, 2.0 * n + 0.6))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        j = min(i, len(ex["support_rgb"]) - 1)
        panels = [(ex["support_rgb"][j], "support image"),
                  (colour_mask(ex["support_y"][j], colors, ignore_index), "support mask")] if has_support else []
        panels += [(ex["query_rgb"][i], "query image"),
                  (colour_mask(ex["query_y"][i], colors, ignore_index), "ground truth")]
        panels += [(colour_mask(ex["predictions"][m][i], colors, ignore_index), m) for m in methods]
        for ax, (img, label) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(mpl_text(label), fontsize=8)
    present = sorted({int(c) for c in np.unique(ex["query_y"][:n]) if c != ignore_index} |
                     {int(c) for m in methods for c in np.unique(ex["predictions"][m][:n]) if c != ignore_index})
    _legend(fig, present, names, colors)
    fig.suptitle(f"region {mpl_text(ex['region'])} — {ex['shots']}-shot task {ex['task']}", fontsize=9)
    return save_figure(fig, path)


def _framed_chips(fig: Figure, cells, images: np.ndarray, labels: np.ndarray, colors: np.ndarray,
                  title: str) -> None:
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(cell)
        ax.set_xticks([]), ax.set_yticks([])
        if i >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[i], interpolation="nearest")
        for spine in ax.spines.values():
            spine.set_edgecolor(colors[labels[i]] / 255.0)
            spine.set_linewidth(4)
        if i == 0:
            ax.set_title(title, fontsize=8, loc="left")


def classification_example(ex: dict, names: list[str], colors: np.ndarray, path: Path, max_cols: int = 8) -> Path:
    """Support chips and query chips (framed by their true class colour) above a matrix of each
    method's predicted class per query chip (cell colour = predicted class, × = wrong)."""
    methods = list(ex["predictions"])
    n = min(max_cols, len(ex["query_rgb"]))
    k = min(max_cols, len(ex["support_rgb"]))
    rows = [1.3] * (k > 0) + [1.3, 0.35 * (len(methods) + 1)]
    fig = Figure(figsize=(1.3 * max(n, k) + 1.6, sum(rows) + 0.8))
    grid = fig.add_gridspec(len(rows), max(n, k), height_ratios=rows)
    truth = np.asarray(ex["query_y"][:n])
    if k:
        _framed_chips(fig, [grid[0, i] for i in range(max(n, k))], ex["support_rgb"][:k],
                      np.asarray(ex["support_y"][:k]), colors, "support")
    _framed_chips(fig, [grid[int(k > 0), i] for i in range(n)], ex["query_rgb"][:n], truth, colors, "query")
    ax = fig.add_subplot(grid[-1, :n])
    labels = np.stack([truth] + [np.asarray(ex["predictions"][m][:n]) for m in methods])
    ax.imshow(colors[labels], aspect="auto", interpolation="nearest")
    for r in range(1, labels.shape[0]):
        for c in range(n):
            if labels[r, c] != truth[c]:
                ax.text(c, r, "×", ha="center", va="center", fontsize=11, color="k")
    ax.set_yticks(range(labels.shape[0]), ["ground truth"] + [mpl_text(m) for m in methods], fontsize=8)
    ax.set_xticks([])
    _legend(fig, sorted({int(c) for c in labels.ravel()} | {int(c) for c in np.asarray(ex["support_y"][:k])}),
            names, colors)
    fig.suptitle(f"region {mpl_text(ex['region'])} — {ex['shots']}-shot task {ex['task']}", fontsize=9)
    return save_figure(fig, path)
