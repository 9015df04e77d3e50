"""The results folder (`results/NAME/`): a tidy per-task CSV written row by row so an interrupted
evaluation resumes, then `summary.csv` (mean ± 95% CI), `tests.csv` (paired tests) and `meta.json`.

Files:
- `results.csv`: task, region, method, shots, then the metric columns of the task kind;
- `summary.csv`: method, shots, metric, mean, ci (95% half-width), n;
- `tests.csv`: reference − method per shots and metric (see `stats.paired_tests`);
- `meta.json`: `format: landmeta-results`, kind, store, split, shots, methods, reference, metrics,
  task_files, seeds, tuned hyperparameters, class names/colours, region locations, provenance;
- `examples.npz` (optional): qualitative examples for the report (see `write_examples`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmeta.errors import DataError, OutputExistsError
from landmeta.evaluation.metrics import metric_names
from landmeta.evaluation.stats import TEST_COLUMNS, paired_tests, summarise
from landmeta.io import atomic_path, atomic_write_json, atomic_write_text

FORMAT = "landmeta-results"
KEY_COLUMNS = ["task", "region", "method", "shots"]


def check_results_folder(out: Path) -> None:
    """OutputExistsError if `out`, or the nearest of its parents that exists, is not a folder."""
    for path in (out, *out.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "exists and is not a folder" if path == out else f"{path} is not a folder"
                raise OutputExistsError(f"{out}: {where}; choose another --out")
            return


def result_columns(kind: str) -> list[str]:
    return KEY_COLUMNS + list(metric_names(kind))


class ResultsLog:
    """Append-only per-task rows in `results.csv`; rows already there are kept and skipped on resume."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.columns = result_columns(kind)
        self.done: set[tuple[int, str, int]] = set()
        if path.exists():
            rows = read_results_csv(path, kind)
            self.done = {(int(t), m, int(s)) for t, m, s in zip(rows["task"], rows["method"], rows["shots"])}
            atomic_write_text(path, rows.to_csv(index=False))  # drops a row cut short by an interruption
        else:
            atomic_write_text(path, ",".join(self.columns) + "\n")

    def has(self, task: int, method: str, shots: int) -> bool:
        return (task, method, shots) in self.done

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write complete rows in one write, flushed to disk."""
        text = pd.DataFrame(rows, columns=self.columns).to_csv(index=False, header=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self.done.update((int(r["task"]), r["method"], int(r["shots"])) for r in rows)


def read_results_csv(path: Path, kind: str) -> pd.DataFrame:
    """The per-task table; DataError if columns are missing. Incomplete rows (a cut-off line) are dropped."""
    try:
        rows = pd.read_csv(path, dtype={"region": str, "method": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable results CSV ({exc})") from exc
    missing = [c for c in result_columns(kind) if c not in rows.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} for {kind} results")
    rows = rows.dropna(subset=result_columns(kind)).copy()
    rows["task"] = rows["task"].astype(int)
    rows["shots"] = rows["shots"].astype(int)
    return rows


def write_summaries(out: Path, results: pd.DataFrame, kind: str, reference: str | None,
                    seed: int = 0, n_boot: int = 10000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write summary.csv and tests.csv from the per-task table."""
    metrics = metric_names(kind)
    summary = summarise(results, metrics)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    tests = paired_tests(results, reference, metrics, n_boot, seed) if reference else pd.DataFrame(columns=TEST_COLUMNS)
    atomic_write_text(out / "tests.csv", tests.to_csv(index=False))
    return summary, tests


@dataclass
class Results:
    """A finished results folder, read back for the report."""

    path: Path
    meta: dict[str, Any]
    results: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def metrics(self) -> list[str]:
        return list(metric_names(self.kind))


def read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: missing (not a results folder of `landmeta evaluate`)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a landmeta results file (format is not {FORMAT!r})")
    if meta.get("kind") not in ("classification", "segmentation"):
        raise DataError(f"{path}: 'kind' must be classification or segmentation, got {meta.get('kind')!r}")
    return meta


def open_results(path: str | Path) -> Results:
    """Read a results folder; DataError naming the file if it is not one or is inconsistent."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no results folder here (run `landmeta evaluate` first)")
    meta = read_meta(path / "meta.json")
    results = read_results_csv(path / "results.csv", meta["kind"])
    if results.empty:
        raise DataError(f"{path / 'results.csv'}: no result rows")
    unknown = sorted(set(results["method"]) - set(meta.get("methods", {})))
    if unknown:
        raise DataError(f"{path / 'results.csv'}: methods {unknown} are not described in meta.json")
    summary = summarise(results, metric_names(meta["kind"]))
    tests = _read_csv(path / "tests.csv") if (path / "tests.csv").exists() else pd.DataFrame(columns=TEST_COLUMNS)
    return Results(path, meta, results, summary, tests)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    atomic_write_json(out / "meta.json", {"format": FORMAT, **meta})


def write_examples(path: Path, examples: list[dict[str, Any]]) -> None:
    """Qualitative examples as one npz: `index` (JSON: task, region, shots, classes, methods) and per
    example `e{i}_support_rgb`, `e{i}_support_y`, `e{i}_query_rgb`, `e{i}_query_y`, `e{i}_pred_{method}`.
    RGB arrays are (n, H, W, 3) uint8; labels are global class ids (classification (n,), segmentation (n, H, W))."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, ex in enumerate(examples):
        index.append({k: ex[k] for k in ("task", "region", "shots", "classes")} | {"methods": list(ex["predictions"])})
        for key in ("support_rgb", "support_y", "query_rgb", "query_y"):
            arrays[f"e{i}_{key}"] = np.asarray(ex[key])
        for j, method in enumerate(ex["predictions"]):
            arrays[f"e{i}_pred{j}"] = np.asarray(ex["predictions"][method])
    arrays["index"] = np.array(json.dumps(index))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def read_examples(path: Path) -> list[dict[str, Any]]:
    """The examples written by `write_examples`; an empty list when the file is absent."""
    if not path.exists():
        return []
    try:
        with np.load(path, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            examples = []
            for i, ex in enumerate(index):
                item = {k: ex[k] for k in ("task", "region", "shots", "classes")}
                item.update({key: data[f"e{i}_{key}"] for key in ("support_rgb", "support_y", "query_rgb", "query_y")})
                item["predictions"] = {m: data[f"e{i}_pred{j}"] for j, m in enumerate(ex["methods"])}
                examples.append(item)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable examples file ({exc})") from exc
    return examples
