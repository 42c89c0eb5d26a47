"""`python -m semlayer COMMAND`: synth, convert, validate, encode, render, predict, evaluate, compare,
figures.

Every command reports bad input as one clear line on stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import SemlayerError
from .images import image_file, read_image
from .io_utils import atomic_write_bytes, atomic_write_json
from .scene import AmodalScene, AnnotationSet


class UsageError(SemlayerError):
    """A command-line value that does not fit (e.g. an image id the file does not have)."""


def _scene_for_image(annset: AnnotationSet, image_id: int, source: str) -> AmodalScene:
    scenes = annset.scenes_for_image(image_id)
    if not scenes:
        known = sorted({s.image_id for s in annset.scenes})
        preview = ", ".join(map(str, known[:10])) + (" ..." if len(known) > 10 else "")
        raise UsageError(
            f"{source}: no annotation for image id {image_id} (image ids with annotations: {preview or 'none'})"
        )
    return scenes[0]


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import write_dataset

    path = write_dataset(
        args.out_dir, num_images=args.num_images, seed=args.seed, size=args.size, max_instances=args.max_instances
    )
    print(f"wrote {args.num_images} images and {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import formats

    annset = formats.load(args.input, compact=True)  # masks as RLE; the writer decodes one scene at a time
    formats.save(annset, args.output, format=args.to)
    n = annset.num_instances()
    print(
        f"read {args.input} ({annset.format}: {len(annset.scenes)} scenes, {n} instances); wrote {args.output} ({args.to})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from . import formats

    report = formats.validation_report(args.input)
    for v in report.violations:
        print(f"{args.input}: {v}")
    for note in report.notes:  # valid data worth knowing about (external occlusion), never a violation
        print(f"{args.input}: note: {note}")
    if report.valid:
        print(f"{args.input}: valid")
        return 0
    print(f"{args.input}: {len(report.violations)} violation(s)", file=sys.stderr)
    return 1


def _check_levels(args: argparse.Namespace) -> None:
    """--K and --tau as the sem-dist encoding needs them (a positive count and a positive, finite distance)."""
    if args.K < 1:
        raise UsageError(f"--K must be a positive number of depth levels, got {args.K}")
    if not (np.isfinite(args.tau) and args.tau > 0):
        raise UsageError(f"--tau must be a positive number of pixels, got {args.tau}")


def cmd_encode(args: argparse.Namespace) -> int:
    from . import formats, semdist

    _check_levels(args)
    annset = formats.load(args.input)
    scene = _scene_for_image(annset, args.image_id, args.input)
    maps = semdist.encode_scene(scene, K=args.K, tau=args.tau)
    arrays: dict[str, Any] = {
        "semdist": np.stack([m.full() for m in maps]) if maps else np.zeros((0, *scene.shape), np.float32),
        "layers": semdist.instance_layer_maps(scene, K=args.K),
        "global_layers": semdist.global_layering_map([i.amodal for i in scene.instances], scene.shape, K=args.K),
        "ranks": np.asarray(scene.ranks(), np.int32),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}: {len(maps)} instances, K={args.K}, tau={args.tau}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from . import formats, viz

    _check_levels(args)
    annset = formats.load(args.input)
    scene = _scene_for_image(annset, args.image_id, args.input)
    image = read_image(image_file(args.images, scene.file_name), expected_hw=scene.shape)
    figure = viz.level_set_figure(image, scene, K=args.K, tau=args.tau)
    viz.save_png(figure, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_files

    report = predict_files(
        args.checkpoint,
        args.inputs,
        args.out,
        fmt=args.format,
        score_thr=args.score_thr,
        device=args.device,
        workers=args.workers,
        batch_size=args.batch_size,
    )
    if not report.written:  # another process of a torchrun wrote the file and reports it
        return 0
    for path, message in report.skipped:
        print(f"skipped {path}: {message}", file=sys.stderr)
    print(f"wrote {args.out}: {report.num_images} images, {report.num_instances} instances ({args.format})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_table, load_all_for_evaluation

    gt, pred = load_all_for_evaluation(args.gt, args.pred)  # masks as the RLEs the files state
    if args.protocol == "cocoa-official":
        from .cocoa_eval import JSON_KEY, format_official_table, official_cocoa_evaluate

        metrics = official_cocoa_evaluate(gt, pred, max_dets=args.max_dets, gt_file=args.gt, pred_file=args.pred)
        print(format_official_table(metrics))
        if args.json:
            atomic_write_json(args.json, {JSON_KEY: metrics}, indent=2)
            print(f"wrote {args.json}")
        return 0
    metrics = evaluate(gt, pred, gt_file=args.gt, pred_file=args.pred, class_agnostic=args.class_agnostic or None)
    print(format_table(metrics))
    if args.json:
        atomic_write_json(args.json, metrics, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .evaluate import format_comparison, load_all_for_evaluation, paired_bootstrap

    gt, pred, baseline = load_all_for_evaluation(args.gt, args.pred, args.baseline)
    result = paired_bootstrap(
        gt,
        pred,
        baseline,
        resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
        gt_file=args.gt,
        pred_file=args.pred,
        baseline_file=args.baseline,
        class_agnostic=args.class_agnostic or None,
    )
    print(
        f"{args.pred} against {args.baseline}: paired bootstrap over the images of {args.gt}, "
        f"{args.resamples} resamples (seed {args.seed})"
    )
    print(format_comparison(result, args.confidence))
    if args.json:
        atomic_write_json(args.json, result, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from .model.checkpoint import export_for_inference

    path = export_for_inference(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import render_readme_figures

    for path in render_readme_figures(args.out, data=args.data, images=args.images, image_id=args.image_id):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="semlayer", description="Amodal instance segmentation with sem-dist maps.")
    p.add_argument("--version", action="version", version=f"semlayer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="generate a synthetic amodal dataset (images + COCOA JSON)")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--num-images", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    s.add_argument("--max-instances", type=int, default=6)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser(
        "convert", help="convert any supported annotation file to COCOA native, COCO-style amodal or KINS 2020"
    )
    s.add_argument("input", metavar="IN")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--to", choices=["cocoa", "coco", "kins"], required=True)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("validate", help="check an annotation file (exit 0 valid, 1 violations, 2 unreadable)")
    s.add_argument("input", metavar="IN")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("encode", help="write one image's sem-dist maps, layers and global layering map (.npz)")
    s.add_argument("input", metavar="IN")
    s.add_argument("--image-id", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--K", type=int, default=3, help="depth levels (default 3)")
    s.add_argument("--tau", type=float, default=6.0, help="distance truncation in pixels (default 6)")
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("render", help="draw one image's sem-dist level sets over the image (PNG)")
    s.add_argument("input", metavar="IN")
    s.add_argument("--image-id", type=int, required=True)
    s.add_argument("--images", required=True, help="folder of the images")
    s.add_argument("--out", required=True)
    s.add_argument("--K", type=int, default=3)
    s.add_argument("--tau", type=float, default=6.0)
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("predict", help="run a checkpoint on images or folders and write the predicted annotations")
    s.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped demo model)")
    s.add_argument("inputs", nargs="+", metavar="INPUT")
    s.add_argument("--out", required=True)
    s.add_argument("--format", choices=["cocoa", "coco", "results"], default="cocoa")
    s.add_argument("--score-thr", type=float, default=0.5)
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--workers", type=int, default=2, help="DataLoader processes reading images (default 2; 0: none)")
    s.add_argument("--batch-size", type=int, default=4, help="images a worker reads at a time (default 4)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="score predictions against ground truth (any supported formats)")
    s.add_argument("--gt", required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--json", default=None, help="also write the metrics as JSON")
    s.add_argument(
        "--protocol",
        choices=["default", "cocoa-official"],
        default="default",
        help="default: every semlayer metric; cocoa-official: COCOA's official amodalAPI numbers "
        "(class-agnostic, its occlusion buckets), under 'cocoa_official' in --json",
    )
    s.add_argument(
        "--max-dets",
        type=int,
        choices=[100, 1000],
        default=1000,
        help="cocoa-official: detections per image for AP (amodalAPI's maxProp, default 1000)",
    )
    s.add_argument(
        "--class-agnostic",
        action="store_true",
        help="ignore categories (default when either file has none, e.g. COCOA)",
    )
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("compare", help="how sure is 'PRED beats BASELINE': a paired bootstrap over the test images")
    s.add_argument("--gt", required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--baseline", required=True)
    s.add_argument("--resamples", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--confidence", type=float, default=0.95, help="interval coverage (default 0.95)")
    s.add_argument("--json", default=None, help="also write the comparison as JSON")
    s.add_argument(
        "--class-agnostic", action="store_true", help="ignore categories (default when a file has none, e.g. COCOA)"
    )
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("export-model", help="strip a training checkpoint to what inference and fine-tuning need")
    s.add_argument("checkpoint")
    s.add_argument("out")
    s.set_defaults(func=cmd_export_model)

    s = sub.add_parser("figures", help="render the README figures (level sets, 3-D surface, global layering)")
    s.add_argument("--out", type=Path, default=Path("docs/figures"))
    s.add_argument("--data", default=None, help="annotation file (default: the bundled demo)")
    s.add_argument("--images", default=None)
    s.add_argument("--image-id", type=int, default=None)
    s.set_defaults(func=cmd_figures)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SemlayerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: no such file", file=sys.stderr)
        return 2
    except (IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc.filename or exc}: {exc.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:  # formats turn these into FormatError; this is the last net
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:  # the size caps should prevent it; a machine with little memory may still run out
        print(f"error: {args.command}: out of memory (the input asks for more than this machine has)", file=sys.stderr)
        return 2
