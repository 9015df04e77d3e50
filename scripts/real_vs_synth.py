"""How does the synthetic default look next to real SEN12MS? Per-class colour and texture statistics.

Real side: the 128-px true-colour PNG quadrants of the dev set (scenes/<scene>/<Class>/<patch>.png),
class from the folder name. Synthetic side: the S2 patches of a `landmeta synth` output, bands
B04/B03/B02, cut into 128-px quadrants, each labelled by the majority simplified class of its
mask (quadrants touching nodata are skipped), rendered to 8-bit RGB with the real PNGs' stretch.

Stretch: every real quadrant has a flat histogram over its three channels pooled (each of 8 value
bins holds 12.0-12.9 % of the values in the median image, max 255 in every image and min 0 in
over 90 %, median value 128-132 in 80 %), i.e. a per-chip histogram equalisation of the three channels together,
which keeps the colour ranks between channels. `--stretch equalize` (the default) does the same
to each synthetic chip; `percentile` (per-chip 2-98 % linear, channels together) and `fixed`
(reflectance 0-0.3 linear) are there to check that a conclusion does not hang on the stretch.

Statistics per chip, on the 8-bit values (0-255), averaged over the three channels where per
channel, then averaged over the chips of a class:
  mean RGB; between-chip spread (std over chips of the chip mean, mean over channels);
  within-chip std; local variance (3x3 window); gradient energy (mean squared Sobel magnitude);
  gradient / variance (gradient energy over the chip's variance, per channel: roughness that no
  linear stretch changes; 24 for white noise, near 0 for smooth fields);
  spectral spread (std over the three channels per pixel); HF/LF (power of the grey image above
  1/4 cycle/px over power below 1/16 cycle/px, Hann window).
Prints Markdown tables: real vs synthetic per class present in both, ratios synth/real, and the
largest gaps ranked by |log ratio|.

    python scripts/real_vs_synth.py --real ../shared/data/sen12ms-rgb-dev              # tiny, seed 0
    python scripts/real_vs_synth.py --real ../shared/data/sen12ms-rgb-dev --synth DIR  # an existing output
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from scipy import ndimage

from landmeta.classes import IGNORE_INDEX, SIMPLIFIED_CLASSES, igbp_lookup

CHIP = 128
TEXTURE = ["between_spread", "within_std", "local_var", "grad_energy", "rel_grad", "spectral_spread", "hf_lf"]
LABELS = {
    "between_spread": "between-chip spread", "within_std": "within-chip std", "local_var": "local var 3x3",
    "grad_energy": "gradient energy",
    "rel_grad": "gradient / variance", "spectral_spread": "spectral spread", "hf_lf": "HF/LF power",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())[:4]


CLASS_OF_KEY = {_key(n): i for i, n in enumerate(SIMPLIFIED_CLASSES)}  # forests -> fore -> Forest, ...


def class_of_folder(name: str) -> int | None:
    """Simplified class id of a real class folder (Forests, Urban_Build-up, ...), None if unknown."""
    return CLASS_OF_KEY.get(_key(name))


# ---------------------------------------------------------------- rendering

def equalize(rgb: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the three channels pooled: (H, W, 3) float -> uint8, min 0, max 255."""
    vals, inv, counts = np.unique(rgb.ravel(), return_inverse=True, return_counts=True)
    cdf = np.cumsum(counts)
    lo = cdf[0]
    if cdf[-1] == lo:
        return np.zeros(rgb.shape, np.uint8)
    out = np.round((cdf - lo) / (cdf[-1] - lo) * 255.0)
    return out[inv].reshape(rgb.shape).astype(np.uint8)


def stretch(rgb: np.ndarray, how: str) -> np.ndarray:
    """Reflectance (H, W, 3) -> 8-bit display values."""
    if how == "equalize":
        return equalize(rgb)
    if how == "percentile":
        lo, hi = np.percentile(rgb, [2, 98])
        return np.round(np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    if how == "fixed":
        return np.round(np.clip(rgb / 0.3, 0, 1) * 255).astype(np.uint8)
    raise ValueError(how)


def real_chips(root: Path) -> dict[int, list[tuple[str, np.ndarray]]]:
    """class id -> [(scene, (128, 128, 3) uint8)] of the real dev quadrants."""
    out: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
    skipped: set[str] = set()
    for png in sorted((root / "scenes").glob("*/*/*.png")):
        cid = class_of_folder(png.parent.name)
        if cid is None:
            skipped.add(png.parent.name)
            continue
        out[cid].append((png.parent.parent.name, np.asarray(Image.open(png).convert("RGB"))))
    if skipped:
        print(f"real: class folders not mapped to a simplified class, skipped: {', '.join(sorted(skipped))}")
    return out


def synth_chips(root: Path, how: str, min_purity: float = 0.0
                ) -> tuple[dict[int, list[tuple[str, np.ndarray]]], np.ndarray]:
    """class id -> [(region, (128, 128, 3) uint8)] from the S2 patches of a synth output, chips whose
    majority class covers at least `min_purity` of them; and the purity of every chip without nodata."""
    table = igbp_lookup()
    out: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
    purity = []
    for s2_path in sorted((root / "sen12ms").glob("ROIs*/s2_*/*.tif")):
        scene = s2_path.parent.name.split("_")[1]
        lc_path = s2_path.parent.parent / f"lc_{scene}" / s2_path.name.replace("_s2_", "_lc_")
        with rasterio.open(s2_path) as a, rasterio.open(lc_path) as b:
            rgb = a.read([4, 3, 2]).transpose(1, 2, 0).astype(np.float64) / 10000.0  # B04, B03, B02
            lab = table[b.read(1)]
        h, w = lab.shape
        for y in range(0, h - CHIP + 1, CHIP):
            for x in range(0, w - CHIP + 1, CHIP):
                q, lq = rgb[y:y + CHIP, x:x + CHIP], lab[y:y + CHIP, x:x + CHIP]
                if (q == 0).all(-1).any():  # nodata corner
                    continue
                counts = np.bincount(lq.ravel(), minlength=256)[:IGNORE_INDEX]
                cid = int(counts.argmax())
                purity.append(counts[cid] / lq.size)
                if purity[-1] < min_purity:
                    continue
                out[cid].append((f"{s2_path.parent.parent.name}_{scene}", stretch(q, how)))
    return out, np.asarray(purity)


# ---------------------------------------------------------------- statistics

def _hf_lf_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.fft.fftfreq(n)
    r = np.hypot(f[:, None], f[None, :])
    return r > 0.25, (r > 0) & (r <= 1.0 / 16)


HF, LF = _hf_lf_masks(CHIP)
HANN = np.outer(np.hanning(CHIP), np.hanning(CHIP))


def chip_stats(img: np.ndarray) -> dict[str, np.ndarray | float]:
    """Statistics of one (H, W, 3) uint8 chip, on values 0-255."""
    x = img.astype(np.float64)
    m = ndimage.uniform_filter(x, size=(3, 3, 1), mode="reflect")
    m2 = ndimage.uniform_filter(x * x, size=(3, 3, 1), mode="reflect")
    local_var = float(np.clip(m2 - m * m, 0, None)[1:-1, 1:-1].mean())
    grad = rel = 0.0
    for c in range(3):
        gx, gy = ndimage.sobel(x[..., c], axis=1), ndimage.sobel(x[..., c], axis=0)
        e = float((gx * gx + gy * gy)[1:-1, 1:-1].mean())
        grad += e / 3
        rel += e / max(float(x[..., c].var()), 1e-6) / 3
    grey = x.mean(-1)
    power = np.abs(np.fft.fft2((grey - grey.mean()) * HANN)) ** 2
    return {
        "mean_rgb": x.mean((0, 1)),
        "within_std": float(x.std((0, 1)).mean()),
        "local_var": local_var,
        "grad_energy": grad,
        "rel_grad": rel,
        "spectral_spread": float(x.std(-1).mean()),
        "hf_lf": float(power[HF].sum() / max(power[LF].sum(), 1e-12)),
    }


def class_stats(chips: list[tuple[str, np.ndarray]]) -> dict:
    per = [chip_stats(img) for _, img in chips]
    means = np.stack([p["mean_rgb"] for p in per])
    out = {"n": len(chips), "scenes": len({s for s, _ in chips}), "mean_rgb": means.mean(0),
           "between_spread": float(means.std(0).mean()) if len(chips) > 1 else float("nan")}
    for k in ("within_std", "local_var", "grad_energy", "rel_grad", "spectral_spread", "hf_lf"):
        out[k] = float(np.mean([p[k] for p in per]))
    return out


# ---------------------------------------------------------------- report

def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def report(real: dict[int, dict], synth: dict[int, dict], stretch_name: str) -> dict:
    shared = [c for c in range(len(SIMPLIFIED_CLASSES)) if c in real and c in synth]
    print(f"\nStretch of the synthetic chips: {stretch_name}. Values on the 8-bit scale (0-255); "
          "local variance and gradient energy are squared quantities.\n")
    head = "| class | source | chips (scenes) | mean R, G, B | " + " | ".join(LABELS[k] for k in TEXTURE) + " |"
    print(head)
    print("|" + "---|" * (4 + len(TEXTURE)))
    ratios: dict[tuple[int, str], float] = {}
    for c in shared:
        name = SIMPLIFIED_CLASSES[c]
        for src, s in (("real", real[c]), ("synth", synth[c])):
            rgb = ", ".join(f"{v:.0f}" for v in s["mean_rgb"])
            print(f"| {name} | {src} | {s['n']} ({s['scenes']}) | {rgb} | "
                  + " | ".join(_fmt(s[k]) for k in TEXTURE) + " |")
        row = []
        for k in TEXTURE:
            r = synth[c][k] / real[c][k] if real[c][k] > 0 else float("nan")
            ratios[(c, k)] = r
            row.append(f"**{r:.2f}**")
        d = float(np.linalg.norm(synth[c]["mean_rgb"] - real[c]["mean_rgb"]))
        ratios[(c, "colour")] = d
        print(f"| {name} | synth/real | | Δ = {d:.0f} | " + " | ".join(row) + " |")
    only = [SIMPLIFIED_CLASSES[c] for c in sorted(set(real) ^ set(synth))]
    if only:
        print(f"\nIn one source only (not compared): {', '.join(only)}")

    print("\nPer statistic over the classes in both (synth/real): geometric mean, range, classes below 1\n")
    print("| statistic | geometric mean | min | max | classes with synth < real |")
    print("|---|---|---|---|---|")
    summary = {}
    for k in TEXTURE:
        rs = np.array([ratios[(c, k)] for c in shared])
        rs = rs[np.isfinite(rs)]
        g = float(np.exp(np.log(rs).mean()))
        summary[k] = {"geomean": g, "min": float(rs.min()), "max": float(rs.max()),
                      "below": int((rs < 1).sum()), "n": len(rs)}
        print(f"| {LABELS[k]} | {g:.2f} | {rs.min():.2f} | {rs.max():.2f} | {(rs < 1).sum()} of {len(rs)} |")
    cd = [ratios[(c, "colour")] for c in shared]
    print(f"| mean-colour distance Δ (8-bit units) | mean {np.mean(cd):.0f} | {min(cd):.0f} | {max(cd):.0f} | |")

    print("\nLargest gaps (class, statistic), ranked by |log(synth/real)|\n")
    print("| rank | class | statistic | synth/real |")
    print("|---|---|---|---|")
    ranked = sorted(((abs(np.log(v)), c, k, v) for (c, k), v in ratios.items()
                     if k != "colour" and np.isfinite(v) and v > 0), reverse=True)
    for i, (_, c, k, v) in enumerate(ranked[:12], 1):
        print(f"| {i} | {SIMPLIFIED_CLASSES[c]} | {LABELS[k]} | {v:.2f} |")
    return {"stretch": stretch_name, "classes": [SIMPLIFIED_CLASSES[c] for c in shared], "summary": summary,
            "ratios": {f"{SIMPLIFIED_CLASSES[c]}:{k}": v for (c, k), v in ratios.items()},
            "real": {SIMPLIFIED_CLASSES[c]: _plain(real[c]) for c in shared},
            "synth": {SIMPLIFIED_CLASSES[c]: _plain(synth[c]) for c in shared}}


def _plain(s: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("../shared/data/sen12ms-rgb-dev"),
                        help="the real dev set (holds scenes/<scene>/<Class>/*.png)")
    parser.add_argument("--synth", type=Path, help="an existing `landmeta synth` output")
    parser.add_argument("--scale", default="tiny", help="scale to generate when --synth is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stretch", choices=["equalize", "percentile", "fixed"], default="equalize")
    parser.add_argument("--min-purity", type=float, default=0.0,
                        help="keep only synthetic chips whose majority class covers this share (a check; "
                             "the real chips' purity is unknown)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    root = args.synth
    if root is None:
        from landmeta.synth import generate
        root = generate(Path(tempfile.mkdtemp()) / "synth", scale=args.scale, seed=args.seed)
        print(f"synth: generated --scale {args.scale} --seed {args.seed} in {root}")
    rc = real_chips(args.real)
    sc, purity = synth_chips(root, args.stretch, args.min_purity)
    print(f"real: {sum(map(len, rc.values()))} chips from {args.real}; synth: {sum(map(len, sc.values()))} "
          f"chips from {root} (majority-class purity median {np.median(purity):.2f}, "
          f"{np.mean(purity >= 0.5):.0%} with a class over half the chip)")
    real = {c: class_stats(v) for c, v in rc.items() if len(v) >= 2}
    synth = {c: class_stats(v) for c, v in sc.items() if len(v) >= 2}
    result = report(real, synth, args.stretch)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
