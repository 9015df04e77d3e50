"""Region splits (seeded 75/25/25, split files, hold-out lists) and DeepGlobe pseudo-regions.

The paper splits regions 75 meta-train / 25 meta-val / 25 meta-test, i.e. 60/20/20 %. DeepGlobe
has no geography: each image is a region, described by colour, texture and class-mix features,
clustered with KMeans; the clustered split gives train, val and test disjoint clusters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landmeta.errors import DataError
from landmeta.vocab import SPLITS

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}  # 75 / 25 / 25


def random_split(regions: list[str], seed: int) -> dict[str, str]:
    """Shuffle regions with `seed` and cut them 60/20/20 (at least one region per split)."""
    regions = sorted(regions)
    if len(regions) < 3:
        raise DataError(f"need at least 3 regions for a train/val/test split, found {len(regions)} "
                        f"(give --split-file to assign them by hand)")
    order = np.random.default_rng(seed).permutation(len(regions))
    n_test = max(1, round(FRACTIONS["test"] * len(regions)))
    n_val = max(1, round(FRACTIONS["val"] * len(regions)))
    out = {}
    for rank, i in enumerate(order):
        out[regions[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are neither blank nor `#` comments."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc.__class__.__name__})") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")]


def _check_once(path: Path, seen: dict[str, int], region: str, number: int, line: str) -> None:
    """DataError naming the file and the line if `region` was already listed (`seen`: region -> line)."""
    if region in seen:
        raise DataError(f"{path}: line {number}: {line!r} lists region {region!r} again (first on line "
                        f"{seen[region]}); list each region once")
    seen[region] = number


def read_split_file(path: Path) -> dict[str, str]:
    """Lines `region,split` with split in train, val, test; each region once."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise DataError(f"{path}: line {number}: expected 'region,split' with split in "
                            f"{list(SPLITS)}, got {line!r}")
        _check_once(path, seen, parts[0], number, line)
        out[parts[0]] = parts[1]
    return out


def read_holdout(path: Path) -> set[str]:
    """One test region per line (`#` comments allowed); each region once."""
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        _check_once(path, seen, line, number, line)
    return set(seen)


def assign_splits(regions: list[str], seed: int, split_file: Path | None = None,
                  holdout: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """Split of every region, plus warnings (listed regions that are not in the data).

    `split_file` gives every split by hand; `holdout` lists test regions (one per line, e.g. the
    official SEN12MS hold-out scenes) and the rest is cut into train/val in the ratio of FRACTIONS
    (75/25) with `seed`.
    """
    regions = sorted(regions)
    warnings: list[str] = []
    if split_file is not None:
        given = read_split_file(split_file)
        missing = [r for r in regions if r not in given]
        if missing:
            raise DataError(f"{split_file}: no split for regions {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)")
        extra = sorted(set(given) - set(regions))
        if extra:
            warnings.append(f"{split_file}: {len(extra)} listed regions not in the data, e.g. {extra[:3]}")
        return {r: given[r] for r in regions}, warnings
    if holdout is not None:
        test = read_holdout(holdout)
        extra = sorted(test - set(regions))
        if extra:
            warnings.append(f"{holdout}: {len(extra)} hold-out regions not in the data, e.g. {extra[:3]}")
        rest = [r for r in regions if r not in test]
        if len(rest) < 2:
            raise DataError(f"{holdout}: leaves {len(rest)} regions for train and val (need 2)")
        order = np.random.default_rng(seed).permutation(len(rest))
        n_val = max(1, round(FRACTIONS["val"] / (FRACTIONS["train"] + FRACTIONS["val"]) * len(rest)))
        out = {r: "test" for r in regions if r in test}
        for rank, i in enumerate(order):
            out[rest[i]] = "val" if rank < n_val else "train"
        return dict(sorted(out.items())), warnings
    return random_split(regions, seed), warnings


# --- DeepGlobe pseudo-regions -------------------------------------------------------------

def image_features(image: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Features of one image: per-channel mean and std (colour), mean gradient magnitude per
    channel (texture), and the fraction of each class in the mask (land-cover mix).

    Colour and texture describe what a model sees; the class mix describes what it must predict.
    Both differ between landscapes, so clusters of them behave like regions with a domain shift.
    """
    image = image.astype(np.float32)
    colour = np.concatenate([image.mean(axis=(1, 2)), image.std(axis=(1, 2))])
    texture = (np.abs(np.diff(image, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(image, axis=2)).mean(axis=(1, 2)))
    labelled = mask[mask < num_classes]
    hist = np.bincount(labelled, minlength=num_classes)[:num_classes].astype(np.float32)
    hist /= max(1, labelled.size)
    return np.concatenate([colour, texture, hist])


def cluster_regions(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """KMeans (seeded) on standardised features; cluster id per row."""
    from sklearn.cluster import KMeans
    k = min(k, len(features))
    z = _standardise(features)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z).astype(int)


def clustered_split(regions: list[str], clusters: np.ndarray, seed: int) -> dict[str, str]:
    """Whole clusters to test, then val, until each holds ~20 % of the images; the rest train."""
    ids = np.unique(clusters)
    if len(ids) < 3:
        raise DataError(f"a clustered split needs at least 3 clusters, got {len(ids)} "
                        f"(from {len(regions)} images; raise --clusters or add images)")
    order = np.random.default_rng(seed).permutation(ids)
    sizes = {c: int((clusters == c).sum()) for c in ids}
    target = {s: FRACTIONS[s] * len(regions) for s in ("test", "val")}
    split_of: dict[int, str] = {}
    filled = {"test": 0, "val": 0}
    for c in order:
        for s in ("test", "val"):
            if filled[s] < target[s] and (filled[s] == 0 or filled[s] + sizes[c] / 2 <= target[s]):
                split_of[c] = s
                filled[s] += sizes[c]
                break
        else:
            split_of[c] = "train"
    if "train" not in split_of.values():  # the last cluster always goes to train
        split_of[order[-1]] = "train"
    for s in ("test", "val"):
        if s not in split_of.values():
            raise DataError(f"clustered split left {s} empty ({len(ids)} clusters); raise --clusters")
    return {r: split_of[c] for r, c in zip(regions, clusters)}


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def plot_clusters(path: Path, features: np.ndarray, clusters: np.ndarray, splits: list[str]) -> None:
    """2-D PCA of the image features, colour = cluster, marker = split (PNG, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    z = _standardise(features)
    xy = PCA(n_components=2, random_state=0).fit_transform(z) if len(z) >= 2 else np.zeros((len(z), 2))
    fig, ax = plt.subplots(figsize=(6, 5))
    markers = {"train": "o", "val": "s", "test": "^"}
    cmap = plt.get_cmap("tab10")
    for split, marker in markers.items():
        sel = np.array([s == split for s in splits])
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], c=[cmap(c % 10) for c in clusters[sel]], marker=marker,
                       edgecolors="k", linewidths=0.4)
        ax.scatter([], [], color="0.6", marker=marker, edgecolors="k", linewidths=0.4, label=split)
    for c in np.unique(clusters):
        ax.scatter([], [], color=cmap(c % 10), label=f"cluster {c}")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("DeepGlobe images: features (PCA), cluster and split")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
