"""Benchmark of the MAML core: meta-step time against plain training passes, and peak memory, per k.

For k = 1..K inner steps it times (CPU time of the process on CPU, wall time on CUDA), side by
side and interleaved in one process:
  * a second-order meta-step (`landmeta.meta.maml.meta_step`, one task),
  * the same step with PyTorch's own BatchNorm double backward instead of
    `landmeta.models.batchnorm` (to measure what that module saves),
  * a first-order meta-step,
  * the baseline: k forward+backward passes over the support batch plus one over the query batch
    with the plain module (the same data volume as the meta-step, no graph through the steps),
and prints median times and the ratios meta-step / baseline (goals: <= 2.5 second order, <= 1.3
first order). Peak memory per step is measured in a fresh subprocess per (k, mode) as the peak
above the memory in use before the step: sampled resident set size on CPU (glibc may keep freed
memory, so this is the high-water mark of the process), `torch.cuda.max_memory_allocated` on CUDA.

    python scripts/bench_meta.py --model conv --max-k 5
    python scripts/bench_meta.py --model unet --max-k 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from contextlib import nullcontext

import torch

import landmeta.meta.maml as maml
from landmeta.config import MetaConfig, ModelConfig
from landmeta.meta.maml import build_rates, meta_step, task_loss
from landmeta.models.batchnorm import BatchNormMode
from landmeta.models import build_model

SETTINGS = {  # model config, kind, bands, chip size, support size, query size, classes
    "conv": (ModelConfig(name="conv", width=64, depth=4), "classification", 13, 32, 4, 8, 4),
    "unet": (ModelConfig(name="unet", encoder="resnet18", encoder_depth=3, decoder_channels=[64, 32, 16]),
             "segmentation", 13, 64, 2, 2, 10),
}


def setup(name: str, device: torch.device):
    cfg, kind, bands, size, n_support, n_query, classes = SETTINGS[name]
    torch.manual_seed(0)
    model = build_model(cfg, bands, classes, kind, chip_size=size).to(device)
    g = torch.Generator().manual_seed(1)

    def labels(n: int) -> torch.Tensor:
        shape = (n,) if kind == "classification" else (n, size, size)
        return torch.randint(0, classes, shape, generator=g)

    task = (torch.randn(n_support, bands, size, size, generator=g), labels(n_support),
            torch.randn(n_query, bands, size, size, generator=g), labels(n_query))
    return model, tuple(t.to(device) for t in task)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline(model: torch.nn.Module, task, k: int) -> None:
    xs, ys, xq, yq = task
    model.zero_grad(set_to_none=True)
    for _ in range(k):
        task_loss(model(xs), ys).backward()
    task_loss(model(xq), yq).backward()


def meta(model: torch.nn.Module, task, k: int, first_order: bool) -> None:
    cfg = MetaConfig(method="fomaml" if first_order else "maml", inner_steps=k, inner_lr=0.01)
    rates = build_rates(model, cfg)
    model.zero_grad(set_to_none=True)
    meta_step(model, rates, cfg, [task], outer_step=0)


def meta_torch_bn(model: torch.nn.Module, task, k: int) -> None:
    """The second-order step with PyTorch's BatchNorm double backward."""
    maml.BatchNormMode = nullcontext
    try:
        meta(model, task, k, False)
    finally:
        maml.BatchNormMode = BatchNormMode


def timed(fn, device: torch.device) -> float:
    """Seconds of `fn`: CPU time of this process on CPU (less sensitive to other processes on a
    shared machine than wall time; with one torch thread it is the compute time), wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def time_ratios(name: str, max_k: int, repeats: int, device: torch.device) -> list[dict]:
    model, task = setup(name, device)
    model.train()
    rows = []
    for k in range(1, max_k + 1):
        runs = {"base": lambda: baseline(model, task, k), "so": lambda: meta(model, task, k, False),
                "so_torch_bn": lambda: meta_torch_bn(model, task, k), "fo": lambda: meta(model, task, k, True)}
        for fn in runs.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(repeats):  # interleaved, so load changes hit all three alike
            for key, fn in runs.items():
                times[key].append(timed(fn, device))
        med = {key: statistics.median(v) for key, v in times.items()}
        rows.append({"k": k, "baseline_ms": 1e3 * med["base"], "second_order_ms": 1e3 * med["so"],
                     "second_order_torch_bn_ms": 1e3 * med["so_torch_bn"],
                     "first_order_ms": 1e3 * med["fo"], "second_order_ratio": med["so"] / med["base"],
                     "first_order_ratio": med["fo"] / med["base"]})
    return rows


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_memory(name: str, k: int, mode: str, device: torch.device) -> float:
    """MiB of peak memory above the state before the first step, over 3 repetitions of `mode`.

    CPU: the resident set size sampled every 0.2 ms by a thread (torch releases the GIL in its
    kernels); CUDA: `torch.cuda.max_memory_allocated`.
    """
    model, task = setup(name, device)
    model.train()
    fn = {"base": lambda: baseline(model, task, k), "so": lambda: meta(model, task, k, False),
          "fo": lambda: meta(model, task, k, True)}[mode]
    if device.type == "cuda":
        fn()  # first call allocates lazily initialised buffers
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(3):
            fn()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before, peak, done = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        fn()
    done.set()
    sampler.join()
    return max(0.0, peak[0] - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETTINGS), default="conv")
    parser.add_argument("--max-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-probe", nargs=2, metavar=("K", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_probe:
        print(json.dumps(peak_memory(args.model, int(args.memory_probe[0]), args.memory_probe[1], device)))
        return
    cfg, kind, bands, size, n_s, n_q, classes = SETTINGS[args.model]
    print(f"# {args.model} ({kind}, {bands} bands, {size} px, support {n_s}, query {n_q}), device "
          f"{device}, torch threads {args.threads}, median of {args.repeats}")
    print("| k | baseline (k+1) fwd+bwd ms | 2nd-order step ms | ratio | 2nd order, PyTorch BN ms "
          "| 1st-order step ms | ratio | peak MiB baseline | 2nd order | 1st order |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in time_ratios(args.model, args.max_k, args.repeats, device):
        memory = []
        for mode in ("base", "so", "fo"):
            probe = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--device", args.device, "--threads",
                 str(args.threads), "--memory-probe", str(row["k"]), mode],
                capture_output=True, text=True, check=True)
            memory.append(float(probe.stdout.strip()))
        print(f"| {row['k']} | {row['baseline_ms']:.1f} | {row['second_order_ms']:.1f} | "
              f"{row['second_order_ratio']:.2f} | {row['second_order_torch_bn_ms']:.1f} | "
              f"{row['first_order_ms']:.1f} | {row['first_order_ratio']:.2f} | "
              f"{memory[0]:.0f} | {memory[1]:.0f} | {memory[2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
