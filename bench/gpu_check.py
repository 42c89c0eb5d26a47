"""First check of a CUDA machine: train the ResNet-50-FPN SLN and the ResNet-50-FPN Mask R-CNN (amodal)
baseline with the GPU recipe (configs/cocoa_r50.yaml's model, random init) on synthetic scenes at full
resolution with AMP, print seconds per iteration of both, their ratio and the peak GPU memory, then predict
held-out synthetic scenes with the SLN and evaluate them in both protocols.

    bench/gpu_check.sh [--iters 300] [--out DIR]          # CUDA
    bench/gpu_check.sh --device cpu --tiny [--out DIR]     # the same steps on a tiny network, in seconds

Seconds per iteration are the medians of the trainer's logged windows (10 iterations each), the first window
(warm-up, cuDNN autotuning) left out. The two models train one after the other in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semlayer import formats  # noqa: E402
from semlayer.cocoa_eval import format_official_table, official_cocoa_evaluate  # noqa: E402
from semlayer.config import load_config, validate_config  # noqa: E402
from semlayer.engine import train  # noqa: E402
from semlayer.evaluate import evaluate  # noqa: E402
from semlayer.predict import predict_files  # noqa: E402
from semlayer.synth import write_dataset  # noqa: E402

KINDS = {"sln": "SLN", "maskrcnn_amodal": "Mask R-CNN"}


def recipe(kind: str, tiny: bool, iters: int) -> dict:
    """The run's config: the GPU recipe's model (or the tiny CPU one) on synthetic scenes."""
    if tiny:
        cfg = load_config(ROOT / "configs" / "tiny_synth.yaml")
        size, log_every, images = 96, 1, 16
        cfg["model"].update(min_size=size, max_size=size)
        cfg["data"]["workers"] = 0  # a worker process costs more to start than three tiny steps take
        cfg["train"].update(amp=False, warmup_iters=1)
    else:
        cfg = load_config(ROOT / "configs" / "cocoa_r50.yaml")
        size, log_every, images = 800, 10, 2000
        cfg["model"]["init"] = None  # the check needs no download; the speed does not depend on the weights
        cfg["train"].update(amp=True, warmup_iters=min(50, iters // 4))
        cfg["data"]["train"] = {"annotations": None, "images": None}
        cfg["data"]["val"] = {"annotations": None, "images": None}
    cfg["model"]["kind"] = kind
    cfg["data"]["synthetic"].update(num_images=images, size=size, seed=0)
    cfg["data"]["val_synthetic"].update(num_images=2, size=size, seed=1)
    cfg["train"].update(max_iters=iters, batch_size=2, log_every=log_every, val_every=iters, checkpoint_every=iters)
    return validate_config(cfg, f"gpu_check {kind}")


def seconds_per_iteration(log_file: Path) -> float:
    windows = [r["time"] for r in map(json.loads, log_file.read_text().splitlines()) if r.get("split") == "train"]
    return statistics.median(windows[1:] or windows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="the tiny CPU network at 96 px: the steps, not the speed")
    p.add_argument("--iters", type=int, default=None, help="iterations per model (default 300; 3 with --tiny)")
    p.add_argument("--heldout", type=int, default=None, help="held-out scenes to predict (default 50; 2 with --tiny)")
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: 1 with --tiny, as OpenMP threads spin against a shared machine's jobs)",
    )
    args = p.parse_args(argv)
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (run with --device cpu --tiny for the CPU check)", file=sys.stderr)
        return 2
    iters = args.iters or (3 if args.tiny else 300)
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_"))
    cuda = args.device == "cuda"
    print(
        f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, {iters} iterations per model, "
        f"{'tiny network, 96 px' if args.tiny else 'ResNet-50-FPN, 800 px, AMP'}; runs in {out}"
    )

    timing: dict[str, tuple[float, float | None]] = {}
    for kind, name in KINDS.items():
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        train(copy.deepcopy(recipe(kind, args.tiny, iters)), out / kind, device=args.device, progress=False)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        timing[kind] = (seconds_per_iteration(out / kind / "log.jsonl"), peak)
        print(f"{name:<16} {timing[kind][0]:.3f} s/iter" + (f", peak GPU memory {peak:.2f} GiB" if cuda else ""))
    ratio = timing["sln"][0] / timing["maskrcnn_amodal"][0]
    print(f"SLN / Mask R-CNN  {ratio:.2f}x s/iter")

    size = 96 if args.tiny else 800
    heldout = write_dataset(
        out / "heldout", num_images=args.heldout or (2 if args.tiny else 50), seed=12345, size=size, progress=False
    )
    pred = out / "heldout_pred.json"
    report = predict_files(
        out / "sln" / "last.pt",
        [out / "heldout" / "images"],
        pred,
        fmt="results",
        score_thr=0.05,
        device=args.device,
        progress=False,
    )
    print(f"predicted {report.num_images} held-out scenes, {report.num_instances} instances")
    gt, predictions = formats.load(heldout), formats.load(pred)
    default = evaluate(gt, predictions, gt_file=str(heldout), pred_file=str(pred))
    print(
        f"default protocol: amodal AP {default['amodal_AP']:.3f}, AP50 {default['amodal_AP50']:.3f}, "
        f"order accuracy {default['order_acc']:.3f}"
    )
    official = official_cocoa_evaluate(gt, predictions, gt_file=str(heldout), pred_file=str(pred))
    print(format_official_table(official))
    summary = {
        "device": args.device,
        "tiny": args.tiny,
        "iterations": iters,
        "s_per_iter": {k: t for k, (t, _) in timing.items()},
        "ratio": ratio,
        "peak_gib": {k: m for k, (_, m) in timing.items()},
        "default": default,
        "cocoa_official": official,
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
