"""The results folder (`results/NAME/`): a tidy per-task CSV written row by row so an interrupted
evaluation resumes, then `summary.csv` (mean ± 95% CI), `tests.csv` (paired tests) and `meta.json`.

Files:
- `results.csv`: task, region, method, shots, then the metric columns of the task kind, then `crc`
  (CRC-32 of the row's other fields: a row cut short or edited is left out and recomputed on resume);
- `summary.csv`: method, shots, metric, mean, ci (95% half-width), n;
- `tests.csv`: reference − method per shots and metric (see `stats.paired_tests`);
- `choice.csv` (when methods were scored on meta-val): per shot count the method chosen on meta-val,
  its headline metric here and its paired test against the meta-val runner-up (`stats.choice_table`);
- `meta.json`: `format: landmeta-results`, kind, store, split, shots, methods, reference, metrics,
  task_files, seeds, tuned hyperparameters, class names/colours, region locations, provenance;
- `examples.npz` (optional): qualitative examples for the report (see `write_examples`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmeta.errors import DataError, OutputExistsError
from landmeta.evaluation.stats import CHOICE_COLUMNS, TEST_COLUMNS, choice_table, paired_tests, summarise
from landmeta.io import atomic_path, atomic_write_json, atomic_write_text
from landmeta.metrics import metric_names

FORMAT = "landmeta-results"
KEY_COLUMNS = ["task", "region", "method", "shots"]
CHECK_COLUMN = "crc"  # last column of results.csv: CRC-32 (hex) of the row's other fields
CHECK_SEPARATOR = "\x1f"  # joins the fields for the checksum (never inside a field of ours)


def current_name(method: str) -> str:
    """A method's name now: older folders named the nearest-class-mean baselines `proto-<run>` (`ncm-<run>`)."""
    return "ncm-" + method.removeprefix("proto-") if method.startswith("proto-") else method


def check_results_folder(out: Path) -> None:
    """OutputExistsError if `out`, or the nearest of its parents that exists, is not a folder."""
    for path in (out, *out.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "exists and is not a folder" if path == out else f"{path} is not a folder"
                raise OutputExistsError(f"{out}: {where}; choose another --out")
            return


def result_columns(kind: str) -> list[str]:
    """The columns of results.csv for a task kind, before the checksum."""
    return KEY_COLUMNS + list(metric_names(kind))


class ResultsLog:
    """Append-only per-task rows in `results.csv`; rows already there are kept and skipped on resume."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.columns = result_columns(kind)
        self.done: set[tuple[int, str, int]] = set()
        rows = read_results_csv(path, kind) if path.exists() else None
        if rows is not None:
            self.done = {(int(t), m, int(s)) for t, m, s in zip(rows["task"], rows["method"], rows["shots"])}
        # rewritten without the rows that fail their checksum (cut short by an interruption, edited, or
        # written before checksums), which are then computed again
        write_results_csv(path, rows, kind)

    def has(self, task: int, method: str, shots: int) -> bool:
        return (task, method, shots) in self.done

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write complete rows in one write, flushed to disk."""
        text = _format_rows(rows, self.columns)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        self.done.update((int(r["task"]), r["method"], int(r["shots"])) for r in rows)


def _fields(row: dict[str, Any], columns: list[str]) -> list[str]:
    """A row's fields as text: ints, strings, and floats at full precision (they read back exactly)."""
    text = {"task": str(int(row["task"])), "region": str(row["region"]), "method": str(row["method"]),
            "shots": str(int(row["shots"]))}
    return [text[c] if c in text else repr(float(row[c])) for c in columns]


def _checksum(fields: list[str]) -> str:
    """CRC-32 of a row's fields (as hex), the last field of every row of results.csv."""
    return f"{zlib.crc32(CHECK_SEPARATOR.join(fields).encode('utf-8')):08x}"


def _format_rows(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV lines of `rows`, each ending with its checksum."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        fields = _fields(row, columns)
        writer.writerow(fields + [_checksum(fields)])
    return buffer.getvalue()


def write_results_csv(path: Path, rows: pd.DataFrame | None, kind: str) -> None:
    """Write `rows` (or only the header) as results.csv, each row with its checksum, atomically."""
    columns = result_columns(kind)
    records = [] if rows is None else rows.to_dict("records")
    atomic_write_text(path, ",".join(columns + [CHECK_COLUMN]) + "\n" + _format_rows(records, columns))


def _parse_record(record: list[str], columns: list[str]) -> dict[str, Any] | None:
    """The row of a CSV record holding exactly the columns and a matching checksum; None otherwise."""
    if len(record) != len(columns) + 1 or record[-1] != _checksum(record[:-1]):
        return None
    row: dict[str, Any] = dict(zip(columns, record[:-1]))
    row["method"] = current_name(row["method"])
    try:
        for c in columns:
            if c in ("task", "shots"):
                row[c] = int(row[c])
            elif c not in ("region", "method"):
                row[c] = float(row[c])
    except ValueError:
        return None
    return row


def read_results_csv(path: Path, kind: str) -> pd.DataFrame:
    """The per-task table; DataError if unreadable or columns are missing. Rows that do not parse exactly
    or fail their checksum (cut short, edited, or written before checksums) are left out and counted in
    `attrs["dropped"]`."""
    columns = result_columns(kind)
    kept, dropped = [], 0
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            records = csv.reader(fh)
            header = next(records, None)
            if header is None:
                raise DataError(f"{path}: empty, not a results CSV")
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: missing columns {missing} for {kind} results")
            signed = header == columns + [CHECK_COLUMN]
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except csv.Error:  # e.g. a quoted field cut off by an interruption: nothing after it is whole
                    dropped += 1
                    break
                if not record:
                    continue
                row = _parse_record(record, columns) if signed else None
                if row is None:
                    dropped += 1
                else:
                    kept.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable results CSV ({exc})") from exc
    rows = pd.DataFrame(kept, columns=columns)
    rows = rows.astype({c: int if c in ("task", "shots") else str if c in ("region", "method") else float
                        for c in columns})
    rows.attrs["dropped"] = dropped
    return rows


def write_summaries(out: Path, results: pd.DataFrame, kind: str, reference: str | None,
                    seed: int = 0, n_boot: int = 10000, choice: dict[str, dict] | None = None) -> None:
    """Write summary.csv, tests.csv and, given the methods chosen on meta-val, choice.csv from the
    per-task table."""
    metrics = metric_names(kind)
    atomic_write_text(out / "summary.csv", summarise(results, metrics).to_csv(index=False))
    tests = paired_tests(results, reference, metrics, n_boot, seed) if reference else pd.DataFrame(columns=TEST_COLUMNS)
    atomic_write_text(out / "tests.csv", tests.to_csv(index=False))
    (out / "choice.csv").unlink(missing_ok=True)
    if choice:
        table = choice_table(results, choice, metrics[0], n_boot, seed)
        atomic_write_text(out / "choice.csv", table.to_csv(index=False))


@dataclass
class Results:
    """A finished results folder, read back for the report."""

    path: Path
    meta: dict[str, Any]
    results: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    choice: pd.DataFrame  # empty for folders evaluated before methods were chosen on meta-val

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def metrics(self) -> list[str]:
        return list(metric_names(self.kind))


def read_meta(path: Path) -> dict[str, Any]:
    """A results folder's meta.json; DataError naming the file if missing or foreign."""
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
    if isinstance(meta.get("methods"), dict):
        meta["methods"] = {current_name(name): dict(info, family="ncm") if isinstance(info, dict)
                           and info.get("family") == "proto" else info for name, info in meta["methods"].items()}
    return meta


def open_results(path: str | Path) -> Results:
    """Read a results folder; DataError naming the file if it is not one or is inconsistent."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no results folder here (run `landmeta evaluate` first)")
    meta = read_meta(path / "meta.json")
    results = read_results_csv(path / "results.csv", meta["kind"])
    if results.attrs["dropped"]:
        raise DataError(f"{path / 'results.csv'}: {results.attrs['dropped']} row(s) do not parse exactly or fail "
                        "their checksum (cut short, edited, or written before checksums); run the same "
                        "`landmeta evaluate` command again to recompute them")
    if results.empty:
        raise DataError(f"{path / 'results.csv'}: no result rows")
    unknown = sorted(set(results["method"]) - set(meta.get("methods", {})))
    if unknown:
        raise DataError(f"{path / 'results.csv'}: methods {unknown} are not described in meta.json")
    summary = summarise(results, metric_names(meta["kind"]))
    tests = _read_csv(path / "tests.csv") if (path / "tests.csv").exists() else pd.DataFrame(columns=TEST_COLUMNS)
    if "method" in tests:
        tests["method"] = tests["method"].map(current_name)
    choice = (_read_csv(path / "choice.csv") if (path / "choice.csv").exists()
              else pd.DataFrame(columns=CHOICE_COLUMNS))
    return Results(path, meta, results, summary, tests, choice)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write meta.json (with the format tag) atomically."""
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
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs


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
                item["predictions"] = {current_name(m): data[f"e{i}_pred{j}"] for j, m in enumerate(ex["methods"])}
                examples.append(item)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable examples file ({exc})") from exc
    return examples
