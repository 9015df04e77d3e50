"""Statistics over per-task results: mean ± 95% CI, and paired tests between two methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

Z95 = 1.96
TEST_COLUMNS = ["reference", "method", "shots", "metric", "n", "mean_diff", "diff_low", "diff_high",
                "wilcoxon_p", "bootstrap_p"]
CHOICE_COLUMNS = ["shots", "method", "val_score", "runner_up", "runner_up_val_score", "val_tasks", "metric", "mean",
                  "runner_up_mean", "n", "mean_diff", "diff_low", "diff_high", "wilcoxon_p", "bootstrap_p",
                  "best_here", "best_here_mean"]


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% CI = 1.96·std/√n with the sample std, n) over finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    half = Z95 * v.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return float(v.mean()), float(half), n


def wilcoxon_p(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when every pair is tied."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0 or np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_bootstrap(a, b, n_boot: int = 10000, seed: int = 0) -> tuple[float, float, float, float]:
    """Mean of a − b, its 95% percentile bootstrap CI over tasks, and a two-sided bootstrap p-value.

    Tasks are resampled with replacement (pairs kept together); the p-value is twice the smaller
    share of bootstrap means on either side of zero, capped at 1.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2.0 * min((means <= 0).mean(), (means >= 0).mean()))
    return float(d.mean()), float(low), float(high), float(p)


def summarise(results: pd.DataFrame, metrics: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """One row per (method, shots, metric): mean, ci (half-width), n — from a tidy per-task table."""
    rows = []
    for (method, shots), group in results.groupby(["method", "shots"], sort=True):
        for metric in metrics:
            mean, half, n = mean_ci(group[metric])
            rows.append({"method": method, "shots": int(shots), "metric": metric, "mean": mean, "ci": half, "n": n})
    return pd.DataFrame(rows, columns=["method", "shots", "metric", "mean", "ci", "n"])


def paired_tests(results: pd.DataFrame, reference: str, metrics: list[str] | tuple[str, ...],
                 n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """`reference` against every other method at each shot count, paired by task.

    Columns: reference, method, shots, metric, n, mean_diff (reference − method), diff_low,
    diff_high (95% bootstrap CI), wilcoxon_p, bootstrap_p.
    """
    rows = []
    for method, shots in sorted(set(zip(results["method"], results["shots"]))):
        if method == reference:
            continue
        for metric in metrics:
            test = paired_test(results, reference, method, int(shots), metric, n_boot, seed)
            if test is not None:
                rows.append({"reference": reference, "method": method, "shots": int(shots), "metric": metric} | test)
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def paired_test(results: pd.DataFrame, a: str, b: str, shots: int, metric: str, n_boot: int = 10000,
                seed: int = 0) -> dict[str, float | int] | None:
    """Method `a` − method `b` at one shot count over the tasks both scored (finite values): n,
    mean_diff, diff_low, diff_high (95% bootstrap CI), wilcoxon_p, bootstrap_p; None without a pair."""
    at = results[results["shots"] == shots]
    pair = at[at["method"] == a].merge(at[at["method"] == b], on="task", suffixes=("_a", "_b"))
    if pair.empty:
        return None
    x = pair[f"{metric}_a"].to_numpy(np.float64)
    y = pair[f"{metric}_b"].to_numpy(np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    diff, low, high, p_boot = paired_bootstrap(x[keep], y[keep], n_boot, seed)
    return {"n": int(keep.sum()), "mean_diff": diff, "diff_low": low, "diff_high": high,
            "wilcoxon_p": wilcoxon_p(x[keep], y[keep]) if keep.any() else float("nan"), "bootstrap_p": p_boot}


def choice_table(results: pd.DataFrame, choice: dict[str, dict], metric: str, n_boot: int = 10000,
                 seed: int = 0) -> pd.DataFrame:
    """Per shot count, the method chosen on meta-val (`tuning.choose_methods`) on these tasks: its mean,
    the paired test against the meta-val runner-up, and the method with the best mean here."""
    rows = []
    for shots, c in sorted(choice.items(), key=lambda item: int(item[0])):
        test = paired_test(results, c["method"], c["runner_up"], int(shots), metric, n_boot, seed)
        if test is None:  # the two were not scored on common tasks here
            continue
        means = results[results["shots"] == int(shots)].groupby("method")[metric].mean()
        rows.append({"shots": int(shots), "method": c["method"], "val_score": c["val_score"],
                     "runner_up": c["runner_up"], "runner_up_val_score": c["runner_up_val_score"],
                     "val_tasks": c["val_tasks"], "metric": metric, "mean": float(means[c["method"]]),
                     "runner_up_mean": float(means[c["runner_up"]])} | test
                    | {"best_here": str(means.idxmax()), "best_here_mean": float(means.max())})
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS)
