"""Training-step benchmark of SLN-tiny against plain torchvision Mask R-CNN with the same backbone and input.

    python bench/train_bench.py [--config configs/tiny_synth.yaml] [--steps 15] [--batch-size 4] [--threads T]
        [--no-ddp]

Prints medians: seconds per training step (forward + backward + SGD step) of both models measured in the
same run, interleaved round by round so machine load hits both alike, their ratio (target <= 1.3), images
per second, and the speed-up of 2-process DDP (torchrun, gloo, half the threads each) over 1 process
at the same global batch. ``--threads`` sets the intra-op threads of the single process (default: all cores;
on a machine other jobs share, 1 avoids OpenMP threads spinning against them, which can cost 10x).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semlayer.config import load_config  # noqa: E402
from semlayer.data import build_dataset, collate  # noqa: E402
from semlayer.model import build_model  # noqa: E402


def make_batches(config: dict, batch_size: int, count: int, offset: int = 0) -> list:
    ds = build_dataset(config, "train", True)
    return [collate([ds[(offset + i * batch_size + j) % len(ds)] for j in range(batch_size)]) for i in range(count)]


def step_fn(model: torch.nn.Module, lr: float):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()

    def step(batch) -> float:
        t0 = time.perf_counter()
        losses = model(*batch)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def bench_models(config: dict, batch_size: int, steps: int, warmup: int) -> dict[str, float]:
    batches = make_batches(config, batch_size, 6)
    models = {}
    for kind in ("maskrcnn_amodal", "sln"):
        cfg = copy.deepcopy(config)
        cfg["model"]["kind"] = kind
        torch.manual_seed(0)
        models[kind] = step_fn(build_model(cfg), 0.002)  # a small lr: the benchmark must not diverge
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(warmup + steps):
        for kind, step in models.items():
            t = step(batches[i % len(batches)])
            if i >= warmup:
                times[kind].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def ddp_worker(config_path: str, batch_size: int, steps: int, warmup: int) -> None:
    """One torchrun process: DDP training steps on its shard; rank 0 prints the median step time as JSON."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(int(os.environ["SEMLAYER_BENCH_THREADS"]))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = load_config(config_path)
    torch.manual_seed(0)
    model = DistributedDataParallel(build_model(config))
    batches = make_batches(config, batch_size, 6, offset=rank * 6 * batch_size)
    step = step_fn(model, 0.002)
    times = []
    for i in range(warmup + steps):
        dist.barrier()
        t = step(batches[i % len(batches)])
        if i >= warmup:
            times.append(t)
    if rank == 0:
        print(json.dumps({"world": world, "step": statistics.median(times)}))
    dist.destroy_process_group()


def run_ddp(config_path: str, procs: int, threads: int, batch_size: int, steps: int, warmup: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SEMLAYER_BENCH_THREADS=str(threads))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(procs),
        __file__,
        "--ddp-worker",
        "--config",
        config_path,
        "--batch-size",
        str(batch_size),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"torchrun failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return float(json.loads(line)["step"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny_synth.yaml"))
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ddp_worker:
        ddp_worker(args.config, args.batch_size, args.steps, args.warmup)
        return

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    size = config["data"]["synthetic"]["size"]
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"input: {args.batch_size} synthetic images of {size}x{size} per step; medians of {args.steps} steps")
    med = bench_models(config, args.batch_size, args.steps, args.warmup)
    base, sln = med["maskrcnn_amodal"], med["sln"]
    print(f"Mask R-CNN (same tiny backbone): {base:.3f} s/step  {args.batch_size / base:.1f} images/s")
    print(f"SLN-tiny:                        {sln:.3f} s/step  {args.batch_size / sln:.1f} images/s")
    print(f"ratio SLN / Mask R-CNN: {sln / base:.2f}  (target <= 1.3)")
    if args.no_ddp:
        return
    half = max(1, args.batch_size // 2)
    one = run_ddp(args.config, 1, args.threads, args.batch_size, args.steps, args.warmup)
    two = run_ddp(args.config, 2, max(1, args.threads // 2), half, args.steps, args.warmup)
    print(
        f"DDP, global batch {args.batch_size}: 1 process {one:.3f} s/step ({args.batch_size / one:.1f} images/s), "
        f"2 processes x {half} images {two:.3f} s/step ({2 * half / two:.1f} images/s)"
    )
    print(f"DDP speed-up 2 processes / 1 process: {(2 * half / two) / (args.batch_size / one):.2f}")


if __name__ == "__main__":
    main()
