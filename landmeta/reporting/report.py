"""`landmeta report`: a results folder -> `index.md` and a self-contained `index.html` (images inlined)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from landmeta.evaluation.results import Results, open_results, read_examples
from landmeta.io import atomic_dir, atomic_write_text, provenance
from landmeta.reporting.maps import gain_map, region_gain
from landmeta.reporting.plots import classification_example, segmentation_example, shot_curves
from landmeta.reporting.tables import choice_lines, summary_html, summary_markdown, tests_html, tests_markdown

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em}"""
# Marks <body data-images-loaded="N"> once every image has decoded, so a headless browser can check it.
LOADED_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok === imgs.length ? String(ok) : 'failed:' + (imgs.length - ok));
});
</script>"""


class _Page:
    """The report as Markdown and HTML side by side."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, markdown: str, html_table: str) -> None:
        self.md.append(markdown + "\n")
        self.html.append(html_table)

    def figure(self, path: Path | None, alt: str) -> None:
        if path is None:
            return
        rel = path.relative_to(self.out).as_posix()
        self.md.append(f"![{alt}]({rel})\n")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def bullets(self, items: list[str]) -> None:
        self.md.append("".join(f"- {item}\n" for item in items))
        self.html.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>")

    def code(self, text: str) -> None:
        self.md.append(f"```\n{text.rstrip()}\n```\n")
        self.html.append(f"<pre>{html.escape(text)}</pre>")

    def write(self, title: str) -> None:
        atomic_write_text(self.out / "index.md", "\n".join(self.md))
        page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{CSS}</style></head><body>{''.join(self.html)}{LOADED_SCRIPT}</body></html>\n")
        atomic_write_text(self.out / "index.html", page)


def method_order(res: Results) -> list[str]:
    """Methods in the order evaluate recorded them, then any others found in the table."""
    listed = [m for m in res.meta.get("methods", {}) if m in set(res.results["method"])]
    return listed + sorted(set(res.results["method"]) - set(listed))


def pretrain_method(res: Results) -> str | None:
    """The pretrain-then-finetune method that the map compares against, if evaluated."""
    return next((m for m, info in res.meta.get("methods", {}).items()
                 if info.get("family") == "pretrain" and m in set(res.results["method"])), None)


def write_report(results: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Build `out/index.md`, `out/index.html` and `out/figures/*.png` from a results folder."""
    res = open_results(results)
    methods = method_order(res)
    meta = res.meta
    names = list(meta.get("class_names", []))
    colors = np.array(meta.get("class_colors", []), dtype=np.uint8).reshape(-1, 3)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        figures = tmp / "figures"
        figures.mkdir()
        page = _Page(tmp)
        region = meta.get("user_region")
        title = (f"landmeta evaluation — {Path(region['labels']).name} over {Path(region['scene']).name} "
                 f"({meta['kind']}, your own labels)" if region else
                 f"landmeta evaluation — {Path(str(meta.get('store', res.path))).name} ({meta['kind']}, {meta.get('split', '?')} regions)")
        page.heading(title, 1)
        n_tasks = res.results.groupby("shots")["task"].nunique().to_dict()
        intro = (_region_text(region) + f"{meta['kind'].capitalize()} tasks" if region else
                 f"Store {meta.get('store')}, split {meta.get('split')}, {meta['kind']}; tasks")
        page.text(intro + " per shot count: "
                  + ", ".join(f"{s}-shot {n}" for s, n in sorted(n_tasks.items()))
                  + ". Cells are mean ± 95% CI (1.96·std/√n over tasks); the best mean per column is bold.")
        if meta.get("status") != "complete":
            page.text(f"Partial results: the evaluation has not finished (status {meta.get('status')!r}); "
                      "rerun the same `landmeta evaluate` command to complete it.")
        if not res.choice.empty:
            page.heading("Which method to run on a new region", 2)
            page.text(f"Chosen per shot count on the meta-val tasks ({res.metrics[0]}), never on the tasks "
                      "of this report, which then test the choice against the runner-up on meta-val.")
            page.bullets(choice_lines(res.choice, None if region else meta.get("split")))
        for metric in res.metrics:
            page.heading(f"{metric}", 2)
            page.table(summary_markdown(res.summary, metric, methods), summary_html(res.summary, metric, methods))
            page.figure(shot_curves(res.summary, metric, methods, figures / f"curve_{metric}.png"),
                        f"{metric} over shots")
        reference = meta.get("reference")
        if reference and not res.tests.empty:
            headline = res.metrics[0]
            page.heading(f"Paired tests: {reference} against each baseline ({headline})", 2)
            page.text(f"Difference = {reference} − baseline on the same tasks, with its 95% bootstrap CI; "
                      "two-sided Wilcoxon signed-rank and paired-bootstrap p-values (* p < 0.05). "
                      "All metrics are in tests.csv.")
            page.table(tests_markdown(res.tests, headline), tests_html(res.tests, headline))
        _map_section(page, res, figures, reference)
        _examples_section(page, res, figures, names, colors)
        _provenance_section(page, res)
        page.write(title)
    return Path(out)


def _region_text(region: dict[str, Any]) -> str:
    """What a user-region evaluation was computed from (`landmeta evaluate --scene --labels`)."""
    return (f"From the user's own labels, not the held-out-region protocol: {region['labels']} over the scene "
            f"{region['scene']}, {region['features']} features in {region['windows']} windows of "
            f"{region['window_pixels']} px, {region['blocks']} spatial blocks of {region['block_pixels']} px "
            f"({region['windows_left_out']} windows left out). Each task holds out blocks with at least "
            f"{region['query_share']:.0%} of the windows as query (on average {region['query_windows']:.1f} windows; "
            f"{region['distinct_queries']} distinct held-out sets) and draws the support from windows at least "
            f"{region['buffer_pixels']} px away; shots are {region['shots_are']}. ")


def _map_section(page: _Page, res: Results, figures: Path, reference: str | None) -> None:
    baseline = pretrain_method(res)
    page.heading("Held-out regions", 2)
    regions = pd.DataFrame(res.meta.get("regions", []), columns=["region", "lon", "lat"])
    regions[["lon", "lat"]] = regions[["lon", "lat"]].apply(pd.to_numeric).astype(float)  # None -> NaN
    if not reference or not baseline:
        page.text("No map: it needs a meta-learned method and pretrain-then-finetune in the results.")
        return
    metric = res.metrics[0]
    gain = region_gain(res.results, regions, reference, baseline, metric)
    path = gain_map(gain, figures / "map.png", reference, baseline, metric)
    if path is None:
        page.text("No map: the store has no region locations (e.g. tiles without georeference).")
    page.figure(path, f"gain of {reference} over {baseline} per region")
    table = gain.sort_values("gain", ascending=False)
    md = "| region | lon | lat | tasks | gain |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r.region} | {_coord(r.lon)} | {_coord(r.lat)} | {r.tasks} | {r.gain:+.3f} |" for r in table.itertuples())
    rows = "".join(f"<tr><td>{html.escape(str(r.region))}</td><td>{_coord(r.lon)}</td><td>{_coord(r.lat)}</td>"
                   f"<td>{r.tasks}</td><td>{r.gain:+.3f}</td></tr>" for r in table.itertuples())
    page.table(md, "<table><thead><tr><th>region</th><th>lon</th><th>lat</th><th>tasks</th>"
                   f"<th>gain ({html.escape(metric)})</th></tr></thead><tbody>{rows}</tbody></table>")


def _coord(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "—"


def _examples_section(page: _Page, res: Results, figures: Path, names: list[str], colors: np.ndarray) -> None:
    examples = read_examples(res.path / "examples.npz")
    if not examples or not len(colors):
        return
    page.heading("Qualitative examples", 2)
    page.text("Query chips of held-out tasks with the ground truth and each method's prediction after "
              "adaptation on the task's support set; colours follow the class legend.")
    draw = classification_example if res.kind == "classification" else segmentation_example
    for i, ex in enumerate(examples):
        path = draw(ex, names, colors, figures / f"example_{i}.png")
        page.figure(path, f"example: region {ex['region']}, {ex['shots']}-shot")


def _provenance_section(page: _Page, res: Results) -> None:
    meta = res.meta
    page.heading("Provenance", 2)
    details: dict[str, Any] = {k: meta[k] for k in ("store", "split", "user_region", "shots", "tasks", "seeds",
                                                    "task_files", "tuned", "store_manifest", "provenance") if k in meta}
    details["methods"] = meta.get("methods", {})  # checkpoints with their training config and provenance
    details["evaluation_config"] = meta.get("config")
    page.code(yaml.safe_dump(json.loads(json.dumps(details, default=str)), sort_keys=False, width=110))
    page.text("Report: " + json.dumps(provenance(results=str(res.path))))
