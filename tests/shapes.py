"""Small hand-made masks and scenes shared by the core tests."""

import numpy as np

from semlayer.scene import AmodalScene, Instance


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def toy_scene():
    """docs/formats.md's toy scene: region 1 (4x4 at x 1..4, y 1..4) in front of region 2 (6x4 at x 3..8, y 3..6)."""
    return AmodalScene(
        {"id": 7, "height": 8, "width": 10, "file_name": "toy.jpg"},
        [
            Instance(1, rect(8, 10, 1, 1, 5, 5), rank=1, name="box"),
            Instance(2, rect(8, 10, 3, 3, 9, 7), rank=2, name="board"),
        ],
    )
