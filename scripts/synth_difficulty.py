"""How hard is the synthetic SEN12MS data? A per-pixel random forest on the 15 S1+S2 values.

Regions are split into folds; for each fold a forest trained on the pooled pixels of the other
folds' regions is scored on each held-out region (pixel accuracy, mIoU over the classes present
there). For contrast, a forest trained on a few of the held-out region's own patches is scored on
the same evaluation patches (the region's remaining ones). Prints a table and a summary. For the
DeepGlobe part: how well k-means on simple colour statistics of each tile recovers the styles
(pseudo-regions) the tiles were drawn from (adjusted Rand index).

    python scripts/synth_difficulty.py --root /tmp/synth        # an existing `landmeta synth` output
    python scripts/synth_difficulty.py --scale default --seed 0  # generate into a temporary folder
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import adjusted_rand_score

from landmeta.classes import IGNORE_INDEX, igbp_lookup


def load_pixels(root: Path, per_patch: int, rng: np.random.Generator
                ) -> tuple[dict[str, list[tuple[np.ndarray, np.ndarray]]], dict[str, list[int]]]:
    """region -> list over patches of (features (n, 15), simplified labels (n,)), pixels subsampled;
    and region -> majority classes of its 128-px quadrant chips."""
    table = igbp_lookup()
    regions: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    quadrants: dict[str, list[int]] = defaultdict(list)
    for s2_path in sorted((root / "sen12ms").glob("ROIs*/s2_*/*.tif")):
        season, folder = s2_path.parent.parent.name, s2_path.parent.name
        scene = folder.split("_")[1]
        s1_path = s2_path.parent.parent / f"s1_{scene}" / s2_path.name.replace("_s2_", "_s1_")
        lc_path = s2_path.parent.parent / f"lc_{scene}" / s2_path.name.replace("_s2_", "_lc_")
        with rasterio.open(s2_path) as a, rasterio.open(s1_path) as b, rasterio.open(lc_path) as c:
            s2, s1, lab = a.read(), b.read(), table[c.read(1)]
        valid = np.flatnonzero(((s2[1] > 0) & (lab != IGNORE_INDEX)).ravel())
        pick = rng.choice(valid, size=min(per_patch, len(valid)), replace=False)
        x = np.concatenate([s2.reshape(13, -1)[:, pick] / 10000.0, s1.reshape(2, -1)[:, pick]]).T
        regions[f"{season}_{scene}"].append((x.astype(np.float32), lab.ravel()[pick]))
        h, w = lab.shape
        for q in (lab[:h // 2, :w // 2], lab[:h // 2, w // 2:], lab[h // 2:, :w // 2], lab[h // 2:, w // 2:]):
            quadrants[f"{season}_{scene}"].append(int(np.bincount(q.ravel(), minlength=256)[:255].argmax()))
    return regions, quadrants


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """Pixel accuracy and mIoU over the classes present in y_true."""
    ious = []
    for c in np.unique(y_true):
        inter = np.sum((y_true == c) & (y_pred == c))
        union = np.sum((y_true == c) | (y_pred == c))
        ious.append(inter / union)
    return float(np.mean(y_true == y_pred)), float(np.mean(ious))


def forest(x: np.ndarray, y: np.ndarray, seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=60, min_samples_leaf=2, n_jobs=2, random_state=seed).fit(x, y)


def stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def deepglobe_style_recovery(root: Path, seed: int) -> float:
    """Adjusted Rand index between k-means clusters of per-tile colour statistics and the styles."""
    tiles = json.loads((root / "synth.json").read_text())["deepglobe_tiles"]
    feats = []
    for t in tiles:
        rgb = np.asarray(Image.open(root / "deepglobe" / f"{t['tile']}_sat.jpg")).reshape(-1, 3) / 255.0
        feats.append(np.concatenate([rgb.mean(0), rgb.std(0), np.percentile(rgb, [10, 50, 90], axis=0).ravel()]))
    x = np.array(feats)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    styles = [t["style"] for t in tiles]
    clusters = KMeans(len(set(styles)), n_init=10, random_state=seed).fit_predict(x)
    return float(adjusted_rand_score(styles, clusters))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="a `landmeta synth` output folder")
    parser.add_argument("--scale", default="default", help="scale to generate when --root is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--per-patch", type=int, default=150, help="pixels sampled per patch")
    parser.add_argument("--own", type=int, nargs="+", default=[1, 2, 5],
                        help="numbers of the held-out region's own patches used for the local forests")
    args = parser.parse_args()
    root = args.root
    if root is None:
        from landmeta.synth import generate
        root = generate(Path(tempfile.mkdtemp()) / "synth", scale=args.scale, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    data, quadrants = load_pixels(root, args.per_patch, rng)
    names = sorted(data)
    for kq in (2, 4, 10):
        eligible = [int(np.sum(np.bincount(q, minlength=10) > kq)) for q in quadrants.values()]
        print(f"k+q = {kq:>2}: regions with >= 4 classes of more than {kq} quadrant chips: "
              f"{sum(e >= 4 for e in eligible)}/{len(eligible)} (eligible classes per region: median "
              f"{np.median(eligible):.0f}, min {min(eligible)}, max {max(eligible)})")
    folds = np.array_split(rng.permutation(len(names)), args.folds)
    n_eval = min(len(p) for p in data.values()) - max(args.own)
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    print(f"{len(names)} regions, {args.folds} folds over regions, {args.per_patch} pixels per patch, "
          f"evaluation on each region's last {n_eval} patches")
    print(f"{'region':<26}{'classes':>8}  pooled acc/mIoU  " + "  ".join(f"own-{k} acc/mIoU" for k in args.own))
    for fold in folds:
        held = {names[i] for i in fold}
        pooled = forest(*stack([p for n in names if n not in held for p in data[n]]), args.seed)
        for name in sorted(held):
            patches = data[name]
            x_eval, y_eval = stack(patches[-n_eval:])
            row = [scores(y_eval, pooled.predict(x_eval))]
            results["pooled"].append(row[0])
            for k in args.own:
                local = forest(*stack(patches[:k]), args.seed)
                row.append(scores(y_eval, local.predict(x_eval)))
                results[f"own-{k}"].append(row[-1])
            cells = "  ".join(f"{a:>7.3f}/{m:.3f}  " for a, m in row)
            print(f"{name:<26}{len(np.unique(y_eval)):>8}  {cells}")
    print("\nmean over regions (95% CI = 1.96 std / sqrt(n)):")
    for method, vals in results.items():
        v = np.array(vals)
        ci = 1.96 * v.std(0, ddof=1) / np.sqrt(len(v))
        print(f"  {method:<8} pixel accuracy {v[:, 0].mean():.3f} ± {ci[0]:.3f}   mIoU {v[:, 1].mean():.3f} ± {ci[1]:.3f}")
    print(f"\nDeepGlobe: k-means on tile colour statistics vs styles, adjusted Rand index "
          f"{deepglobe_style_recovery(root, args.seed):.3f}")


if __name__ == "__main__":
    main()
