"""Tables of mean ± 95% CI (method × shots, best in bold) and of the paired tests, as Markdown and HTML."""

from __future__ import annotations

import html
import math

import pandas as pd


def _fmt(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{mean:.3f}"


def summary_cells(summary: pd.DataFrame, metric: str, methods: list[str]) -> tuple[list[int], list[list[str]], list[list[bool]]]:
    """(shots, cells[method][shot], bold[method][shot]) for one metric; the best mean per shot is bold."""
    rows = summary[summary["metric"] == metric]
    shots = sorted(int(s) for s in rows["shots"].unique())
    table = rows.set_index(["method", "shots"])
    cells, bold = [], []
    best = {s: rows.loc[rows["shots"] == s, "mean"].max() for s in shots}
    compared = {s: rows.loc[rows["shots"] == s, "method"].nunique() > 1 for s in shots}
    for method in methods:
        line, marks = [], []
        for s in shots:
            if (method, s) in table.index:
                r = table.loc[(method, s)]
                line.append(_fmt(float(r["mean"]), float(r["ci"])))
                marks.append(compared[s] and bool(r["mean"] == best[s]))
            else:
                line.append("—")
                marks.append(False)
        cells.append(line)
        bold.append(marks)
    return shots, cells, bold


def summary_markdown(summary: pd.DataFrame, metric: str, methods: list[str]) -> str:
    """The mean ± CI table as Markdown, best per shot count in bold."""
    shots, cells, bold = summary_cells(summary, metric, methods)
    lines = ["| method | " + " | ".join(f"{s}-shot" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for method, line, marks in zip(methods, cells, bold):
        lines.append(f"| {method} | " + " | ".join(f"**{c}**" if b else c for c, b in zip(line, marks)) + " |")
    return "\n".join(lines)


def summary_html(summary: pd.DataFrame, metric: str, methods: list[str]) -> str:
    """The mean ± CI table as HTML, best per shot count in bold."""
    shots, cells, bold = summary_cells(summary, metric, methods)
    head = "".join(f"<th>{s}-shot</th>" for s in shots)
    body = "".join(
        f"<tr><th>{html.escape(m)}</th>" + "".join(
            f"<td><b>{html.escape(c)}</b></td>" if b else f"<td>{html.escape(c)}</td>" for c, b in zip(line, marks))
        + "</tr>" for m, line, marks in zip(methods, cells, bold))
    return f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def tests_rows(tests: pd.DataFrame, metric: str) -> list[list[str]]:
    """Rows (method, shots, difference [95% CI], Wilcoxon p, bootstrap p) for one metric."""
    rows = tests[tests["metric"] == metric].sort_values(["method", "shots"])
    return [[str(r.method), str(int(r.shots)), f"{r.mean_diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]",
             _p(r.wilcoxon_p), _p(r.bootstrap_p), str(int(r.n))] for r in rows.itertuples()]


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    text = f"{p:.2g}" if p >= 1e-4 else "<1e-4"
    return text + (" *" if p < 0.05 else "")


TESTS_HEADER = ["baseline", "shots", "difference [95% CI]", "Wilcoxon p", "bootstrap p", "tasks"]


def tests_markdown(tests: pd.DataFrame, metric: str) -> str:
    """The paired tests as a Markdown table."""
    rows = tests_rows(tests, metric)
    lines = ["| " + " | ".join(TESTS_HEADER) + " |", "|" + "---|" * len(TESTS_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tests_html(tests: pd.DataFrame, metric: str) -> str:
    """The paired tests as an HTML table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TESTS_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in tests_rows(tests, metric))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def choice_lines(choice: pd.DataFrame, split: str | None) -> list[str]:
    """One sentence per shot count: the method chosen on meta-val, and how it did against the
    meta-val runner-up on these tasks (paired test)."""
    here = f"these {split} tasks" if split else "these tasks"
    lines = []
    for r in choice.sort_values("shots").itertuples():
        line = (f"{int(r.shots)}-shot: run {r.method}. On meta-val it scored {r.val_score:.3f} against "
                f"{r.runner_up_val_score:.3f} for {r.runner_up}, the next best ({int(r.val_tasks)} tasks). ")
        line += (f"On {here} it scores {r.mean:.3f}, {r.mean_diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}] "
                 f"against {r.runner_up} (Wilcoxon p {_p(r.wilcoxon_p).rstrip(' *')}, {int(r.n)} tasks): ")
        significant = math.isfinite(r.wilcoxon_p) and r.wilcoxon_p < 0.05
        line += ("significantly ahead." if significant and r.mean_diff > 0 else
                 "significantly behind." if significant else "not a significant difference.")
        if r.best_here != r.method:
            line += f" The best mean here is {r.best_here}'s ({r.best_here_mean:.3f}), which meta-val did not pick."
        lines.append(line)
    return lines
