"""Sem-dist encode + decode against N x K full-frame distance transforms, measured in the same run.

    .venv/bin/python bench/semdist_bench.py [--repeats 15]

For 640x480 scenes with 5, 20 and 50 instances it times
  ours:     semlayer.semdist.encode_scene + decoding every instance (amodal, visible, layers) + decode_ranks
  baseline: N x K calls of cv2.distanceTransform on full 640x480 frames (what a naive encoder costs)
and prints medians and the ratio ours / baseline (target: <= 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semlayer import semdist  # noqa: E402
from semlayer.scene import AmodalScene, Instance  # noqa: E402

H, W, K, TAU = 480, 640, 3, 6.0


def random_scene(n: int, seed: int) -> AmodalScene:
    """n overlapping rotated ellipses (30..140 px) in a 640x480 frame, random total order."""
    rng = np.random.default_rng(seed)
    instances = []
    for i in range(n):
        m = np.zeros((H, W), np.uint8)
        centre = (int(rng.integers(60, W - 60)), int(rng.integers(60, H - 60)))
        axes = (int(rng.integers(15, 70)), int(rng.integers(15, 70)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        instances.append(Instance(i + 1, m.astype(bool)))
    for inst, r in zip(instances, rng.permutation(n) + 1):
        inst.rank = int(r)
    return AmodalScene({"id": seed, "height": H, "width": W}, instances)


def ours(scene: AmodalScene) -> None:
    maps = semdist.encode_scene(scene, K=K, tau=TAU)
    for m in maps:
        m.amodal(), m.visible(), m.layers()
    semdist.decode_ranks(maps)


def baseline(scene: AmodalScene) -> None:
    frame = np.zeros((H, W), np.uint8)
    for inst in scene.instances:
        for _ in range(K):
            frame[...] = inst.amodal
            cv2.distanceTransform(frame, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def median_time(fn, scene: AmodalScene, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(scene)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(
        f"sem-dist encode+decode vs N x K full-frame cv2.distanceTransform ({W}x{H}, K={K}, median of {args.repeats})"
    )
    print(f"{'instances':>9} {'ours ms':>9} {'baseline ms':>12} {'ratio':>7}")
    for n in (5, 20, 50):
        scene = random_scene(n, seed=n)
        ours(scene), baseline(scene)  # warm-up
        t_ours = median_time(ours, scene, args.repeats)
        t_base = median_time(baseline, scene, args.repeats)
        print(f"{n:>9} {t_ours * 1e3:>9.2f} {t_base * 1e3:>12.2f} {t_ours / t_base:>7.2f}")


if __name__ == "__main__":
    main()
