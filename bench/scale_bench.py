"""Whole datasets at growing size: seconds per 1,000 images and peak memory of every command-line step, and
how peak memory grows with the number of images (the goal: flat).

    .venv/bin/python bench/scale_bench.py [--sizes 250 1000 4000] [--side 640] [--objects 18]
        [--kins 1000] [--predict 48] [--app] [--keep DIR]

For each size N it writes a synthetic COCOA-native file (`semlayer.synth` layouts, N images of side x side,
1..objects objects each: --objects 18 gives about 9.6 regions an image, COCOA's density) and runs, each in
its own process, as a user would:

  validate        python -m semlayer validate F
  convert cocoa   python -m semlayer convert F OUT --to cocoa      (and coco, kins)
  evaluate        python -m semlayer evaluate --gt F --pred F      (the file against itself)
  app open        python -m app --data F --images DIR, until the page answers (--app; only the first image
                  is rendered: the app reads the image it shows)

`--kins N` adds one set at KINS geometry (1242 x 375, about 12 objects: three 375 x 375 layouts side by side).
`--predict M` times `python -m semlayer predict` on M rendered images (side x side) in one process and as
`torchrun --standalone --nproc_per_node 2` (gloo; one torch thread per process, as torchrun sets it; the
single process gets the same), and prints the speed-up. Peak memory is the largest resident set of the
step's processes (getrusage of the children, torchrun's workers included). The machine load (1-minute
average) is printed with every step: on a shared machine read the ratios and the slope, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semlayer import formats  # noqa: E402
from semlayer.formats import CompactScenes  # noqa: E402
from semlayer.scene import AmodalScene, AnnotationSet, Instance  # noqa: E402
from semlayer.synth import CATEGORIES, image_rng, rasterize, sample_layout  # noqa: E402

KINS_H, KINS_W, KINS_TILES = 375, 1242, 3


def kins_scene(seed: int, k: int, objects: int) -> tuple[AmodalScene, list]:
    """KINS geometry: three 375 x 375 layouts side by side (exact polygons, shifted)."""
    tiles = [sample_layout(image_rng(seed, KINS_TILES * k + t), KINS_H, objects, 1) for t in range(KINS_TILES)]
    step = (KINS_W - KINS_H) // (KINS_TILES - 1)
    instances = []
    for t, layout in enumerate(tiles):
        for obj in layout.objects:
            polygon = [v + step * t if i % 2 == 0 else v for i, v in enumerate(obj.polygon)]
            rank = len(instances) + 1
            instances.append(
                Instance(
                    id=rank,
                    amodal=rasterize(polygon, KINS_H, KINS_W),
                    rank=rank,
                    name=obj.name,
                    category=obj.category,
                    polygons=[polygon],
                )
            )
    image = {"id": k + 1, "file_name": f"synth_{k + 1:06d}.png", "height": KINS_H, "width": KINS_W}
    return AmodalScene(image, instances, {"id": k + 1, "author": "scale_bench"}), tiles


def render_kins(tiles: list) -> np.ndarray:
    canvas = np.zeros((KINS_H, KINS_W, 3), np.uint8)
    step = (KINS_W - KINS_H) // (KINS_TILES - 1)
    for t, layout in enumerate(tiles):
        canvas[:, step * t : step * t + KINS_H] = layout.render()
    return canvas


def write_set(folder: Path, n: int, side: int, objects: int, kins: bool, rendered: int, seed: int = 0) -> Path:
    """N scenes as COCOA (written scene by scene), the first ``rendered`` images as PNG."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)

    def scenes():
        for k in range(n):
            if kins:
                scene, tiles = kins_scene(seed, k, objects)
                picture = render_kins(tiles) if k < rendered else None
            else:
                layout = sample_layout(image_rng(seed, k), side, objects, 1)
                scene = layout.to_scene(k + 1)
                picture = layout.render() if k < rendered else None
            if picture is not None:
                cv2.imwrite(str(images / scene.file_name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            yield scene

    path = folder / "annotations.json"
    formats.save(AnnotationSet(CompactScenes(scenes()), [dict(c) for c in CATEGORIES], format="cocoa"), path)
    return path


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MB) of a command run to completion in a child process of a fresh measuring process,
    so that getrusage's children maximum is this command's alone."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
        "dt = time.perf_counter() - t; "
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
        "sys.exit(r.returncode and print(r.stderr[-3000:], file=sys.stderr) or r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode not in (0, 1):  # validate exits 1 with violations: still a measured run
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    seconds, mb = out.stdout.split()
    return float(seconds), float(mb)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_open(data: Path, images: Path, workspace: Path) -> tuple[float, float]:
    """Seconds until `python -m app` answers its page, and its peak RSS (VmHWM) by then."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--data",
            str(data),
            "--images",
            str(images),
            "--workspace",
            str(workspace),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with status {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        seconds = time.perf_counter() - t0
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        return seconds, int(hwm.split()[1]) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares MB per 1,000 images."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(xs, float) / 1000, ys, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[250, 1000, 4000])
    p.add_argument("--side", type=int, default=640)
    p.add_argument("--objects", type=int, default=18, help="at most this many objects an image (default 18)")
    p.add_argument("--kins", type=int, default=0, help="also one set of this many images at 1242 x 375")
    p.add_argument("--kins-objects", type=int, default=6, help="at most this many objects per 375 x 375 third")
    p.add_argument("--predict", type=int, default=0, help="time predict (1 and 2 processes) on this many images")
    p.add_argument("--predict-side", type=int, default=256)
    p.add_argument("--app", action="store_true", help="time the app opening each set")
    p.add_argument("--steps", nargs="*", default=["validate", "convert", "evaluate"])
    p.add_argument("--keep", type=Path, default=None, help="write the sets here (default: a temporary folder)")
    args = p.parse_args()
    py = [sys.executable]
    tmp = Path(tempfile.mkdtemp(prefix="scale_bench_")) if args.keep is None else args.keep
    rows: dict[str, list[tuple[int, float, float]]] = {}
    print(f"machine: {os.cpu_count()} cores; load {load()} at start")
    print("| set | step | images | instances | s | s / 1,000 images | peak RSS MB | load |")
    print("|---|---|---|---|---|---|---|---|")
    sets = [(f"{args.side}x{args.side}", n, False) for n in args.sizes]
    if args.kins:
        sets.append(("KINS 1242x375", args.kins, True))
    try:
        for label, n, kins in sets:
            folder = tmp / f"{'kins' if kins else 'set'}_{n}"
            data = folder / "annotations.json"
            if not data.exists():
                t0 = time.perf_counter()
                write_set(folder, n, args.side, args.kins_objects if kins else args.objects, kins, rendered=1)
                print(f"(wrote {data}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            instances = formats.load(data, compact=True).num_instances()
            steps: list[tuple[str, list[str]]] = []
            if "validate" in args.steps:
                steps.append(("validate", ["-m", "semlayer", "validate", str(data)]))
            if "convert" in args.steps:
                steps += [
                    (
                        f"convert {to}",
                        ["-m", "semlayer", "convert", str(data), str(folder / f"out.{to}.json"), "--to", to],
                    )
                    for to in ("cocoa", "coco", "kins")
                ]
            if "evaluate" in args.steps:
                steps.append(("evaluate", ["-m", "semlayer", "evaluate", "--gt", str(data), "--pred", str(data)]))
            for name, cmd in steps:
                seconds, mb = measure(py + cmd)
                print(
                    f"| {label} | {name} | {n} | {instances} | {seconds:.1f} | {seconds * 1000 / n:.1f} | {mb:.0f} "
                    f"| {load()} |",
                    flush=True,
                )
                if not kins:
                    rows.setdefault(name, []).append((n, seconds, mb))
            if args.app:
                seconds, mb = app_open(data, folder / "images", folder / "workspace")
                print(
                    f"| {label} | app open | {n} | {instances} | {seconds:.1f} | - | {mb:.0f} | {load()} |", flush=True
                )
                if not kins:
                    rows.setdefault("app open", []).append((n, seconds, mb))
        if args.predict:
            folder = tmp / f"predict_{args.predict}"
            if not (folder / "images").exists():
                write_set(folder, args.predict, args.predict_side, 6, False, rendered=args.predict)
            one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
            base = ["-m", "semlayer", "predict", str(folder / "images"), "--workers", "1"]
            s1, m1 = measure(py + base + ["--out", str(folder / "p1.json")], one_thread)
            s2, m2 = measure(
                py
                + ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                + base
                + ["--out", str(folder / "p2.json")],
                one_thread,
            )
            same = (folder / "p1.json").read_bytes() == (folder / "p2.json").read_bytes()
            size = f"{args.predict_side}x{args.predict_side}"
            for name, s, m in (("predict, 1 process", s1, m1), ("predict, torchrun 2 processes", s2, m2)):
                print(
                    f"| {size} | {name} | {args.predict} | - | {s:.1f} | {s * 1000 / args.predict:.1f} | {m:.0f} "
                    f"| {load()} |"
                )
            print(f"\npredict speed-up, 2 processes / 1: {s1 / s2:.2f} (target >= 1.6); files identical: {same}")
        print("\npeak RSS against images (least squares, MB per 1,000 images; flat = 0):")
        for name, values in rows.items():
            ns, _, mbs = zip(*values)
            print(f"  {name:<16} {slope(list(ns), list(mbs)):+.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
