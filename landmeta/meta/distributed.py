"""Multi-process training with `torch.distributed`: process group, task split, gradient reduction.

A run started by `torchrun` (or `landmeta train --nproc N`, which re-executes itself through
`torch.distributed.run`) has WORLD_SIZE, RANK and LOCAL_RANK in its environment. Each outer step
draws task i of the meta-batch from its own generator seeded by (seed, step, i), so rank r takes
tasks r, r+N, ... without drawing the others; meta-gradients are summed over ranks and divided by
N (each rank already averaged over its own tasks), which gives the mean over the global meta-batch.
Only rank 0 validates and writes files; the others wait at a barrier.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from landmeta.errors import ConfigError, TrainingError


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, local rank (its GPU on a node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The run's World from torchrun's environment variables (one process when they are absent)."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") from exc


def init(world: World, device: torch.device, timeout_s: float = 1800.0) -> None:
    """Join the process group: nccl for CUDA devices, gloo otherwise. Nothing for one process."""
    if world.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """`cuda` becomes `cuda:LOCAL_RANK` (one GPU per process); other devices are kept."""
    if device.type != "cuda":
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {world.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                          f"use --nproc_per_node <= the number of GPUs")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def check_split(meta_batch: int, batch_size: int, pooled: bool, world: World) -> None:
    """ConfigError unless the meta-batch (or the pretraining batch) divides evenly across ranks."""
    if world.size < 1:
        raise ConfigError(f"the number of processes must be >= 1, got {world.size}")
    if pooled and batch_size % world.size:
        raise ConfigError(f"train.batch_size={batch_size} must divide by the number of processes ({world.size})")
    if not pooled and meta_batch % world.size:
        raise ConfigError(f"meta.meta_batch={meta_batch} must divide by the number of processes ({world.size})")


def my_share(count: int, world: World) -> range:
    """Global indices of the items of a batch of `count` that this rank takes: r, r+N, ..."""
    return range(world.rank, count, world.size)


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU batch to `device`, through pinned memory for CUDA (asynchronous copy)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def reduce_gradients(params: list[nn.Parameter], world: World) -> None:
    """Average the `.grad` of `params` over ranks (sum, then divide by the world size), in one message."""
    if not world.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def reduce_buffers(model: nn.Module, before: dict[str, Tensor], world: World) -> None:
    """Combine the buffers each rank updated on its own tasks: float buffers (BatchNorm running
    statistics) are averaged, integer ones (batch counters) get the sum of every rank's increment."""
    if not world.active:
        return
    for name, buf in model.named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= world.size
        else:
            delta = buf - before[name]
            dist.all_reduce(delta)
            buf.copy_(before[name] + delta)


def mean_over_ranks(values: list[float], world: World) -> tuple[float, float]:
    """Sums of `values` and their count over all ranks (NaN values left out), as floats."""
    finite = [v for v in values if v == v]
    t = torch.tensor([sum(finite), float(len(finite))], dtype=torch.float64)
    if world.active:
        dist.all_reduce(t)
    return float(t[0]), float(t[1])


def agree(code: int, world: World) -> int:
    """The largest of every rank's `code` (0 = go on): one rank's stop request stops all."""
    if not world.active:
        return code
    t = torch.tensor([code], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier(world: World) -> None:
    """Wait for every rank (nothing in a single process)."""
    if world.active:
        dist.barrier()


def launch(argv: list[str], nproc: int) -> tuple[int, bool]:
    """Run `landmeta <argv>` in `nproc` processes on this machine through `torch.distributed.run`;
    returns its exit status (non-zero when any rank failed: torchrun then stops the others) and
    whether this process got SIGINT (Ctrl-C) or SIGTERM meanwhile.

    torchrun runs in its own session, so a Ctrl-C reaches only this process, which passes it on
    to the training processes themselves: they save `last.pt` after their current step and exit
    normally, and torchrun ends without reporting a failure."""
    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc given inside a torchrun launch; use one or the other")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "landmeta", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    except OSError as exc:
        raise TrainingError(f"cannot start {cmd[0]} -m torch.distributed.run: {exc}") from exc
    signalled: list[int] = []

    def forward(signum: int, frame: object) -> None:
        signalled.append(signum)
        for pid in _children(proc.pid) or [proc.pid]:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()  # the handler only forwards: waiting goes on
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, bool(signalled)


def _children(pid: int) -> list[int]:
    """The process ids of `pid`'s children (Linux /proc; empty elsewhere)."""
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
