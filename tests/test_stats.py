"""Mean ± 95% CI and the paired tests, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from landmeta.evaluation.stats import mean_ci, paired_bootstrap, paired_tests, summarise, wilcoxon_p


def test_mean_ci_hand_example():
    mean, half, n = mean_ci([1, 2, 3, 4, float("nan")])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_wilcoxon_exact_and_ties():
    # five positive differences: exact two-sided p = 2 / 2^5
    assert wilcoxon_p([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx(0.0625)
    assert wilcoxon_p([1, 2, 3], [1, 2, 3]) == 1.0


def test_paired_bootstrap():
    diff, low, high, p = paired_bootstrap([2, 3, 4], [1, 2, 3])
    assert (diff, low, high, p) == (1.0, 1.0, 1.0, 0.0)
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    diff, low, high, p = paired_bootstrap(a, a + rng.normal(scale=0.01, size=200) - 0.0)
    assert low < 0.01 and high > -0.01 and p > 0.05   # no real difference: CI spans ~0


def test_summary_and_paired_tests_pair_by_task():
    tasks = np.arange(6)
    ref = pd.DataFrame({"task": tasks, "method": "maml", "shots": 1, "accuracy": [0.9, 0.8, 0.7, 0.9, 0.8, 0.7]})
    other = pd.DataFrame({"task": tasks[::-1], "method": "pretrain", "shots": 1,
                          "accuracy": [0.6, 0.7, 0.8, 0.6, 0.7, 0.8][::-1]})
    results = pd.concat([ref, other], ignore_index=True)
    summary = summarise(results, ["accuracy"])
    row = summary[summary.method == "maml"].iloc[0]
    assert row["mean"] == pytest.approx(0.8) and row["n"] == 6
    tests = paired_tests(results, "maml", ["accuracy"], n_boot=2000)
    assert len(tests) == 1
    t = tests.iloc[0]
    # paired by task id despite the shuffled order: differences .3 .1 -.1 .3 .1 -.1
    assert t["mean_diff"] == pytest.approx(0.1)
    assert t["n"] == 6
    assert t["wilcoxon_p"] == pytest.approx(wilcoxon_p([.3, .1, -.1, .3, .1, -.1], [0] * 6))
