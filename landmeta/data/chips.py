"""Chip geometry: every place an image is cut into chips or windows, and the edge rule of each.

- `covering_windows` (a user's support tiles, `landmeta adapt` from a folder): windows of the
  training chip size covering a tile; the last one is shifted back inside, so it overlaps its
  neighbour rather than running past the edge; a side shorter than the chip is one short window.
- `around_features` (vector labels, `landmeta adapt --scene --labels`): non-overlapping windows of
  the chip size placed around labelled features, a few per feature.
- `sliding_windows` (`landmeta predict`): overlapping windows over a whole scene, the last two of a
  row or column sharing what is left so no thin sliver is run; lengths rounded up to what the
  model accepts (mirrored in past the edge).

- `grid_shape` and `grid_chips` (chip stores, `landmeta preprocess`): a grid of whole chips from
  the tile's top-left corner; what is left at the right and bottom edges is dropped, so every chip
  in a store is real data of one size.
"""

from __future__ import annotations

import math

import numpy as np

MAX_STRETCH = 1.25  # the last sliding window of a row or column may be this much longer than the window
MAX_WINDOWS_PER_FEATURE = 4  # a large polygon gives at most this many windows, spread over it


def grid_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Rows and columns of whole `size` chips in a `height` x `width` tile (0 when it is smaller)."""
    return height // max(size, 1), width // max(size, 1)


def grid_chips(a: np.ndarray, rows: int, cols: int, size: int) -> np.ndarray:
    """(..., rows*size, cols*size) -> (rows*cols, ..., size, size), chips in row-major order (a copy)."""
    lead = a.shape[:-2]
    grid = a.reshape(*lead, rows, size, cols, size)
    d = len(lead)
    order = (d, d + 2, *range(d), d + 1, d + 3)
    return np.ascontiguousarray(grid.transpose(order)).reshape(rows * cols, *lead, size, size)


def covering_windows(length: int, size: int) -> list[tuple[int, int]]:
    """Windows of `size` covering `length` (the last one shifted inside); the whole length if shorter."""
    if length <= size:
        return [(0, length)]
    starts = list(range(0, length - size, size)) + [length - size]
    return [(s, s + size) for s in starts]


def around_features(boxes: np.ndarray, height: int, width: int, size: int,
                 per_feature: int = MAX_WINDOWS_PER_FEATURE) -> list[tuple[int, int, int, int]]:
    """Non-overlapping windows (row, col, height, width) of `size` covering the features' pixel boxes.

    Features closer than `size` form a cluster tiled by one grid centred on it; of each feature's
    grid cells at most `per_feature` are kept (spread over it). Clusters whose windows would
    overlap are merged and tiled again. A side shorter than `size` is one window of that side.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from shapely import STRtree, box

    sh, sw = min(size, height), min(size, width)
    n = len(boxes)
    if n == 0:
        return []
    tree = STRtree([box(c0, r0, c1, r1) for r0, c0, r1, c1 in boxes])
    grown = [box(c0 - sw + 1, r0 - sh + 1, c1 + sw - 1, r1 + sh - 1) for r0, c0, r1, c1 in boxes]
    left, right = tree.query(grown, predicate="intersects")
    pairs = [np.concatenate([left, np.arange(n)]), np.concatenate([right, np.arange(n)])]
    while True:
        graph = coo_matrix((np.ones(len(pairs[0])), (pairs[0], pairs[1])), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        windows, owner = [], []
        for cluster in np.unique(label):
            members = np.flatnonzero(label == cluster)
            for w in _tile_cluster(boxes[members], height, width, sh, sw, per_feature):
                windows.append(w)
                owner.append(members[0])
        clash = _first_overlap(np.array(windows))
        if clash is None:
            return sorted(windows)
        a, b = owner[clash[0]], owner[clash[1]]
        pairs = [np.append(pairs[0], a), np.append(pairs[1], b)]


def _tile_cluster(boxes: np.ndarray, height: int, width: int, sh: int, sw: int,
                  per_feature: int) -> list[tuple[int, int, int, int]]:
    """Windows of one cluster: a grid centred on its box, the cells its features touch (capped)."""
    r_start, nr = _grid(boxes[:, 0].min(), boxes[:, 2].max(), sh, height)
    c_start, nc = _grid(boxes[:, 1].min(), boxes[:, 3].max(), sw, width)
    cells: set[tuple[int, int]] = set()
    for r0, c0, r1, c1 in boxes:
        i0, i1 = (r0 - r_start) // sh, min((max(r1, r0 + 1) - 1 - r_start) // sh, nr - 1)
        j0, j1 = (c0 - c_start) // sw, min((max(c1, c0 + 1) - 1 - c_start) // sw, nc - 1)
        ni, nj = i1 - i0 + 1, j1 - j0 + 1
        if ni * nj <= per_feature:
            rows, cols = list(range(i0, i1 + 1)), list(range(j0, j1 + 1))
        else:
            ki = min(ni, max(1, round(math.sqrt(per_feature * ni / nj))))
            kj = min(nj, max(1, per_feature // ki))
            rows = sorted({int(v) for v in np.linspace(i0, i1, ki).round()})
            cols = sorted({int(v) for v in np.linspace(j0, j1, kj).round()})
        cells.update((i, j) for i in rows for j in cols)
    return [(int(r_start + i * sh), int(c_start + j * sw), sh, sw) for i, j in sorted(cells)]


def _grid(start: int, end: int, size: int, length: int) -> tuple[int, int]:
    """First row (or column) and count of cells of `size` centred on [start, end), inside the scene when they fit."""
    count = max(1, math.ceil((end - start) / size))
    first = start - (count * size - (end - start)) // 2
    if count * size <= length:
        first = min(max(first, 0), length - count * size)
    else:
        first = max(0, min(first, start))
    return int(first), count


def _first_overlap(windows: np.ndarray) -> tuple[int, int] | None:
    """Indices of two overlapping windows (row, col, h, w), or None."""
    if len(windows) < 2:
        return None
    r0, c0 = windows[:, 0], windows[:, 1]
    r1, c1 = r0 + windows[:, 2], c0 + windows[:, 3]
    order = np.argsort(r0, kind="stable")
    for k, i in enumerate(order):
        later = order[k + 1:]
        later = later[r0[later] < r1[i]]  # starts before this one ends (sorted by start)
        hit = later[(c0[later] < c1[i]) & (c0[i] < c1[later])]
        if len(hit):
            return int(i), int(hit[0])
    return None


def sliding_windows(size: int, window: int, overlap: int, multiple: int, fixed: bool) -> list[tuple[int, int]]:
    """(start, length) of the windows covering `size` pixels, each overlapping the next by `overlap`.

    Windows step by `window - overlap`; the last two share what is left, so no window is a thin
    sliver that runs the model inefficiently: up to `window * MAX_STRETCH` pixels left are one
    window, more are split between two about equal windows. Lengths are rounded up to `multiple`
    (the few pixels past the edge are mirrored in). A `fixed` window (a classifier's) is never
    resized: the last one reaches past the edge.
    """
    stride = window - overlap
    count = max(1, int(np.ceil((size - overlap) / stride)))
    if fixed:
        return [(i * stride, window) for i in range(count)]

    def up(length: float) -> int:
        return int(np.ceil(length / multiple)) * multiple

    if count == 1:
        return [(0, min(window, up(size)))]
    start = (count - 2) * stride  # the last two windows cover [start, size)
    layout = [(i * stride, window) for i in range(count - 2)]
    tail = size - start
    if tail <= window * MAX_STRETCH:
        return layout + [(start, up(tail))]
    first = up((tail + overlap) / 2)
    return layout + [(start, first), (start + first - overlap, up(tail - first + overlap))]
