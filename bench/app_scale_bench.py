"""The app on real-sized input: a 2,500-image annotation file, and one 6000 x 4000 photo with 30 instances.

    .venv/bin/python bench/app_scale_bench.py [--images 2500] [--objects 10] [--photo 6000x4000] [--instances 30]

Each measurement runs in a fresh process (peak RSS is the process's high-water mark, ``ru_maxrss``), the way
the page does its work (`app.handlers`, no browser):

  open, index first   `new_tab` on the file, then the first image's page (view, table, inspector, with the
                      shipped model's prediction): what `python -m app --data` does before it answers
  open, decode all    the same with every scene decoded at opening (`formats.load(compact=True)`, the
                      opening before index-first), as the baseline of the same run
  photo               the photo opened the same way with the shipped model, then a click on an instance and
                      its inspector (view reduced for the page, masks at full resolution)

The annotation file is synthetic COCOA (`semlayer.synth` layouts at 640 x 480, polygons as COCOA has them);
only the first image file is written, the only one the first page reads. Files are kept in --work between
runs. Prints seconds and peak RSS per step and the ratios of the baseline to index first. Targets (issue 21):
first image <= 5 s and <= 1 GB; the photo <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def polygon_scene(rng: np.random.Generator, image_id: int, objects: int):
    """A 640 x 480 synthetic layout, its masks traced to polygons (COCOA states regions as polygons)."""
    import cv2

    from semlayer.scene import AmodalScene, Instance
    from semlayer.synth import sample_layout

    layout = sample_layout(rng, 640, objects, min(objects, 4)).to_scene(image_id)
    instances = []
    for inst in layout.instances:
        mask = inst.amodal[:480]
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours = [c for c in contours if len(c) >= 3]
        if not contours:
            continue
        poly = [float(v) for v in max(contours, key=cv2.contourArea).reshape(-1)]
        filled = np.zeros((480, 640), np.uint8)
        cv2.fillPoly(filled, [np.asarray(poly, np.int32).reshape(-1, 2)], 1)
        instances.append(Instance(len(instances) + 1, filled.astype(bool), rank=inst.rank, name=inst.name))
    for rank, inst in enumerate(sorted(instances, key=lambda i: i.rank), start=1):
        inst.rank = rank
    return AmodalScene({"id": image_id, "file_name": f"{image_id:06d}.png", "height": 480, "width": 640}, instances)


def write_dataset(folder: Path, images: int, objects: int) -> Path:
    from semlayer import formats
    from semlayer.scene import AnnotationSet
    from semlayer.synth import sample_layout

    path = folder / f"cocoa_{images}.json"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    scenes = [polygon_scene(rng, k + 1, objects) for k in range(images)]
    formats.save(AnnotationSet(scenes, format="cocoa"), path, format="cocoa")
    import cv2

    first = sample_layout(np.random.default_rng(1), 640, objects).render()[:480]
    cv2.imwrite(str(folder / scenes[0].file_name), cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    return path


def write_photo(folder: Path, width: int, height: int, instances: int) -> Path:
    import cv2

    from semlayer import formats
    from semlayer.scene import AmodalScene, AnnotationSet, Instance
    from semlayer.synth import sample_layout

    path = folder / f"photo_{width}x{height}_{instances}.json"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    layout = sample_layout(np.random.default_rng(30), 600, instances, instances)
    image = cv2.resize(layout.render(), (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(folder / "photo.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    small = layout.to_scene(1)
    scene = AmodalScene(
        {"id": 1, "file_name": "photo.jpg", "height": height, "width": width},
        [
            Instance(
                inst.id,
                cv2.resize(inst.amodal.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool),
                rank=inst.rank,
                name=inst.name,
            )
            for inst in small.instances
        ],
    )
    formats.save(AnnotationSet([scene], format="cocoa"), path, format="cocoa")
    return path


def child(mode: str, data: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import tempfile

    import torch

    from app import handlers as h
    from app import render as r
    from semlayer import workspace as session
    from semlayer import formats
    from semlayer.predict import DEFAULT_CHECKPOINT

    torch.set_num_threads(2)
    if mode == "decode-all":
        session._load_annset = lambda path, sha: formats.load(path, compact=True)
    base = rss_mb()
    with tempfile.TemporaryDirectory() as ws:
        cfg = h.AppConfig(workspace=Path(ws), data=data, images=data.parent, checkpoint=DEFAULT_CHECKPOINT)
        t0 = time.perf_counter()
        tab = h.new_tab(cfg)
        r.render(tab)
        first = time.perf_counter() - t0
        out = {"mode": mode, "first_s": first, "imports_mb": base, "scenes": len(tab.session)}
        if mode == "photo":
            pred = tab.prediction()
            out["predicted"] = len(pred)
            target = tab.session.scene.instances[0]
            y, x = np.argwhere(tab.session.scene.visible(target.id))[0]
            tab.show = "annotation"
            t0 = time.perf_counter()
            h.select_at(tab, int(x), int(y))
            r.render(tab)
            out["click_s"] = time.perf_counter() - t0
            out["instances"] = len(tab.session.scene)
        out["peak_mb"] = rss_mb()
    print(json.dumps(out))


def run(mode: str, data: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(data)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2500)
    p.add_argument("--objects", type=int, default=10, help="at most this many objects an image (COCOA: ~10)")
    p.add_argument("--photo", default="6000x4000")
    p.add_argument("--instances", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/semlayer_app_scale"))
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    data = write_dataset(args.work / "dataset", args.images, args.objects)
    width, height = (int(v) for v in args.photo.split("x"))
    photo = write_photo(args.work / "photo", width, height, args.instances)
    regions = sum(len(a["regions"]) for a in json.loads(data.read_text())["annotations"])
    print(
        f"{args.images} images, {regions} regions, {data.stat().st_size / 1e6:.0f} MB of COCOA JSON; "
        f"medians of {args.repeats} fresh processes"
    )
    rows = {}
    for mode, path in (("index-first", data), ("decode-all", data), ("photo", photo)):
        runs = [run(mode, path) for _ in range(args.repeats)]
        rows[mode] = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "mode"}
        print(mode, json.dumps(rows[mode]))
    new, old = rows["index-first"], rows["decode-all"]
    print("| step | s | peak RSS MB |\n|---|---|---|")
    print(f"| open {args.images} images, first image: index first | {new['first_s']:.2f} | {new['peak_mb']:.0f} |")
    print(
        f"| open {args.images} images, first image: decode all (baseline) | {old['first_s']:.2f} | {old['peak_mb']:.0f} |"
    )
    print(
        f"| ratio baseline / index first | {old['first_s'] / new['first_s']:.1f} | {old['peak_mb'] / new['peak_mb']:.2f} |"
    )
    ph = rows["photo"]
    print(
        f"| {args.photo} photo, {int(ph['instances'])} instances ({int(ph['predicted'])} predicted): open | "
        f"{ph['first_s']:.2f} | |"
    )
    print(f"| the photo: click + inspector | {ph['click_s']:.2f} | {ph['peak_mb']:.0f} |")
    print(f"(RSS after imports: {new['imports_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
