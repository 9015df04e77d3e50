"""`landmeta report` on a results folder written by `evaluate`: Markdown, self-contained HTML, figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from store_factory import make_store
from test_evaluate import FAST, write_checkpoint

from landmeta.cli import main
from landmeta.config import load_config
from landmeta.data.store import ChipStore
from landmeta.errors import DataError
from landmeta.evaluation.baselines import random_forest
from landmeta.evaluation.protocol import evaluate
from landmeta.evaluation.results import read_results_csv, write_results_csv
from landmeta.evaluation.runner import to_rgb
from landmeta.reporting.plots import segmentation_example
from landmeta.reporting.report import write_report

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    store_path = make_store(root / "store", chip_size=32)
    store = ChipStore.open(store_path)
    runs = [write_checkpoint(root / f"{m}.pt", store, m, "classification") for m in ("maml", "pretrain")]
    return evaluate(store_path, runs, root / "results", load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3)


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "report"
    assert main(["report", str(results), "--out", str(out)]) == 0
    return out


def test_markdown_tables_figures_and_provenance(report):
    md = (report / "index.md").read_text()
    for section in ("## Which method to run on a new region", "## accuracy", "## kappa", "## macro_f1", "## Paired tests", "## Held-out regions",
                    "## Qualitative examples", "## Provenance"):
        assert section in md
    assert "| method | 0-shot | 1-shot | 2-shot |" in md
    assert "| rff-maml |" in md and "| rff-pretrain |" in md  # the forest on each run's features
    assert re.search(r"\*\*\d\.\d{3} ± \d\.\d{3}\*\*", md)  # the best mean of a column is bold
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report / link).is_file()
    assert {"curve_accuracy.png", "map.png", "example_0.png"} <= {p.name for p in (report / "figures").iterdir()}
    assert "checkpoint:" in md and "landmeta_version" in md
    assert re.search(r"- 1-shot: run \S+\. On meta-val it scored \d\.\d{3} against \d\.\d{3} for \S+, the next best "
                     r"\(\d+ tasks\)\. On these test tasks it scores \d\.\d{3}, [+-]\d\.\d{3} \[", md)


def test_html_is_self_contained(report):
    page = (report / "index.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<table>" in page and "<b>" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package `chromium`)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    page = report / "index.html"
    n_images = len(re.findall(r"<img ", page.read_text()))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=10000"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    # the page's script sets data-images-loaded to the image count once every image decoded (naturalWidth > 0)
    assert f'data-images-loaded="{n_images}"' in dom
    shot = tmp_path / "page.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200) and pixels.std() > 5  # something drawn, not a blank page


def test_segmentation_example_figure(tmp_path):
    store = ChipStore.open(make_store(tmp_path / "store", chip_size=32, parents_per_region=4))
    support, query = np.array([0, 4]), np.array([8, 12])
    masks = store.masks(np.concatenate([support, query]))
    pred = random_forest("segmentation", store.images(support), masks[:2], store.images(query), trees=5)
    example = {"task": 0, "region": store.chips.region[0], "shots": 2,
               "support_rgb": to_rgb(store.images(support), store.bands), "query_rgb": to_rgb(store.images(query), store.bands),
               "support_y": masks[:2], "query_y": masks[2:], "predictions": {"rf": pred}}
    colors = np.array(store.class_colors, dtype=np.uint8)
    path = segmentation_example(example, store.class_names, colors, tmp_path / "ex.png")
    width, height = Image.open(path).size
    assert width > 400 and height > 200


def test_bad_results_folder(results, tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "meta.json: missing" in err[0]
    bad = tmp_path / "bad"
    shutil.copytree(results, bad)
    csv = (bad / "results.csv").read_text()
    (bad / "results.csv").write_text(csv.replace(",rf,", ",svm,"))  # an edit breaks the rows' checksums
    with pytest.raises(DataError, match=r"results.csv: \d+ row\(s\) do not parse exactly or fail their checksum"):
        write_report(bad, tmp_path / "r2")
    kind = json.loads((bad / "meta.json").read_text())["kind"]
    rows = read_results_csv(results / "results.csv", kind)
    write_results_csv(bad / "results.csv", rows.assign(method=rows["method"].replace("rf", "svm")), kind)
    with pytest.raises(DataError, match=r"results.csv: methods \['svm'\] are not described"):
        write_report(bad, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_results_with_the_former_proto_names_open_as_ncm(results, tmp_path):
    """Folders written when the nearest-class-mean baselines were named `proto-<run>` (family `proto`)
    are read with today's names, by the report and by a resumed evaluation, which computes nothing again."""
    old = tmp_path / "old"
    shutil.copytree(results, old)
    meta = json.loads((old / "meta.json").read_text())
    kind, legacy = meta["kind"], (lambda name: name.replace("ncm-", "proto-"))
    meta["methods"] = {legacy(n): info | ({"family": "proto"} if info["family"] == "ncm" else {})
                       for n, info in meta["methods"].items()}
    (old / "meta.json").write_text(json.dumps(meta))
    rows = read_results_csv(results / "results.csv", kind)
    write_results_csv(old / "results.csv", rows.assign(method=rows["method"].map(legacy)), kind)
    (old / "tests.csv").write_text((results / "tests.csv").read_text().replace("ncm-", "proto-"))
    with np.load(results / "examples.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["index"] = np.array(str(arrays["index"]).replace("ncm-", "proto-"))
    np.savez_compressed(old / "examples.npz", **arrays)
    assert "proto-maml" in (old / "results.csv").read_text()
    md = (write_report(old, tmp_path / "report") / "index.md").read_text()
    assert "| ncm-maml |" in md and "| ncm-pretrain |" in md and "proto-" not in md.split("## Provenance")[0]
    assert "family: ncm" in md
    evaluate(meta["store"], [info["checkpoint"] for info in meta["methods"].values() if info["family"] in
                             ("maml", "pretrain")], old, load_config("tiny.yaml", FAST), shots=[0, 1, 2], tasks=3)
    assert read_results_csv(old / "results.csv", kind).equals(rows)
