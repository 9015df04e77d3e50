"""Held-out-region evaluation: metrics, statistics, baselines and the evaluation protocol."""
