"""Train the SLN (or a Mask R-CNN baseline): a thin entry point to `semlayer.engine.train`.

    python train.py --config configs/tiny_synth.yaml [--data ANN.json --images DIR]
        [--val-data ANN.json --val-images DIR] [--out DIR] [--max-iters N] [--batch-size B] [--lr LR]
        [--init CKPT] [--resume] [--device cpu|cuda] [--seed S] [--workers W] [--threads T]

Several processes: ``torchrun --nproc_per_node 2 train.py ...`` (gloo on CPU, NCCL on CUDA).
Bad configuration or data: a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from semlayer.config import load_config, validate_config
from semlayer.engine import train
from semlayer.errors import ConfigError, SemlayerError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the Semantic Layering Network (or a Mask R-CNN baseline).")
    p.add_argument("--config", required=True, help="YAML training configuration (configs/*.yaml)")
    p.add_argument(
        "--data",
        help="training annotation file (COCOA, COCO-style amodal or KINS); "
        "default: the config's data, else its synthetic set",
    )
    p.add_argument("--images", help="image folder of --data")
    p.add_argument("--val-data", help="validation annotation file")
    p.add_argument("--val-images", help="image folder of --val-data")
    p.add_argument("--out", help="output folder (default: runs/<config name>)")
    p.add_argument("--max-iters", type=int, help="training iterations (overrides train.max_iters)")
    p.add_argument("--batch-size", type=int, help="images per process and iteration (overrides train.batch_size)")
    p.add_argument("--lr", type=float, help="base learning rate (overrides train.lr)")
    p.add_argument("--init", help="fine-tune from this checkpoint (or a plain state_dict file)")
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    p.add_argument(
        "--stop-at",
        type=int,
        help="stop after this iteration, as an interruption would (the learning "
        "rate schedule still spans --max-iters; continue with --resume)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    p.add_argument("--workers", type=int, help="data loader worker processes (overrides data.workers)")
    p.add_argument(
        "--threads", type=int, help="CPU threads per process (default: the cores split between the local processes)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _pair(data: str | None, images: str | None, what: str) -> tuple[str, str] | None:
    if bool(data) != bool(images):
        raise ConfigError(f"--{what}data and --{what}images go together")
    return (data, images) if data else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # One process per core share: torchrun's local processes split the machine's cores between them.
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    try:
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads: expected >= 1, got {args.threads}")
        if args.device == "cpu":
            torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // procs))
        config = load_config(args.config)
        overrides = {"max_iters": args.max_iters, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
        for key, value in overrides.items():
            if value is not None:
                config["train"][key] = value
        config = validate_config(config, f"{args.config} with command-line options")
        if args.stop_at is not None and args.stop_at < 1:
            raise ConfigError(f"--stop-at: expected >= 1, got {args.stop_at}")
        if args.workers is not None and args.workers < 0:
            raise ConfigError(f"--workers: expected >= 0, got {args.workers}")
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        if args.resume and not (out / "last.pt").is_file():
            raise ConfigError(f"--resume: {out / 'last.pt'} does not exist (train without --resume first)")
        train(
            config,
            out,
            device=args.device,
            resume=args.resume,
            init=args.init,
            train_data=_pair(args.data, args.images, ""),
            val_data=_pair(args.val_data, args.val_images, "val-"),
            workers=args.workers,
            progress=not args.no_progress,
            stop_at=args.stop_at,
        )
    except SemlayerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
