"""Compare the methods on a user's own region: `landmeta evaluate --scene S --labels L --runs …`.

The labelled windows are cut once, as `landmeta adapt --scene --labels` cuts them
(`landmeta.inference.labels`), and kept as a chip store in memory (`landmeta.evaluation.windows`).
The region becomes a list of tasks whose support and query index those windows, scored by the
held-out-region protocol's own code into the same results folder, so `landmeta report` reads it.

Spatial blocking (see docs/evaluation.md): each feature belongs to the block (a square of the
scene's pixel grid, `block` pixels wide) holding the centre of its bounding box, and each window to
the block of the features whose boxes it meets; a window meeting features of two blocks is left
out, so no feature is split between support and query. A task holds out randomly ordered blocks
until they hold at least `QUERY_SHARE` of the windows: their windows are the query. The support
is drawn from the windows of the other blocks that lie at least one window's side from every query
window (never touching, never neighbours). One split per task serves every shot count: k-shot
takes the first k windows (per class, for a classifier) of one shuffled support pool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from rasterio.warp import transform as warp_transform

from landmeta.classes import IGNORE_INDEX
from landmeta.config import Config, config_to_dict
from landmeta.data.tasks import TASKS_FORMAT, Task
from landmeta.data.transforms import denormalise
from landmeta.errors import DataError, TaskError
from landmeta.evaluation.methods import TUNED_FAMILIES, Method, check_heads, resolve_checkpoint
from landmeta.evaluation.protocol import score_tasks, task_counts
from landmeta.evaluation.results import check_results_folder, read_meta, write_meta
from landmeta.evaluation.resume import RESUME_KEYS, resume_or_start
from landmeta.evaluation.runner import EvalSetup, Evaluator
from landmeta.evaluation.windows import WINDOWS_FILE, LabelWindows, write_windows
from landmeta.inference.labels import LabelledSupport, LabelSource, read_label_support
from landmeta.inference.mapping import legend_of
from landmeta.inference.scene import open_scene
from landmeta.io import atomic_write_json, output_lock, provenance
from landmeta.meta.checkpoint import Checkpoint
from landmeta.metrics import metric_names

BLOCK_WINDOWS = 3  # default block side, in windows
QUERY_SHARE = 0.25  # least share of the usable windows held out as query in each task
MAX_TRIES = 200  # draws of held-out blocks per task before giving up


@dataclass
class Split:
    """One task's windows: the query, the support pool (shuffled), and the held-out blocks."""

    query: np.ndarray
    pool: np.ndarray
    blocks: list[int]


def evaluate_region(source: LabelSource, runs: list[str | Path], out: str | Path, config: Config,
                    shots: list[int] | None = None, tasks: int | None = None, workers: int | None = None,
                    block: int | None = None, tuned_from: str | Path | None = None, class_map: Path | None = None,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Score every method on spatially blocked tasks of the user's labels over one scene; write the
    results folder `out` (resumed like `evaluate`'s). Settings come from `tuned_from` (a results
    folder of the same checkpoints on held-out regions) or else are those `landmeta adapt` uses."""
    check_results_folder(Path(out))
    with output_lock(out):
        return _evaluate_region(source, runs, Path(out), config, shots, tasks, workers, block, tuned_from,
                                class_map, overwrite, progress)


def _evaluate_region(source: LabelSource, runs: list[str | Path], out: Path, config: Config,
                     shots: list[int] | None, tasks: int | None, workers: int | None, block: int | None,
                     tuned_from: str | Path | None, class_map: Path | None, overwrite: bool,
                     progress: bool) -> Path:
    checkpoints = [str(resolve_checkpoint(r).resolve()) for r in runs]
    first = Checkpoint.load(checkpoints[0])
    kind = first.kind
    shots, count, workers = task_counts(config, shots, tasks, workers)
    positive = [s for s in shots if s > 0] or [1]
    side = first.store_chip_size
    block = BLOCK_WINDOWS * side if block is None else int(block)
    if block < 1:
        raise TaskError(f"block side must be >= 1 pixel, got {block}")

    labelled = read_label_support(source, first, class_map, progress)
    windows = _label_windows(labelled, source, first)
    windows.blocks = window_blocks(windows, labelled.feature_boxes, block)
    splits = draw_splits(windows, source.labels, count, max(positive), side, block, config.seed)
    task_lists, extra = _tasks(windows, splits, shots, positive, labelled.feature_boxes)

    path = (out / WINDOWS_FILE).resolve()
    setup = EvalSetup(str(path), "labels", kind, checkpoints, config_to_dict(config), config.seed, windows=True)
    probe = Evaluator(setup, store=windows.store(path))  # checks every checkpoint before anything is written
    n_way = len(windows.info["task_classes"]) if kind == "classification" else None
    check_heads(probe.methods, kind, n_way, f"the labels {source.labels} have {n_way} classes")
    held_out = read_meta(Path(tuned_from) / "meta.json") if tuned_from is not None else None
    tuned = tuned_settings(probe.methods, config, positive, tuned_from, held_out)
    record = _region_record(source, labelled, windows, splits, block, side, class_map, tuned_from, extra)
    files = {k: str((out / "tasks" / f"labels-{kind}-{k}shot-{count}-seed{config.seed}.json").resolve())
             for k in extra}
    task_files = {s: files[s or positive[0]] for s in shots}
    meta = {"kind": kind, "store": str(path), "split": None, "shots": shots, "tasks": count, "n_way": n_way,
            "q_query": None, "task_files": task_files, "zero_shot_tasks": "0-shot uses the "
            f"{positive[0]}-shot task list without its support set",
            "methods": {m.name: m.info | {"zero_shot": m.zero_shot} for m in probe.methods},
            "reference": next((m.name for m in probe.methods if m.family == "maml"), None),
            "metrics": list(metric_names(kind)), "seeds": {"seed": config.seed, "tasks": config.seed},
            "class_names": windows.info["class_names"], "class_colors": windows.info["class_colors"],
            "ignore_index": IGNORE_INDEX, "regions": [_location(source, first, windows)],
            "user_region": record, "config": config_to_dict(config)}
    out.mkdir(parents=True, exist_ok=True)
    resume_or_start(out, meta, overwrite, RESUME_KEYS + ("user_region",))
    meta["tuned"] = tuned
    meta["choice"] = carried_choice(held_out, positive, set(meta["methods"]))
    write_windows(path, windows)
    for s, path_s in files.items():
        atomic_write_json(path_s, {"format": TASKS_FORMAT, "labels": record["labels"], "kind": kind, "k_shot": s,
                                   "count": count, "seed": config.seed, "num_chips": len(windows.labels),
                                   "provenance": provenance(),
                                   "tasks": [t.to_json() | e for t, e in zip(task_lists[s], extra[s])]})
    write_meta(out, meta | {"status": "running", "provenance": provenance()})
    return score_tasks(probe, out, meta, task_lists, workers, progress)


def _label_windows(labelled: LabelledSupport, source: LabelSource, ckpt: Checkpoint) -> LabelWindows:
    """The labelled windows in the checkpoint's class ids, images back in physical units."""
    data = labelled.support
    names = list(ckpt.class_names)
    if ckpt.kind == "classification":
        if data.classes is None:
            known = {n.strip().lower() for n in names}
            unknown = [n for n in data.class_names if n.strip().lower() not in known]
            raise DataError(f"{source.labels}: classes {', '.join(map(repr, unknown[:10]))} in field "
                            f"{source.class_field!r} are not classes of the checkpoint ({', '.join(names)}; "
                            f"or 'ignore')")
        labels = np.asarray(data.classes, dtype=np.int64)[data.y.numpy()]
        masks = None
        task_classes = [int(c) for c in data.classes]
    else:
        masks = data.y.numpy().astype(np.uint8)
        labels = np.array([np.bincount(m[m != IGNORE_INDEX], minlength=len(names)).argmax() if (m != IGNORE_INDEX).any() else -1
                           for m in masks], dtype=np.int64)
        task_classes = sorted(int(c) for c in np.unique(masks) if c != IGNORE_INDEX)
    mean, std = ckpt.norm_mean, ckpt.norm_std
    legend = legend_of(ckpt)
    scene = Path(source.scene)
    info = {"kind": ckpt.kind, "region": scene.stem if scene.is_file() else scene.name,
            "scene": str(scene.resolve()), "labels": str(Path(source.labels).resolve()),
            "bands": list(ckpt.bands), "class_names": names,
            "class_colors": [list(map(int, c)) for c in legend.colors], "ignore_index": IGNORE_INDEX,
            "mean": list(map(float, mean)), "std": list(map(float, std)), "task_classes": task_classes}
    images = denormalise(data.x.numpy(), np.asarray(mean), np.asarray(std))
    return LabelWindows(images, labels, masks, np.asarray(labelled.windows, dtype=np.int64).reshape(-1, 4),
                        np.zeros(len(labels), dtype=np.int64), info)


def touching(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(features, windows) bool: the feature's pixel box (row0, col0, row1, col1) meets the window."""
    r0, c0 = windows[:, 0], windows[:, 1]
    r1, c1 = r0 + windows[:, 2], c0 + windows[:, 3]
    return ((boxes[:, None, 0] < r1[None]) & (boxes[:, None, 2] > r0[None])
            & (boxes[:, None, 1] < c1[None]) & (boxes[:, None, 3] > c0[None]))


def window_blocks(windows: LabelWindows, boxes: np.ndarray, block: int) -> np.ndarray:
    """Block id of each window (-1: left out, meeting features of two blocks or unlabelled at the model's size).

    A feature's block is the `block`-pixel square of the scene grid holding its box's centre.
    """
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) // 2, (boxes[:, 1] + boxes[:, 3]) // 2], axis=1) // block
    _, feature_block = np.unique(centre, axis=0, return_inverse=True)
    feature_block = feature_block.ravel()
    touch = touching(boxes, windows.windows)
    blocks = np.full(len(windows.labels), -1, dtype=np.int64)
    for j in range(len(blocks)):
        found = np.unique(feature_block[touch[:, j]])
        if len(found) == 1 and windows.labels[j] >= 0:
            blocks[j] = found[0]
    return blocks


def gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) pixels between windows (row, col, h, w) along the farther axis; 0 = touching or overlapping."""
    rows = np.maximum(b[None, :, 0] - (a[:, None, 0] + a[:, None, 2]), a[:, None, 0] - (b[None, :, 0] + b[None, :, 2]))
    cols = np.maximum(b[None, :, 1] - (a[:, None, 1] + a[:, None, 3]), a[:, None, 1] - (b[None, :, 1] + b[None, :, 3]))
    return np.maximum(np.maximum(rows, cols), 0)


def draw_splits(windows: LabelWindows, labels_path: Path, count: int, k_max: int, buffer: int, block: int,
                seed: int) -> list[Split]:
    """`count` seeded splits of the windows into query and support pool that allow `k_max`-shot tasks;
    TaskError naming what is needed and what the labels give when no draw does."""
    blocks, rows = windows.blocks, windows.windows
    usable = np.flatnonzero(blocks >= 0)
    ids = np.unique(blocks[usable])
    where = (f"{labels_path}: {len(usable)} usable windows in {len(ids)} spatial block{'s' * (len(ids) != 1)} of {block} px "
             f"({int((blocks < 0).sum())} more left out: meeting features of two blocks)")
    if len(ids) < 2:
        raise TaskError(f"{where}; holding out a query needs at least 2 blocks: label a wider area, "
                        f"or pass a smaller --block")
    classification = windows.info["kind"] == "classification"
    classes = windows.info["task_classes"]
    for c in classes if classification else []:
        n = int((windows.labels[usable] == c).sum())
        if n < k_max + 1:
            raise TaskError(f"{where}: class {windows.info['class_names'][c]!r} is the majority class of {n} of "
                            f"them; {k_max}-shot tasks need {k_max + 1} ({k_max} support, 1 query) in different "
                            f"blocks; label more of it, or ask for fewer --shots")
    rng = np.random.default_rng(seed)
    splits: list[Split] = []
    best = -1
    for _ in range(count):
        for _ in range(MAX_TRIES):
            held: list[int] = []
            for b in rng.permutation(ids)[:-1]:  # never every block
                held.append(int(b))
                if np.isin(blocks[usable], held).sum() >= QUERY_SHARE * len(usable):
                    break
            query = usable[np.isin(blocks[usable], held)]
            rest = usable[~np.isin(blocks[usable], held)]
            pool = rest[gaps(rows[rest], rows[query]).min(axis=1) >= buffer]
            if classification:  # the scarcest class's support windows, 0 when the query misses a class
                short = min(int((windows.labels[pool] == c).sum()) if (windows.labels[query] == c).any() else 0
                            for c in classes)
            else:
                short = len(pool)
            best = max(best, short)
            if short >= k_max:
                splits.append(Split(query, rng.permutation(pool), held))
                break
        else:
            need = (f"{k_max} support windows of each class (and a query window of each)" if classification
                    else f"{k_max} support windows")
            got = "of the scarcest class" if classification else ""
            raise TaskError(f"{where}: {k_max}-shot tasks need {need} at least {buffer} px from the held-out "
                            f"blocks; the best of {MAX_TRIES} draws left {best} {got}".rstrip()
                            + "; label more features, farther apart, or pass a smaller --block or fewer --shots")
    return splits


def _tasks(windows: LabelWindows, splits: list[Split], shots: list[int], positive: list[int],
           boxes: np.ndarray) -> tuple[dict[int, list[Task]], dict[int, list[dict[str, Any]]]]:
    """Per shot count the tasks (0-shot: those of the smallest positive count) and, per task, the
    held-out blocks and the number of features the support windows meet."""
    kind, region = windows.info["kind"], windows.info["region"]
    classes = windows.info["task_classes"]
    touch = touching(boxes, windows.windows)
    lists: dict[int, list[Task]] = {}
    extra: dict[int, list[dict[str, Any]]] = {}
    for s in sorted({s or positive[0] for s in shots}):
        lists[s], extra[s] = [], []
        for split in splits:
            if kind == "classification":
                support = np.concatenate([split.pool[windows.labels[split.pool] == c][:s] for c in classes])
                order = np.argsort([classes.index(int(c)) for c in windows.labels[split.query]], kind="stable")
                query, task_classes = split.query[order], tuple(classes)
            else:
                support, query = split.pool[:s], split.query
                picked = cast(np.ndarray, windows.masks)[np.concatenate([support, query])]
                task_classes = tuple(int(c) for c in np.unique(picked) if c != IGNORE_INDEX)
            lists[s].append(Task(region, support.astype(np.int64), query.astype(np.int64), task_classes, kind))
            extra[s].append({"held_out_blocks": split.blocks,
                             "support_features": int(touch[:, support].any(axis=1).sum())})
    return {s: lists[s or positive[0]] for s in shots}, extra


def tuned_settings(methods: list[Method], config: Config, positive: list[int], tuned_from: str | Path | None,
                   old: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per method and shot count the adaptation settings: those chosen on meta-val by a held-out
    evaluation of the same checkpoints (`tuned_from`, its meta.json `old`), or else those `landmeta adapt` uses."""
    cfg = config.eval
    settings: dict[str, dict[str, Any]] = {}
    for m in (m for m in methods if m.family in TUNED_FAMILIES):
        if old is None or tuned_from is None:
            steps = cfg.finetune_steps[0] if m.family == "pretrain" else next(
                (s for s in cfg.finetune_steps if s > 0), max(cfg.finetune_steps))
            hp = ({"steps": None} if m.family == "maml" else
                  {"steps": steps, "lr": cfg.finetune_lrs[0], "layers": "all"})
            settings[m.name] = {str(s): hp | {"val_score": None, "val_tasks": 0, "chosen": "defaults"}
                                for s in positive}
            continue
        where = Path(tuned_from) / "meta.json"
        before = old.get("methods", {}).get(m.name, {})
        source = m.info.get("checkpoint", m.info.get("architecture_of"))
        if before.get("checkpoint", before.get("architecture_of")) != source:
            raise DataError(f"{where}: holds no settings of {m.name} for {source} (results of other checkpoints?)")
        chosen = old.get("tuned", {}).get(m.name, {})
        missing = [s for s in positive if str(s) not in chosen]
        if missing:
            raise DataError(f"{where}: no tuned settings of {m.name} for {missing}-shot "
                            f"(it has {sorted(int(k) for k in chosen)}); evaluate those shot counts there first")
        settings[m.name] = {str(s): chosen[str(s)] | {"chosen": str(Path(tuned_from).resolve())} for s in positive}
    return settings


def carried_choice(held_out: dict[str, Any] | None, positive: list[int], methods: set[str]) -> dict[str, Any]:
    """The methods chosen on meta-val by the held-out evaluation whose meta.json is `held_out`, for the
    shot counts evaluated here whose chosen method and runner-up are both evaluated here ({} without one)."""
    choice = held_out.get("choice", {}) if held_out is not None else {}
    return {str(s): choice[str(s)] for s in positive
            if str(s) in choice and {choice[str(s)]["method"], choice[str(s)]["runner_up"]} <= methods}


def _region_record(source: LabelSource, labelled: LabelledSupport, windows: LabelWindows, splits: list[Split],
                   block: int, side: int, class_map: Path | None, tuned_from: str | Path | None,
                   extra: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the results were computed from, for meta.json (compared when a run is resumed)."""
    blocks = windows.blocks
    return {  # the settings first: a resumed run that differs is told the first differing entry
        "source": "the user's own labels over one scene, not the held-out-region protocol",
        "scene": windows.info["scene"], "labels": windows.info["labels"],
        "labels_sha256": hashlib.sha256(Path(source.labels).read_bytes()).hexdigest(),
        "layer": source.layer, "class_field": source.class_field, "point_radius": labelled.point_radius,
        "class_map": str(class_map) if class_map else None, "window_pixels": side, "block_pixels": block,
        "buffer_pixels": side, "query_share": QUERY_SHARE,
        "tuned_from": str(Path(tuned_from).resolve()) if tuned_from is not None else None,
        "shots_are": ("support windows per class" if windows.info["kind"] == "classification"
                      else "support windows"),
        "features": labelled.features, "outside": labelled.outside, "overlap_pixels": labelled.overlap_pixels,
        "windows": len(blocks), "windows_left_out": int((blocks < 0).sum()),
        "blocks": len(np.unique(blocks[blocks >= 0])),
        "query_windows": float(np.mean([len(s.query) for s in splits])),
        "distinct_queries": len({tuple(sorted(s.blocks)) for s in splits}),
        "support_features": {str(s): float(np.mean([e["support_features"] for e in v])) for s, v in extra.items()},
    }


def _location(source: LabelSource, ckpt: Checkpoint, windows: LabelWindows) -> dict[str, Any]:
    """The region (the scene) at the centre of its labelled windows, in lon/lat."""
    w = windows.windows
    row = (w[:, 0].min() + (w[:, 0] + w[:, 2]).max()) / 2
    col = (w[:, 1].min() + (w[:, 1] + w[:, 3]).max()) / 2
    with open_scene(Path(source.scene), list(ckpt.bands)) as scene:
        x, y = scene.transform @ (col, row)
        lon, lat = warp_transform(scene.crs, "EPSG:4326", [x], [y])
    return {"region": windows.info["region"], "lon": float(lon[0]), "lat": float(lat[0])}
