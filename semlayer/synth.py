"""Synthetic amodal scenes in the spirit of D2SA: textured shapes composited over textured backgrounds.

Every object is one flat polygon (COCOA's amodal ``segmentation``) and its amodal mask is that polygon
rasterised by pycocotools, so the written annotation file describes the masks bit for bit. Objects get a
known total order and are composited back to front with the painter's rule; inside a mask the image takes
the object's own colours exactly (anti-aliasing only adds a one-pixel soft fringe *outside* each mask).
Each object keeps a minimum visible area, and later objects are often placed over earlier ones, so scenes
have real overlaps from mild to heavy. Everything is a pure function of a ``numpy.random.Generator``:
the same seed gives identical bytes.
"""

from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from . import formats
from .boxes import mask_box
from .errors import ConfigError
from .io_utils import atomic_write_bytes
from .scene import AmodalScene, AnnotationSet, Instance

log = logging.getLogger(__name__)

# Stable ids and names: datasets written by one version must mean the same thing in the next.
CATEGORIES: list[dict] = [
    {"id": 1, "name": "disc", "supercategory": "shape"},
    {"id": 2, "name": "box", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "ring", "supercategory": "shape"},
    {"id": 5, "name": "star", "supercategory": "shape"},
    {"id": 6, "name": "capsule", "supercategory": "shape"},
    {"id": 7, "name": "cross", "supercategory": "shape"},
    {"id": 8, "name": "heart", "supercategory": "shape"},
]
CATEGORY_NAMES: dict[int, str] = {c["id"]: c["name"] for c in CATEGORIES}

# Each instance keeps at least this much of its amodal area visible (both must hold).
MIN_VISIBLE_FRACTION = 0.03
MIN_VISIBLE_PIXELS = 30
# A placement "over" an earlier object must cover at least this fraction of the smaller of the two.
MIN_OVERLAP_FRACTION = 0.02
# Placement attempts per object; every 10 failed attempts the object shrinks by SHRINK, down to
# MIN_RADIUS (pixels; the thinnest shape of that radius still has well over MIN_VISIBLE_PIXELS).
MAX_ATTEMPTS = 40
SHRINK = 0.85
MIN_RADIUS = 8.0
MIN_SIZE = 64
# Chance that an object after the second is placed over an earlier one (the second always is).
NEAR_PROBABILITY = 0.7

OBJECT_TEXTURES = ("solid", "stripes", "checks", "dots", "gradient", "noise")
BACKGROUND_TEXTURES = ("noise", "wood", "tiles", "gradient")


# ----- textures ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Texture:
    """A procedural two-colour pattern, anchored at ``origin`` and rotated by ``angle`` (radians).

    ``period`` is the pattern's scale in pixels; ``seed`` drives its noise, so painting is a pure
    function of the record."""

    kind: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    angle: float
    period: float
    origin: tuple[float, float]
    seed: int
    grain: float = 4.0

    def paint(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """RGB float32 values in [0, 255] for the pixels ``x0:x1, y0:y1`` of the image."""
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        rng = np.random.default_rng(self.seed)
        x = (np.arange(x0, x1, dtype=np.float32) + 0.5 - self.origin[0])[None, :]
        y = (np.arange(y0, y1, dtype=np.float32) + 0.5 - self.origin[1])[:, None]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = x * c + y * s
        v = -x * s + y * c
        p = self.period
        t: np.ndarray
        if self.kind == "solid":
            t = np.zeros((h, w), np.float32)
        elif self.kind == "stripes":
            t = _soft(np.sin(2 * np.pi * u / p))
        elif self.kind == "checks":
            t = _soft(np.sin(2 * np.pi * u / p) * np.sin(2 * np.pi * v / p))
        elif self.kind == "dots":
            du = np.mod(u, p) - p / 2
            dv = np.mod(v, p) - p / 2
            t = np.clip(0.3 * p - np.sqrt(du * du + dv * dv) + 0.5, 0, 1)
        elif self.kind == "gradient":
            t = np.clip(0.5 + u / (2 * p), 0, 1)
        elif self.kind == "noise":
            t = 0.65 * _value_noise(rng, h, w, p) + 0.35 * _value_noise(rng, h, w, p / 3)
        elif self.kind == "wood":
            warp = _value_noise(rng, h, w, 4 * p) * 2.5 * p
            t = 0.5 + 0.3 * np.sin(2 * np.pi * (u + warp) / p) * (0.6 + 0.4 * _value_noise(rng, h, w, p))
        elif self.kind == "tiles":
            # Square tiles of two tones with dark grout lines between them.
            cell = np.floor(u / p) + np.floor(v / p)
            t = 0.35 + 0.3 * np.mod(cell, 2)
            grout = np.minimum(np.abs(np.mod(u + p / 2, p) - p / 2), np.abs(np.mod(v + p / 2, p) - p / 2))
            t = np.where(grout < 1.0, 1.0, t)
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}")
        t = t.astype(np.float32)
        a = np.asarray(self.color_a, np.float32)
        b = np.asarray(self.color_b, np.float32)
        rgb = a + (b - a) * t[..., None]
        if self.grain:
            rgb += rng.normal(0.0, self.grain, (h, w, 1)).astype(np.float32)
        return np.clip(rgb, 0, 255)


def _soft(s: np.ndarray) -> np.ndarray:
    """A sine wave made into a pattern with sharp but anti-aliased edges."""
    return np.clip(0.5 + 2.5 * s, 0, 1)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a random grid of ``cell``-pixel spacing, bicubically upsampled."""
    cell = max(float(cell), 2.0)
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(up[:h, :w], 0, 1)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255, 2), round(g * 255, 2), round(b * 255, 2))


def _object_texture(rng: np.random.Generator, origin: tuple[float, float], radius: float) -> Texture:
    kind = OBJECT_TEXTURES[rng.integers(len(OBJECT_TEXTURES))]
    hue, sat, val = rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.55, 0.95)
    if rng.random() < 0.5:  # contrasting hue
        second = _hsv(hue + rng.uniform(0.35, 0.65), sat, val)
    else:  # same hue, another tone
        second = _hsv(hue, sat * rng.uniform(0.3, 0.7), val * rng.uniform(0.35, 0.6))
    period = radius * (1.0 if kind == "gradient" else rng.uniform(0.2, 0.45))
    return Texture(
        kind, _hsv(hue, sat, val), second, rng.uniform(0, np.pi), max(period, 4.0), origin, int(rng.integers(2**31))
    )


def _background_texture(rng: np.random.Generator, size: int) -> Texture:
    kind = BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))]
    hue, sat, val = rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.8)
    second = _hsv(hue + rng.uniform(-0.08, 0.08), sat, val * rng.uniform(0.65, 0.85))
    period = size * {"noise": 0.12, "wood": 0.08, "tiles": 0.15, "gradient": 0.6}[kind] * rng.uniform(0.7, 1.4)
    origin = (size * rng.random(), size * rng.random())
    return Texture(
        kind, _hsv(hue, sat, val), second, rng.uniform(0, np.pi), period, origin, int(rng.integers(2**31)), grain=6.0
    )


# ----- shapes ----------------------------------------------------------------------------------
def _ellipse(a: float, b: float, reverse: bool = False) -> np.ndarray:
    n = int(np.clip(2 * np.pi * max(a, b) / 3, 24, 128))  # ~3 px edges
    t = 2 * np.pi * np.arange(n) / n
    if reverse:
        t = -t
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=1)


def _disc(rng: np.random.Generator, r: float) -> np.ndarray:
    return _ellipse(r, r * rng.uniform(0.6, 1.0))


def _box(rng: np.random.Generator, r: float) -> np.ndarray:
    h = r * rng.uniform(0.45, 1.0)
    return np.array([[-r, -h], [r, -h], [r, h], [-r, h]])


def _triangle(rng: np.random.Generator, r: float) -> np.ndarray:
    t = -np.pi / 2 + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.35, 0.35, 3)
    rad = r * rng.uniform(0.75, 1.0, 3)
    return np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)


def _ring(rng: np.random.Generator, r: float) -> np.ndarray:
    """An elliptic annulus as ONE flat polygon: the outer loop, a zero-width cut to the hole, the hole
    reversed. Even-odd rasterisation (pycocotools) cancels the doubled cut, leaving the hole open."""
    b = r * rng.uniform(0.75, 1.0)
    q = rng.uniform(0.4, 0.6)
    outer = _ellipse(r, b)
    inner = _ellipse(q * r, q * b, reverse=True)
    return np.concatenate([outer, outer[:1], inner, inner[:1]], axis=0)


def _star(rng: np.random.Generator, r: float) -> np.ndarray:
    n = int(rng.integers(5, 8))
    rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.4, 0.55))
    t = -np.pi / 2 + np.pi * np.arange(2 * n) / n
    return np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)


def _capsule(rng: np.random.Generator, r: float) -> np.ndarray:
    rc = r * rng.uniform(0.3, 0.5)
    m = int(np.clip(np.pi * rc / 3, 8, 48))
    t = np.linspace(-np.pi / 2, np.pi / 2, m)
    right = np.stack([(r - rc) + rc * np.cos(t), rc * np.sin(t)], axis=1)
    return np.concatenate([right, -right], axis=0)


def _cross(rng: np.random.Generator, r: float) -> np.ndarray:
    a = r * rng.uniform(0.22, 0.38)
    h = r * rng.uniform(0.7, 1.0)  # horizontal arms may be shorter
    return np.array(
        [[a, -r], [a, -a], [h, -a], [h, a], [a, a], [a, r], [-a, r], [-a, a], [-h, a], [-h, -a], [-a, -a], [-a, -r]]
    )


def _heart(rng: np.random.Generator, r: float) -> np.ndarray:
    n = int(np.clip(2 * np.pi * r / 3, 32, 128))
    t = 2 * np.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.min(axis=0) + pts.max(axis=0)) / 2  # centre the box (the curve's y runs -12 .. 17)
    return pts * (r / 17.0) * np.array([rng.uniform(0.85, 1.0), 1.0])


SHAPES: dict[int, Callable[[np.random.Generator, float], np.ndarray]] = {
    1: _disc,
    2: _box,
    3: _triangle,
    4: _ring,
    5: _star,
    6: _capsule,
    7: _cross,
    8: _heart,
}


def rasterize(polygon: list[float], height: int, width: int) -> np.ndarray:
    """A flat ``[x1, y1, ...]`` polygon rasterised as pycocotools does (bool HxW)."""
    rle = mask_utils.frPyObjects([polygon], height, width)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


# ----- layout ----------------------------------------------------------------------------------
@dataclass(eq=False)
class SynthObject:
    """One placed object: its polygon, the exact mask that polygon rasterises to, and its look."""

    category: int
    polygon: list[float]
    mask: np.ndarray
    texture: Texture
    center: tuple[float, float]
    radius: float
    light: tuple[float, float]

    @property
    def name(self) -> str:
        return CATEGORY_NAMES[self.category]

    def render(self) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """The object's own colours: ``(box, uint8 RGB crop)`` over its mask's box grown by one pixel
        (the room the anti-aliased fringe needs). Inside the mask the composite equals these values."""
        box = mask_box(self.mask, margin=1)
        x0, y0, x1, y1 = box
        rgb = self.texture.paint(box)
        inside = self.mask[y0:y1, x0:x1].astype(np.uint8)
        # Darker rim (a few pixels inside the outline) and a soft directional light: shapes read as
        # objects, and touching objects of similar colour stay apart.
        rim = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        shade = 0.72 + 0.28 * np.minimum(1.0, rim / 2.5)
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - self.center[0])[None, :]
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - self.center[1])[:, None]
        proj = np.clip((xs * self.light[0] + ys * self.light[1]) / self.radius, -1, 1)
        shade = shade * (1.0 + 0.12 * proj)
        return box, np.clip(np.rint(rgb * shade[..., None]), 0, 255).astype(np.uint8)


@dataclass(eq=False)
class SynthLayout:
    """A sampled scene before rendering: background and objects, ``objects`` listed front-most first."""

    size: int
    background: Texture
    objects: list[SynthObject] = field(default_factory=list)

    def render(self) -> np.ndarray:
        """Composite back to front (painter's rule): HxWx3 uint8 RGB."""
        canvas = self.background.paint((0, 0, self.size, self.size))
        for obj in reversed(self.objects):
            (x0, y0, x1, y1), rgb = obj.render()
            inside = obj.mask[y0:y1, x0:x1]
            alpha = cv2.GaussianBlur(inside.astype(np.float32), (3, 3), 0.8)
            alpha[inside] = 1.0  # exact inside the mask; the soft fringe lies only outside it
            region = canvas[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1] = region + (rgb.astype(np.float32) - region) * alpha[..., None]
        return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    def to_scene(self, image_id: int = 1) -> AmodalScene:
        """The annotation: instance ``k`` is the k-th object from the front (id = rank = k), the order
        COCOA lists regions in, so a scene read back from the written file is the same scene."""
        image = {
            "id": int(image_id),
            "file_name": f"synth_{int(image_id):06d}.png",
            "height": self.size,
            "width": self.size,
        }
        instances = [
            Instance(
                id=rank,
                amodal=obj.mask.copy(),
                rank=rank,
                name=obj.name,
                category=obj.category,
                polygons=[list(obj.polygon)],
            )
            for rank, obj in enumerate(self.objects, start=1)
        ]
        return AmodalScene(image, instances, annotation={"id": int(image_id), "author": "semlayer.synth"})


def _visible_ok(masks_front_to_back: list[np.ndarray]) -> bool:
    covered = np.zeros_like(masks_front_to_back[0])
    for m in masks_front_to_back:
        area = int(m.sum())
        visible = int((m & ~covered).sum())
        if visible < max(MIN_VISIBLE_PIXELS, math.ceil(MIN_VISIBLE_FRACTION * area)):
            return False
        covered |= m
    return True


def _check_args(size: int, max_instances: int, min_instances: int) -> None:
    if int(size) != size or size < MIN_SIZE:
        raise ConfigError(f"size must be an integer >= {MIN_SIZE} pixels, got {size}")
    if int(min_instances) != min_instances or min_instances < 1:
        raise ConfigError(f"min_instances must be an integer >= 1, got {min_instances}")
    if int(max_instances) != max_instances or max_instances < min_instances:
        raise ConfigError(f"max_instances must be an integer >= min_instances ({min_instances}), got {max_instances}")


def sample_layout(
    rng: np.random.Generator, size: int = 256, max_instances: int = 6, min_instances: int = 1
) -> SynthLayout:
    """Sample a background and 1..M objects with a total order and the minimum visible area each.

    Raises `ConfigError` when ``min_instances`` objects cannot be placed within the bounded retries
    (too many objects for the image size)."""
    _check_args(size, max_instances, min_instances)
    layout = SynthLayout(size, _background_texture(rng, size))
    light_angle = rng.uniform(0, 2 * np.pi)
    light = (math.cos(light_angle), math.sin(light_angle))
    target = int(rng.integers(min_instances, max_instances + 1))
    for index in range(target):
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        # Log-uniform sizes: many small objects, some large ones.
        radius = max(size * math.exp(rng.uniform(math.log(0.08), math.log(0.22))), MIN_RADIUS)
        shape = SHAPES[category](rng, radius)
        angle = rng.uniform(0, 2 * np.pi)
        rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        shape = shape @ rot
        placed = None
        for attempt in range(MAX_ATTEMPTS):
            scale = max(SHRINK ** (attempt // 10), MIN_RADIUS / radius)
            local = shape * scale
            lo, hi = local.min(axis=0), local.max(axis=0)
            near = len(layout.objects) > 0 and (index == 1 or rng.random() < NEAR_PROBABILITY)
            if near:
                anchor = layout.objects[int(rng.integers(len(layout.objects)))]
                phi = rng.uniform(0, 2 * np.pi)
                dist = rng.uniform(0.1, 0.95) * (anchor.radius + radius)
                cx = anchor.center[0] + dist * math.cos(phi)
                cy = anchor.center[1] + dist * math.sin(phi)
            else:
                cx, cy = rng.uniform(1 - lo[0], size - 1 - hi[0]), rng.uniform(1 - lo[1], size - 1 - hi[1])
            # Whole objects only: the amodal extent must lie inside the frame.
            cx = float(np.clip(cx, 1 - lo[0], size - 1 - hi[0]))
            cy = float(np.clip(cy, 1 - lo[1], size - 1 - hi[1]))
            polygon = np.round(local + [cx, cy], 2).ravel().tolist()
            mask = rasterize(polygon, size, size)
            depth = int(rng.integers(len(layout.objects) + 1))  # where it goes in the front-to-back list
            if mask.sum() < MIN_VISIBLE_PIXELS:
                continue
            if near:
                overlap = int((mask & anchor.mask).sum())
                if overlap < MIN_OVERLAP_FRACTION * min(int(mask.sum()), int(anchor.mask.sum())):
                    continue
            masks = [o.mask for o in layout.objects]
            masks.insert(depth, mask)
            if _visible_ok(masks):
                placed = (polygon, mask, depth, (cx, cy), radius * scale)
                break
        if placed is None:
            if len(layout.objects) >= min_instances:
                break  # the scene is full; a smaller scene is still a valid sample
            raise ConfigError(
                f"could not place {min_instances} objects with {MIN_VISIBLE_PIXELS}+ visible pixels each in a "
                f"{size}x{size} image; lower min_instances or raise size"
            )
        polygon, mask, depth, center, obj_radius = placed
        obj = SynthObject(category, polygon, mask, _object_texture(rng, center, obj_radius), center, obj_radius, light)
        layout.objects.insert(depth, obj)
    return layout


# ----- public entry points -------------------------------------------------------------------------
def generate_scene(
    rng: np.random.Generator, size: int = 256, max_instances: int = 6, min_instances: int = 1, image_id: int = 1
) -> tuple[np.ndarray, AmodalScene]:
    """One synthetic image (HxWx3 uint8 RGB) and its annotation."""
    layout = sample_layout(rng, size, max_instances, min_instances)
    return layout.render(), layout.to_scene(image_id)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` (0-based) of a dataset: independent of how many images are made,
    so image k is the same in a 10-image and a 10 000-image dataset."""
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def generate(
    num_images: int,
    seed: int,
    size: int = 256,
    max_instances: int = 6,
    min_instances: int = 1,
    first_image_id: int = 1,
) -> Iterator[tuple[np.ndarray, AmodalScene]]:
    """Lazily yield ``(image, scene)`` for ``num_images`` images with ids ``first_image_id, ...``."""
    if int(num_images) != num_images or num_images < 0:
        raise ConfigError(f"num_images must be an integer >= 0, got {num_images}")
    _check_args(size, max_instances, min_instances)
    for k in range(int(num_images)):
        yield generate_scene(image_rng(seed, k), size, max_instances, min_instances, first_image_id + k)


def annotation_set(scenes: Iterable[AmodalScene]) -> AnnotationSet:
    """Scenes as an `AnnotationSet` (COCOA native) that keeps the shape categories for COCO-style export."""
    return AnnotationSet(scenes=list(scenes), categories=[dict(c) for c in CATEGORIES], format="cocoa")


def write_dataset(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    size: int = 256,
    max_instances: int = 6,
    min_instances: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``OUT_DIR/images/synth_NNNNNN.png`` and ``OUT_DIR/annotations.json`` (COCOA native).
    Returns the annotation file's path. The scenes are kept as RLE (`formats.CompactScenes`) until the
    JSON is written scene by scene, so memory does not follow ``num_images * size**2``."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"

    def written() -> Iterator[AmodalScene]:
        frames = generate(num_images, seed, size, max_instances, min_instances)
        for image, scene in tqdm(frames, total=int(num_images), desc="synth", unit="img", disable=not progress):
            ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {scene.file_name}")
            atomic_write_bytes(images_dir / scene.file_name, png.tobytes())
            yield scene

    scenes = formats.CompactScenes(written())
    path = out_dir / "annotations.json"
    formats.save(AnnotationSet(scenes, [dict(c) for c in CATEGORIES], format="cocoa"), path, format="cocoa")
    log.info("wrote %d synthetic images to %s and their annotations to %s", len(scenes), images_dir, path)
    return path
