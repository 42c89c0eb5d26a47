"""SLN against the Mask R-CNN baselines on a held-out synthetic test set (docs/results.md).

    .venv/bin/python bench/compare_models.py \\
        --model SLN=runs/tiny_synth/last.pt \\
        --model "amodal Mask R-CNN=runs/tiny_synth_maskrcnn_amodal/last.pt" \\
        --model "visible Mask R-CNN=runs/tiny_synth_maskrcnn_visible/last.pt" \\
        [--num-images 200] [--seed 2026] [--work /tmp/semlayer_compare] [--class-agnostic] \\
        [--resamples 1000]

It generates the test set with `python -m semlayer synth` semantics (a seed no training run uses: training
uses 0, validation 1), predicts with each checkpoint exactly as `python -m semlayer predict` does, scores each
with `python -m semlayer evaluate`'s evaluator, and prints a Markdown table plus every metric as JSON.
With ``--resamples N`` it also compares the first model with each other one by a paired bootstrap over the
test images (`python -m semlayer compare`): the difference, its 95 % interval and the share of resamples in
which the first model is ahead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from semlayer import formats  # noqa: E402
from semlayer.evaluate import evaluate, paired_bootstrap  # noqa: E402
from semlayer.predict import predict_files  # noqa: E402
from semlayer.synth import write_dataset  # noqa: E402

COLUMNS = [
    ("amodal AP", "amodal_AP"),
    ("AP50", "amodal_AP50"),
    ("AP75", "amodal_AP75"),
    ("AR100", "amodal_AR100"),
    ("visible AP", "visible_AP"),
    ("AP none", "AP_none"),
    ("AP partial", "AP_partial"),
    ("AP heavy", "AP_heavy"),
    ("mIoU amodal", "miou_amodal"),
    ("mIoU occluded", "miou_occluded"),
    ("order acc", "order_acc"),
    ("order acc, both found", "order_acc_matched"),
    ("occlusion F1", "occlusion_f1"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("/tmp/semlayer_compare"))
    p.add_argument("--score-thr", type=float, default=0.5)
    p.add_argument(
        "--class-agnostic",
        action="store_true",
        help="ignore categories in AP and matching (detection and ordering apart from classification)",
    )
    p.add_argument(
        "--resamples", type=int, default=0, help="paired bootstrap of the first model against each other one (0: none)"
    )
    args = p.parse_args()
    torch.set_num_threads(1)

    test_dir = args.work / f"synth_test_seed{args.seed}"
    gt_path = test_dir / "annotations.json"
    if not gt_path.is_file():
        write_dataset(test_dir, num_images=args.num_images, seed=args.seed, size=args.size)
    gt = formats.load(gt_path)
    rows, files = {}, {}
    for spec in args.model:
        name, _, ckpt = spec.partition("=")
        out = args.work / f"pred_{name.replace(' ', '_')}.json"
        predict_files(ckpt, [test_dir / "images"], out, fmt="cocoa", score_thr=args.score_thr)
        files[name] = out
        rows[name] = evaluate(
            gt, formats.load(out), gt_file=str(gt_path), pred_file=str(out), class_agnostic=args.class_agnostic or None
        )

    print(
        f"test set: {len(gt)} synthetic images, seed {args.seed}, {sum(len(s) for s in gt)} objects; "
        f"score threshold {args.score_thr}{'; class-agnostic' if args.class_agnostic else ''}"
    )
    print("| model | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for _, k in COLUMNS) + " |")
    print(json.dumps(rows, indent=1))
    names = list(files)
    if args.resamples and len(names) > 1:
        first = formats.load(files[names[0]])
        print(f"\npaired bootstrap over the {len(gt)} test images, {args.resamples} resamples: {names[0]} minus ...")
        print("| against | metric | difference | 95 % interval | resamples ahead |")
        print("|---|---|---|---|---|")
        for other in names[1:]:
            result = paired_bootstrap(
                gt,
                first,
                formats.load(files[other]),
                resamples=args.resamples,
                class_agnostic=args.class_agnostic or None,
            )
            for metric in ("amodal_AP", "amodal_AP50", "amodal_AP75", "miou_occluded", "order_acc"):
                r = result[metric]
                print(
                    f"| {other} | {metric} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | "
                    f"{r['share_ahead']:.1%} |"
                )


if __name__ == "__main__":
    main()
