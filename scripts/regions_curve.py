"""Regions vs quality: MAML and pretraining meta-trained on nested subsets of the meta-train regions.

For each subset size n, the first n regions of a seeded permutation of the store's meta-train regions
(so every subset holds the smaller ones) are preprocessed from the raw tiles, with the store's own
options, into a chip store of those n regions (train) and the store's meta-val regions (val). MAML and
pretraining are trained on it with the demo's recipes and evaluated with `landmeta evaluate` on the full
store, so every subset is scored on the same saved test tasks and tuned on the same meta-val tasks;
only the meta-train regions change (and with them the normalisation statistics, which come from the
meta-train regions). "all" trains on the full store itself.

Writes into --out: `subsets.json` (the permutation and each subset), `subsets/nN/` (raw view, split
file, store), `runs/KIND-nN-METHOD/`, `results/KIND-nN/`, and the study: `curve.csv` (kind, regions,
method, shots, metric, mean, ci, n), `curve.md` (tables with MAML − pretrain paired differences) and
`curve.png` (mean ± 95 % CI against the number of meta-train regions, one line per method, one panel
per kind and shot count). Reruns skip or resume finished steps.

    python scripts/regions_curve.py --raw demo/raw/sen12ms --data demo/data/sen12ms --out demo/regions-curve
    python scripts/regions_curve.py --raw R --data D --out O --subsets 8,16,32,all --steps 100 --shots 1,5
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import landmeta
from landmeta.config import Config
from landmeta.data.sen12ms import SEASON_DIR
from landmeta.data.store import ChipStore
from landmeta.errors import ConfigError, LandmetaError, StoreError
from landmeta.evaluation.results import open_results
from landmeta.io import atomic_path, atomic_write_json, atomic_write_text, output_lock
from landmeta.metrics import metric_names

PLOTTED = ("maml", "pretrain", "random")  # methods drawn in the figure (random init: no regions, for scale)
TAGS = {"classification": "cls", "segmentation": "seg"}  # in the names of runs and results, as in the demo


@dataclass(frozen=True)
class Recipe:
    """One training of a kind: its method, config and whether it starts from the kind's pretraining."""

    method: str
    config: str
    from_pretrain: bool = False


def recipes(args: argparse.Namespace) -> dict[str, list[Recipe]]:
    """The demo's recipes (scripts/demo.sh), pretraining first: MAML of segmentation starts from it."""
    return {"classification": [Recipe("pretrain", args.cls_config), Recipe("maml", args.cls_config)],
            "segmentation": [Recipe("pretrain", args.seg_config), Recipe("maml", args.seg_maml_config, True)]}


def parse_list(flag: str, text: str) -> list[str]:
    """`a,b,c` -> ['a', 'b', 'c']; ConfigError naming the flag if empty."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{flag} {text!r}: expected a comma-separated list")
    return items


def parse_ints(flag: str, text: str, allow_all: bool = False) -> list[int | None]:
    """`1,5` -> [1, 5] (positive integers); with `allow_all`, 'all' -> None."""
    out: list[int | None] = []
    for item in parse_list(flag, text):
        if allow_all and item == "all":
            out.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(f"{flag} {text}: {item!r} is not a positive integer") from None
        if value < 1:
            raise ConfigError(f"{flag} {text}: {value} is not a positive integer")
        out.append(value)
    return out


def plan_subsets(train_regions: list[str], sizes: list[int | None], seed: int,
                 store: Path) -> tuple[list[str], list[int]]:
    """The seeded permutation of the meta-train regions and the subset sizes (sorted, 'all' resolved).

    ConfigError naming both numbers for a subset larger than the meta-train split."""
    total = len(train_regions)
    for n in sizes:
        if n is not None and n > total:
            raise ConfigError(f"regions-curve subset of {n} regions is larger than the meta-train split of "
                              f"{store} ({total} regions)")
    order = [train_regions[i] for i in np.random.default_rng(seed).permutation(total)]
    return order, sorted({total if n is None else n for n in sizes})


def subset_store(raw: Path, store: ChipStore, regions: list[str], folder: Path, workers: int) -> Path:
    """A chip store of `regions` (train) and the store's val regions, preprocessed from `raw` with the
    store's options; the full store itself when `regions` are all its meta-train regions."""
    if sorted(regions) == store.regions_in("train"):
        return store.path
    out = folder / "store"
    if (out / "manifest.json").exists():
        if ChipStore.open(out).regions_in("train") != sorted(regions):
            raise StoreError(f"{out}: holds other meta-train regions than this subset (remove {folder})")
        return out
    view = folder / "raw"
    val = store.regions_in("val")
    for region in regions + val:
        season, scene = region.rsplit("_", 1)
        if not SEASON_DIR.match(season) or not (raw / season / f"s2_{scene}").is_dir():
            raise StoreError(f"{raw}: no SEN12MS scene folder {season}/s2_{scene} for region {region} of "
                             f"{store.path} (give the raw tiles the store was made from)")
        (view / season).mkdir(parents=True, exist_ok=True)
        for kind in ("s1", "s2", "lc"):
            link = view / season / f"{kind}_{scene}"
            if (raw / season / f"{kind}_{scene}").is_dir() and not link.is_symlink():
                link.symlink_to((raw / season / f"{kind}_{scene}").resolve(), target_is_directory=True)
    split_file = folder / "split.csv"
    atomic_write_text(split_file, "".join(f"{r},train\n" for r in sorted(regions))
                      + "".join(f"{r},val\n" for r in val))
    given = store.manifest.get("options", {})
    options = landmeta.PreprocessOptions(bands=given.get("bands"), chip_size=given.get("chip_size"),
                                         downsample=int(given.get("downsample", 1)), split_file=split_file)
    landmeta.preprocess(store.manifest["source"], view, out, options, workers=workers)
    return out


def train_once(config: Config, data: Path, run: Path) -> None:
    """Train `config` on `data` into `run`; a run with last.pt is resumed (a finished one returns at once)."""
    started = time.perf_counter()
    result = landmeta.train(config, data, run, resume=(run / "last.pt").exists())
    if result.status != "done" and result.status != "early-stopped":
        raise LandmetaError(f"{run}: training {result.status} at step {result.step}")
    best = "n/a" if result.best_val is None else f"{result.best_val:.4f}"
    print(f"  {run.name}: {result.status} at step {result.step}, best val {best} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)


def kind_configs(args: argparse.Namespace, kind: str, run_of: dict[str, Path]) -> dict[str, Config]:
    """The configs of a kind's recipes (method, --steps and --set applied; MAML of segmentation
    starting from the pretraining run in `run_of`); ConfigError for a config of another kind."""
    configs: dict[str, Config] = {}
    for recipe in recipes(args)[kind]:
        overrides = [f"meta.method={recipe.method}", *args.overrides]
        if args.steps is not None:
            overrides.append(f"meta.steps={args.steps}")
        if recipe.from_pretrain:
            overrides.append(f"train.init_from={run_of['pretrain'] / 'best.pt'}")
        config = landmeta.load_config(recipe.config, overrides)
        if config.task.kind != kind:
            raise ConfigError(f"{recipe.config}: a {config.task.kind} config, given for {kind}")
        configs[recipe.method] = config
    return configs


def run_kind(args: argparse.Namespace, kind: str, n: int, data: Path) -> Path:
    """Train the kind's recipes on the subset store `data` and evaluate them on the full store."""
    runs = {r.method: args.out / "runs" / f"{TAGS[kind]}-n{n}-{r.method}" for r in recipes(args)[kind]}
    configs = kind_configs(args, kind, runs)
    for method, config in configs.items():  # pretraining first
        train_once(config, data, runs[method])
    out = args.out / "results" / f"{TAGS[kind]}-n{n}"
    started = time.perf_counter()
    landmeta.evaluate(args.data, [runs["maml"], runs["pretrain"]], out, configs["maml"], shots=args.shots,
                      tasks=args.tasks, workers=args.workers)
    print(f"  evaluated {out.name} ({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def collect(folders: dict[tuple[str, int], Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline metric of every (kind, regions) results folder, and MAML − pretrain paired tests."""
    rows, tests = [], []
    for (kind, n), folder in folders.items():
        res = open_results(folder)
        metric = metric_names(kind)[0]
        s = res.summary[res.summary["metric"] == metric]
        rows.append(s.assign(kind=kind, regions=n)[["kind", "regions", "method", "shots", "metric", "mean", "ci", "n"]])
        t = res.tests[(res.tests["metric"] == metric) & (res.tests["method"] == "pretrain")]
        tests.append(t.assign(kind=kind, regions=n))
    return pd.concat(rows, ignore_index=True), pd.concat(tests, ignore_index=True)


def signed(x: float) -> str:
    """+0.012 / −0.012 (a true minus sign, as in the docs' tables)."""
    return f"{x:+.3f}".replace("-", "\u2212")


def markdown(curve: pd.DataFrame, tests: pd.DataFrame) -> str:
    """One table per kind: regions × shots, MAML, pretrain and their paired difference."""
    lines = []
    for kind, part in curve.groupby("kind", sort=False):
        metric = part["metric"].iloc[0]
        shots = sorted(part["shots"].unique())
        lines += [f"**{kind}** ({metric}, mean ± 95% CI over the test tasks; MAML − pretrain: paired mean "
                  "difference [95% bootstrap CI], Wilcoxon p)", ""]
        columns = ("maml", "pretrain", "maml − pretrain")
        head = ["meta-train regions"] + [f"{s}-shot {m}" for s in shots for m in columns]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in sorted(part["regions"].unique()):
            cells = [str(n)]
            for s in shots:
                for m in ("maml", "pretrain"):
                    r = part[(part["regions"] == n) & (part["shots"] == s) & (part["method"] == m)]
                    cells.append(f"{r['mean'].iloc[0]:.3f} ± {r['ci'].iloc[0]:.3f}" if len(r) else "—")
                t = tests[(tests["kind"] == kind) & (tests["regions"] == n) & (tests["shots"] == s)]
                cells.append("—" if t.empty else
                             f"{signed(t['mean_diff'].iloc[0])} [{signed(t['diff_low'].iloc[0])}, "
                             f"{signed(t['diff_high'].iloc[0])}], p = {t['wilcoxon_p'].iloc[0]:.2g}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(curve: pd.DataFrame, path: Path) -> None:
    """Mean ± 95 % CI against meta-train regions (log scale), one panel per kind and shot count (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(dict.fromkeys(curve["kind"]))
    shots = sorted(curve["shots"].unique())
    fig, axes = plt.subplots(len(kinds), len(shots), figsize=(4.2 * len(shots), 3.4 * len(kinds)), squeeze=False)
    style = {"maml": ("C0", "-"), "pretrain": ("C1", "-"), "random": ("0.5", "--")}
    for i, kind in enumerate(kinds):
        for j, s in enumerate(shots):
            ax = axes[i][j]
            part = curve[(curve["kind"] == kind) & (curve["shots"] == s)]
            for m in PLOTTED:
                r = part[part["method"] == m].sort_values("regions")
                if r.empty:
                    continue
                color, line = style[m]
                ax.plot(r["regions"], r["mean"], line, marker="o", color=color, label=m)
                ax.fill_between(r["regions"], r["mean"] - r["ci"], r["mean"] + r["ci"], color=color, alpha=0.15)
            ticks = sorted(part["regions"].unique())
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("meta-train regions")
            ax.set_ylabel(part["metric"].iloc[0] if len(part) else "")
            ax.set_title(f"{kind}, {s}-shot")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; lists are parsed and checked here."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", type=Path, required=True, help="the SEN12MS raw tiles the store was made from")
    p.add_argument("--data", type=Path, required=True, help="the full chip store (test tasks, meta-val, split)")
    p.add_argument("--out", type=Path, required=True, help="study folder (reruns resume)")
    p.add_argument("--subsets", default="8,16,32,64,all", help="meta-train region counts, e.g. 8,16,all")
    p.add_argument("--kinds", default="classification,segmentation", help="task kinds to study")
    p.add_argument("--shots", default="1,5", help="shot counts to evaluate")
    p.add_argument("--steps", type=int, help="outer steps of every training (default: each config's meta.steps)")
    p.add_argument("--tasks", type=int, help="test tasks per shot count (default: the config's task.test_tasks)")
    p.add_argument("--workers", type=int, default=1, help="processes for preprocessing and evaluation")
    p.add_argument("--seed", type=int, default=0, help="seed of the nested subsets")
    p.add_argument("--cls-config", default="demo-cls", help="classification config (MAML and pretraining)")
    p.add_argument("--seg-config", default="demo-seg", help="segmentation pretraining config")
    p.add_argument("--seg-maml-config", default="demo-seg-maml",
                   help="segmentation MAML config (started from the segmentation pretraining)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every training (repeatable)")
    args = p.parse_args(argv)
    args.sizes = parse_ints("--subsets", args.subsets, allow_all=True)
    args.shots = [int(s) for s in parse_ints("--shots", args.shots) if s is not None]
    args.kinds = parse_list("--kinds", args.kinds)
    unknown = [k for k in args.kinds if k not in ("classification", "segmentation")]
    if unknown:
        raise ConfigError(f"--kinds {','.join(args.kinds)}: unknown kind {unknown[0]!r} "
                          "(expected classification, segmentation)")
    for flag, value in (("--steps", args.steps), ("--tasks", args.tasks), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the study; bad input is one line on stderr and exit status 2, with nothing written."""
    try:
        args = parse_args(argv)
        for kind in args.kinds:  # every config readable before anything is written
            kind_configs(args, kind, {"pretrain": args.out})
        store = ChipStore.open(args.data)
        order, sizes = plan_subsets(store.regions_in("train"), args.sizes, args.seed, store.path)
        if not args.raw.is_dir():
            raise StoreError(f"{args.raw}: no folder of raw SEN12MS tiles here")
        with output_lock(args.out):
            study(args, store, order, sizes)
    except LandmetaError as exc:
        print(f"regions_curve: {exc}", file=sys.stderr)
        return 2
    print(f"study: {args.out / 'curve.md'}, {args.out / 'curve.csv'}, {args.out / 'curve.png'}")
    return 0


def study(args: argparse.Namespace, store: ChipStore, order: list[str], sizes: list[int]) -> None:
    """Every subset store, training and evaluation (skipped or resumed when done), then the curve."""
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "subsets.json", {
        "store": str(store.path.resolve()), "raw": str(args.raw.resolve()), "seed": args.seed, "order": order,
        "subsets": {str(n): sorted(order[:n]) for n in sizes}})
    folders: dict[tuple[str, int], Path] = {}
    for n in sizes:
        print(f"{n} meta-train regions", flush=True)
        data = subset_store(args.raw, store, order[:n], args.out / "subsets" / f"n{n}", args.workers)
        for kind in args.kinds:
            folders[kind, n] = run_kind(args, kind, n, data)
    curve, tests = collect(folders)
    atomic_write_text(args.out / "curve.csv", curve.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(args.out / "curve.md", markdown(curve, tests))
    plot(curve, args.out / "curve.png")


if __name__ == "__main__":
    sys.exit(main())
