"""SLN-tiny inference against a plain torchvision Mask R-CNN with the same backbone and input size (the
``maskrcnn_amodal`` baseline: same backbone, FPN, RPN and box head, one amodal mask head), same run.

    .venv/bin/python bench/infer_bench.py [--repeats 9] [--checkpoint CKPT] [--threads 1]

On synthetic 256x256 scenes (`semlayer.synth.generate_scene`) with 10 and 50 objects, both models
are forced to return exactly 10 / 50 detections (score threshold 0, box NMS off, ``detections_per_img``
= N; mask NMS off), so post-processing handles N instances. Per image it times, interleaving the models:

  network  `Predictor.set_image` (the forward pass in inference mode)
  post     `Predictor.scene` on a fresh cache (paste, NMS, depth order, painter's rule, full-frame maps)

and prints medians, the ratio SLN / baseline (target <= 1.25) and post-processing's share of the total.
"SLN, no maps" is the SLN as `semlayer predict` runs it (``Predictor(semdist=False)``: the sem-dist layers
skipped, since files hold no sem-dist maps; masks, layers and order are the same).
"Mask R-CNN, CL" is the baseline with its mask branch in channels-last memory, as the SLN's runs (PyTorch's
CPU transposed convolution is several times faster in it): the target compares against plain torchvision,
this row shows how much of the SLN's speed is that layout rather than its own heads' cost.
The SLN uses CKPT's weights (default: the shipped demo model when present, else random weights; timing
barely depends on the weights once the detection count is fixed); the baseline has random weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semlayer.config import load_config  # noqa: E402
from semlayer.model import build_model  # noqa: E402
from semlayer.model.checkpoint import read_checkpoint  # noqa: E402
from semlayer.predict import DEFAULT_CHECKPOINT, Predictor  # noqa: E402
from semlayer.synth import generate_scene  # noqa: E402

SIZE = 256


def predictor(config: dict, kind: str, detections: int, state: dict | None, semdist: bool = True) -> Predictor:
    """A predictor whose model returns exactly ``detections`` boxes per image."""
    model_cfg = dict(
        config["model"],
        kind=kind,
        box_score_thresh=0.0,
        box_nms_thresh=1.0,
        box_detections_per_img=detections,
        init=None,
    )
    cfg = {**config, "model": model_cfg}
    torch.manual_seed(0)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state)
    # mask_nms_thr 1.0: no duplicate suppression, so every forced detection reaches the scene.
    return Predictor(model=model, config=cfg, mask_nms_thr=1.0, semdist=semdist)


def channels_last_mask_branch(pred: Predictor) -> Predictor:
    """The baseline's mask head (and so its upsampling, which reads the head's output) in channels-last."""
    pred.model.roi_heads.mask_head.register_forward_pre_hook(
        lambda module, args: (args[0].contiguous(memory_format=torch.channels_last),)
    )
    return pred


def time_once(pred: Predictor, image: np.ndarray) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    pred.set_image(image)
    t1 = time.perf_counter()
    scene = pred.scene(score_thr=0.0)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(scene)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--checkpoint", type=Path, default=None, help="SLN checkpoint (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ckpt_path = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    if ckpt_path is not None:
        ckpt = read_checkpoint(ckpt_path)
        config, state, source = ckpt["config"], ckpt["model"], str(ckpt_path)
    else:
        config, state, source = load_config(ROOT / "configs" / "tiny_synth.yaml"), None, "random weights"
    print(
        f"SLN-tiny ({source}) vs maskrcnn_amodal (random weights), {SIZE}x{SIZE} synthetic scenes, "
        f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}"
    )
    print(
        f"{'dets':>4} {'objects':>7} {'model':>15} {'network ms':>10} {'post ms':>8} {'total ms':>8} {'post share':>10}"
    )
    for n in (10, 50):
        image, gt = generate_scene(np.random.default_rng(n), size=SIZE, max_instances=n, min_instances=n)
        preds = {
            "SLN": predictor(config, "sln", n, state),
            "SLN, no maps": predictor(config, "sln", n, state, semdist=False),
            "Mask R-CNN": predictor(config, "maskrcnn_amodal", n, None),
            "Mask R-CNN, CL": channels_last_mask_branch(predictor(config, "maskrcnn_amodal", n, None)),
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in preds}
        for rep in range(args.repeats + 2):
            for name, pred in preds.items():
                net, post, count = time_once(pred, image)
                if count != n:
                    raise SystemExit(f"{name} gave {count} instances instead of {n}; the benchmark needs exactly {n}")
                if rep >= 2:  # the first two runs warm up allocators and kernels
                    times[name].append((net, post))
        medians = {}
        for name, rows in times.items():
            net = statistics.median(r[0] for r in rows)
            post = statistics.median(r[1] for r in rows)
            total = statistics.median(r[0] + r[1] for r in rows)
            medians[name] = (net, post, total)
            print(
                f"{n:>4} {len(gt):>7} {name:>15} {net * 1e3:>10.1f} {post * 1e3:>8.1f} {total * 1e3:>8.1f} "
                f"{post / total:>10.1%}"
            )
        for name, base_name, label, note in (
            ("SLN", "Mask R-CNN", "ratio SLN/base", "(target total <= 1.25)"),
            ("SLN, no maps", "Mask R-CNN", "no maps/base", "(target total <= 1.25)"),
            ("SLN", "Mask R-CNN, CL", "SLN/CL base", "(the same layout on both)"),
            ("SLN, no maps", "Mask R-CNN, CL", "no maps/CL base", "(the same layout on both)"),
        ):
            sln, base = medians[name], medians[base_name]
            print(
                f"{n:>4} {'':>7} {label:>15} {sln[0] / base[0]:>10.2f} {sln[1] / base[1]:>8.2f} "
                f"{sln[2] / base[2]:>8.2f}   {note}"
            )


if __name__ == "__main__":
    main()
