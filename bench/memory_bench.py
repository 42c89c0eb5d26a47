"""Memory and time of holding a whole annotation file: full-frame masks (`formats.load`) against compact
scenes (`formats.load(compact=True)`: RLE, decoded per scene), same run; and of `evaluate` on each.

    .venv/bin/python bench/memory_bench.py [--images 200] [--size 640] [--objects 12]

The files are synthetic layouts (`semlayer.synth.sample_layout`, no image rendering) written as a COCO-style
ground truth and a results list (the ground truth's masks shifted by 2 px, with scores). Peak memory is
tracemalloc's peak of Python and numpy allocations during one extra call (the JSON parse included, the
same for both); times are medians of ``--repeats`` untraced runs. Prints both and the ratios dense / compact.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semlayer import formats  # noqa: E402
from semlayer.evaluate import evaluate  # noqa: E402
from semlayer.scene import AmodalScene, AnnotationSet, Instance  # noqa: E402
from semlayer.synth import sample_layout  # noqa: E402


def write_files(folder: Path, images: int, size: int, objects: int) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(7)
    gt, pred = [], []
    for k in range(images):
        scene = sample_layout(rng, size, objects, 1).to_scene(k + 1)
        scene.image["file_name"] = f"{k + 1:06d}.png"
        gt.append(scene)
        moved = [np.roll(inst.amodal, 2, axis=1) for inst in scene.instances]
        pred.append(
            AmodalScene(
                dict(scene.image),
                [
                    Instance(inst.id, mask, rank=inst.rank, category=inst.category, score=float(rng.uniform(0.3, 1.0)))
                    for inst, mask in zip(scene.instances, moved)
                ],
            )
        )
    gt_path, pred_path = folder / "gt.json", folder / "pred.json"
    categories = [{"id": c, "name": str(c)} for c in sorted({i.category for s in gt for i in s.instances})]
    formats.save(AnnotationSet(gt, categories, format="coco"), gt_path, format="coco")
    formats.save(AnnotationSet(pred, categories, format="coco"), pred_path, format="results")
    return gt_path, pred_path, sum(len(s) for s in gt)


def measure(fn, repeats: int) -> tuple[float, float]:
    """(median seconds of ``repeats`` plain runs, peak MB of one more run under tracemalloc, which slows
    allocation too much to be timed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--objects", type=int, default=12, help="at most this many objects an image")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, pred_path, instances = write_files(Path(tmp), args.images, args.size, args.objects)
        print(
            f"{args.images} images of {args.size}x{args.size}, {instances} instances; "
            f"ground truth {gt_path.stat().st_size / 1e6:.1f} MB of JSON; median of {args.repeats}"
        )
        rows = {}
        for compact in (False, True):
            name = "compact" if compact else "dense"
            rows[name, "load"] = measure(lambda: formats.load(gt_path, compact=compact), args.repeats)
            rows[name, "evaluate"] = measure(
                lambda: evaluate(formats.load(gt_path, compact=compact), formats.load(pred_path, compact=compact)),
                args.repeats,
            )
        held = formats.load(gt_path, compact=True).scenes.nbytes / 1e6
        print(f"{'step':>9} {'scenes':>8} {'time s':>7} {'peak MB':>8}")
        for (name, step), (sec, peak) in rows.items():
            print(f"{step:>9} {name:>8} {sec:>7.2f} {peak:>8.1f}")
        for step in ("load", "evaluate"):
            (dt, dm), (ct, cm) = rows["dense", step], rows["compact", step]
            print(f"{step:>9} {'ratio':>8} {dt / ct:>7.2f} {dm / cm:>8.1f}   (dense / compact)")
        print(
            f"compact scenes hold {held:.1f} MB ({held * 1e6 / instances:.0f} bytes an instance); full-frame "
            f"amodal masks alone would be {instances * args.size**2 / 1e6:.0f} MB"
        )


if __name__ == "__main__":
    main()
