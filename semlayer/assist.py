"""Annotation assists that work on any photograph: masks from a box and a few clicks, with no learned weights
where none are needed, and amodal completion of an occluded object's hidden part.

Visible part: `grabcut` (OpenCV's GrabCut from a box, refined by positive / negative strokes or clicks) and
the superpixel brush (`superpixels`, computed once per image and cached, `superpixel_stroke`).
Hidden part: strokes and polygons clipped to the objects in front (`occluders`, `paint_hidden`), since the
hidden part of an object can only lie under them, and completion proposals to accept or correct: the convex
hull of the visible part (`hull_proposal`), its mirror image about a symmetry axis (`mirror_proposal`) and a
model's RoI heads on the user's box (`BoxCompleter`). Every proposal keeps the visible part as it is and adds
hidden pixels under the occluders only.

Scene edits (`set_visible_part`, `add_visible_instance`) are plain functions of an `AmodalScene`, so the app
runs them as ordinary undoable edits. `simulated_click` is the standard simulated annotator of interactive
segmentation (NoC@85 / NoC@90), used by ``bench/annotation_bench.py``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from scipy.signal import fftconvolve
from skimage.segmentation import slic
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import roi_align

from .boxes import mask_box
from .formats.masks import encode_rle
from .model.sln import paste_roi_maps
from .review import Objects, match
from .scene import AmodalScene, Instance

GRABCUT_ITERATIONS = 5
# A click is a small disk of hard labels for GrabCut (pixels), as a click marks a spot, not a single pixel.
CLICK_RADIUS = 3
# Superpixels: about one per SUPERPIXEL_AREA pixels (a 640 x 480 photograph: about 1,200).
SUPERPIXEL_AREA = 256
SUPERPIXEL_CACHE = 8


# ----- small geometry helpers --------------------------------------------------------------------------


def disk(shape: tuple[int, int], x: float, y: float, radius: float) -> np.ndarray:
    """Boolean mask of the pixels whose centre lies within ``radius`` of pixel (x, y)."""
    out = np.zeros(shape, np.uint8)
    cv2.circle(out, (int(round(x)), int(round(y))), max(int(round(radius)), 0), 1, thickness=-1)
    return out.astype(bool)


def clicks_mask(shape: tuple[int, int], points: Sequence[Sequence[float]], radius: float = CLICK_RADIUS) -> np.ndarray:
    """Union of `disk` around each (x, y) point."""
    out = np.zeros(shape, bool)
    for x, y in points:
        out |= disk(shape, x, y, radius)
    return out


def polygon_mask(shape: tuple[int, int], points: Sequence[Sequence[float]]) -> np.ndarray:
    """A filled polygon of (x, y) vertices (pixel centres), as OpenCV rasterises it."""
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.round(np.asarray(points, np.float64)).astype(np.int32)], 1)
    return out.astype(bool)


def _check_box(box: Sequence[float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) with inclusive pixel corners, in either order, clipped to the image; at least 2 px a side."""
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], got {list(box)}")
    H, W = shape
    x0, x1 = sorted((int(round(box[0])), int(round(box[2]))))
    y0, y1 = sorted((int(round(box[1])), int(round(box[3]))))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W - 1), min(y1, H - 1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f"the box {list(box)} has no area inside the {W}x{H} image")
    return x0, y0, x1, y1


def _rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8, copy=False))


# ----- visible part: GrabCut ---------------------------------------------------------------------------


def grabcut(
    image: np.ndarray,
    box: Sequence[float],
    foreground: np.ndarray | None = None,
    background: np.ndarray | None = None,
    iterations: int = GRABCUT_ITERATIONS,
) -> np.ndarray:
    """The object in ``box`` ([x0, y0, x1, y1], inclusive corners) by GrabCut: inside the box probably object,
    outside certainly background; ``foreground`` / ``background`` (boolean masks: strokes, or `clicks_mask`
    of clicks) are hard labels. A foreground stroke outside the box widens the box to include it.

    GrabCut runs on the box grown by a margin (its colour model of the background needs some), not on the
    whole photograph, so a click costs the same on a large image. Deterministic (OpenCV's RNG is seeded).
    """
    rgb = _rgb(image)
    shape = rgb.shape[:2]
    fg = np.zeros(shape, bool) if foreground is None else np.asarray(foreground, bool)
    bg = np.zeros(shape, bool) if background is None else np.asarray(background, bool)
    if fg.shape != shape or bg.shape != shape:
        raise ValueError(f"strokes must be {shape[0]}x{shape[1]} masks, got {fg.shape} and {bg.shape}")
    x0, y0, x1, y1 = _check_box(box, shape)
    if fg.any():  # the box grows to hold every foreground stroke (inclusive corners, as `_check_box` gives)
        fx0, fy0, fx1, fy1 = mask_box(fg)
        x0, y0, x1, y1 = min(x0, fx0), min(y0, fy0), max(x1, fx1 - 1), max(y1, fy1 - 1)
    H, W = shape
    margin = max(8, (max(x1 - x0, y1 - y0) + 1) // 4)
    cx0, cy0, cx1, cy1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin + 1, W), min(y1 + margin + 1, H)
    mask = np.full((cy1 - cy0, cx1 - cx0), cv2.GC_BGD, np.uint8)
    mask[y0 - cy0 : y1 - cy0 + 1, x0 - cx0 : x1 - cx0 + 1] = cv2.GC_PR_FGD
    mask[bg[cy0:cy1, cx0:cx1]] = cv2.GC_BGD
    mask[fg[cy0:cy1, cx0:cx1]] = cv2.GC_FGD
    out = np.zeros(shape, bool)
    if not (mask == cv2.GC_PR_FGD).any() and not (mask == cv2.GC_FGD).any():
        return out
    crop = np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1, ::-1])
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        # OpenCV takes no rectangle with GC_INIT_WITH_MASK; its type stubs require one.
        cv2.grabCut(crop, mask, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:
        # GrabCut needs samples of both colour models; with none of one (a box over the whole image) the
        # box and the strokes are the best answer there is, and the mask still holds them.
        pass
    return _paste(out, (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), cx0, cy0)


def _paste(frame: np.ndarray, crop: np.ndarray, x0: int, y0: int) -> np.ndarray:
    frame[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return frame


# ----- visible part: superpixels -----------------------------------------------------------------------


class SuperpixelCache:
    """SLIC superpixel labels per image content, computed once (as an interactive model caches its image
    embedding), the ``size`` most recently used kept. Safe to share between threads."""

    def __init__(self, size: int = SUPERPIXEL_CACHE, area: int = SUPERPIXEL_AREA) -> None:
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size, self.area = size, area
        self._lock = threading.Lock()

    def labels(self, image: np.ndarray) -> np.ndarray:
        rgb = _rgb(image)
        key = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        labels = superpixels(rgb, self.area)
        labels.setflags(write=False)
        with self._lock:
            self._items[key] = labels
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return labels

    def __len__(self) -> int:
        return len(self._items)


def superpixels(image: np.ndarray, area: int = SUPERPIXEL_AREA) -> np.ndarray:
    """SLIC labels (int32, H x W, 0..n-1) with about one superpixel per ``area`` pixels."""
    rgb = _rgb(image)
    n = max(int(rgb.shape[0] * rgb.shape[1] / max(area, 1)), 1)
    labels = slic(rgb, n_segments=n, compactness=10.0, start_label=0, enforce_connectivity=True, channel_axis=-1)
    return labels.astype(np.int32)


def superpixel_stroke(labels: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Every superpixel the stroke touches, whole."""
    stroke = np.asarray(stroke, bool)
    if stroke.shape != labels.shape:
        raise ValueError(f"the stroke is {stroke.shape}, the superpixels {labels.shape}")
    touched = np.zeros(int(labels.max()) + 1, bool)
    touched[np.unique(labels[stroke])] = True
    return touched[labels]


# ----- hidden part: clipped to the occluders -----------------------------------------------------------


def occluders(scene: AmodalScene, instance_id: int) -> np.ndarray:
    """Pixels covered by the objects in front of the instance: the only place its hidden part can be."""
    return scene.front_union(instance_id)


def paint_hidden(scene: AmodalScene, instance_id: int, stroke: np.ndarray, mode: str = "add") -> np.ndarray:
    """The instance's amodal mask with ``stroke`` (a brush stroke or a filled polygon) added (``add``) or
    removed (``remove``) only where objects in front cover it: its visible part never changes."""
    if mode not in ("add", "remove"):
        raise ValueError(f"mode must be 'add' or 'remove', got {mode!r}")
    inst = scene.get(instance_id)
    stroke = np.asarray(stroke, bool)
    if stroke.shape != scene.shape:
        raise ValueError(f"the stroke is {stroke.shape}, the image {scene.shape}")
    clipped = stroke & occluders(scene, instance_id)
    return inst.amodal | clipped if mode == "add" else inst.amodal & ~clipped


def auto_radius(mask: np.ndarray, x: int, y: int, positive: bool, keep: np.ndarray | None = None) -> float:
    """A brush radius sized by the click, for a hidden-part dab: adding, the distance from (x, y) to the mask
    (the dab just reaches it, filling the gap the click is in the middle of); removing, the distance to the
    nearest pixel that stays, outside the mask or in ``keep`` (the visible part). At least 1 pixel."""
    mask = np.asarray(mask, bool)
    stays = ~mask if keep is None else ~mask | np.asarray(keep, bool)
    target = mask if positive else stays
    if not target.any():
        return 1.0
    dist = cv2.distanceTransform((~target).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return max(float(dist[int(y), int(x)]), 1.0)


def _limited(scene: AmodalScene, instance_id: int, shape_mask: np.ndarray) -> np.ndarray:
    """Amodal proposal: the visible part, plus ``shape_mask`` where objects in front cover it."""
    return scene.visible(instance_id) | (shape_mask & occluders(scene, instance_id))


def hull_proposal(scene: AmodalScene, instance_id: int) -> np.ndarray:
    """Amodal proposal: the visible part's convex hull, limited to the objects in front."""
    visible = scene.visible(instance_id)
    if not visible.any():
        raise ValueError(f"instance {instance_id} has no visible part to complete")
    points = cv2.findNonZero(visible.astype(np.uint8))
    hull = np.zeros(scene.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return _limited(scene, instance_id, hull.astype(bool))


@dataclass(frozen=True)
class MirrorAxis:
    """A symmetry axis: the line ``x cos(angle) + y sin(angle) = offset`` (pixel centres, degrees)."""

    angle: float
    offset: float


# Candidate axis directions, every 3 degrees (0 and 90 included: upright objects are the common case).
MIRROR_ANGLES = tuple(range(0, 180, 3))
# A reflection may land this share of the visible area on pixels known to be background (rasterisation).
MIRROR_TOLERANCE = 0.05
# A pixel of the reflection on the background costs this many pixels of overlap with the visible part.
MIRROR_WRONG_WEIGHT = 16.0
# Share of the hidden pixels along the visible part that the reflection must reach.
MIRROR_EDGE_REACHED = 0.5


def mirror_axis(
    visible: np.ndarray, hidden_region: np.ndarray, angles: Sequence[float] = MIRROR_ANGLES
) -> MirrorAxis | None:
    """The symmetry axis that best explains the visible part, None when no reflection adds hidden pixels.

    For a symmetric object the visible part reflected about the true axis lands inside the object, so on
    visible or hidden pixels only, never on the background around it. Among the axes whose reflection does
    that (up to `MIRROR_TOLERANCE`) and adds hidden pixels, the one whose reflection overlaps the visible
    part most wins (an axis far away would satisfy the rule by dropping the whole reflection under a large
    occluder; overlapping what is seen rules that out). Reflections are counted for every offset at once, as
    correlations along the axis' normal (FFT), in the frame rotated by each candidate angle; large objects
    are searched at a reduced scale, then the best angle's offset again at full scale."""
    visible = np.asarray(visible, bool)
    if not visible.any():
        return None
    hidden_region = np.asarray(hidden_region, bool) & ~visible
    x0, y0, x1, y1 = mask_box(visible | hidden_region)
    span = float(np.hypot(y1 - 1 - y0, x1 - 1 - x0))
    scale = min(1.0, MIRROR_SEARCH_SIZE / max(span, 1.0))
    best = None
    for angle in angles:
        found = _best_offset(visible, hidden_region, float(angle), scale)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    if best is None:
        return None
    if scale < 1.0:
        best = _best_offset(visible, hidden_region, best[1], 1.0) or best
    return MirrorAxis(angle=best[1], offset=best[2])


# Longest side (pixels) of the frame the axis directions are searched in.
MIRROR_SEARCH_SIZE = 128


def _best_offset(
    visible: np.ndarray, hidden_region: np.ndarray, angle: float, scale: float
) -> tuple[float, float, float] | None:
    """(score, angle, offset) of the best axis of direction ``angle``, at ``scale`` (offset in full-scale
    pixels), None when no offset qualifies."""
    known = visible | hidden_region
    x0, y0, x1, y1 = mask_box(known)
    cy, cx = (y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0
    half = int(np.ceil(scale * np.hypot(y1 - 1 - y0, x1 - 1 - x0) / 2.0)) + 2
    size = 2 * half + 1
    theta = np.deg2rad(angle)
    nx, ny = np.cos(theta), np.sin(theta)
    # The rotated frame: row = position along the normal, column = along the axis, (half, half) at the
    # centre (cx, cy); output (col, row) reads input (x, y) = centre + ((row - half) n + (col - half) t) / scale.
    k = 1.0 / scale
    M = np.array([[-ny * k, nx * k, cx + half * k * (ny - nx)], [nx * k, ny * k, cy - half * k * (nx + ny)]])

    def rot(mask: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(
            mask.astype(np.uint8),
            M,
            (size, size),
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        ).astype(np.float32)

    v, h = rot(visible), rot(hidden_region)
    free = rot(np.ones(visible.shape, bool)) - rot(known)  # inside the image and known not to be the object
    # Hidden pixels next to the visible part: an object rarely ends exactly where its occluder begins, so
    # a reflection should reach under the occluder there.
    edge = rot(hidden_region & cv2.dilate(visible.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
    area, edge_area = float(v.sum()), float(edge.sum())
    # For the axis at row c (reflection r -> 2c - r), each count is a convolution along the rows at s = 2c.
    overlap = fftconvolve(v, v, axes=0).sum(axis=1)
    added = fftconvolve(v, h, axes=0).sum(axis=1)
    wrong = fftconvolve(v, free, axes=0).sum(axis=1)
    reached = fftconvolve(v, edge, axes=0).sum(axis=1) if edge_area else np.zeros_like(added)
    ok = (
        (wrong <= MIRROR_TOLERANCE * area + 0.5)
        & (added >= max(MIRROR_TOLERANCE * area, 1.0))
        & (reached >= MIRROR_EDGE_REACHED * edge_area)
    )
    if not ok.any():
        return None
    score = np.where(ok, overlap - MIRROR_WRONG_WEIGHT * wrong, -np.inf)
    s = int(np.argmax(score))
    return float(score[s]) / scale**2, angle, float(cx * nx + cy * ny + (s / 2.0 - half) * k)


def reflect(mask: np.ndarray, axis: MirrorAxis, where: np.ndarray | None = None) -> np.ndarray:
    """``mask`` reflected about ``axis``, evaluated at each pixel of ``where`` (default: everywhere) by
    looking up its mirror pixel (nearest), so the reflection has no holes."""
    H, W = mask.shape
    where = np.ones(mask.shape, bool) if where is None else where
    ys, xs = np.nonzero(where)
    theta = np.deg2rad(axis.angle)
    nx, ny = np.cos(theta), np.sin(theta)
    d = 2.0 * (xs * nx + ys * ny - axis.offset)
    # Rounded half away from zero only at exact ties, so a mirrored half-integer stays symmetric.
    mx, my = np.floor(xs - d * nx + 0.5).astype(np.int64), np.floor(ys - d * ny + 0.5).astype(np.int64)
    inside = (mx >= 0) & (mx < W) & (my >= 0) & (my < H)
    out = np.zeros(mask.shape, bool)
    out[ys[inside], xs[inside]] = mask[my[inside], mx[inside]]
    return out


def mirror_proposal(scene: AmodalScene, instance_id: int) -> tuple[np.ndarray, MirrorAxis]:
    """Amodal proposal: the visible part mirrored about its symmetry axis (`mirror_axis`), limited to the
    objects in front; and the axis. ValueError when no axis adds a hidden part."""
    visible = scene.visible(instance_id)
    if not visible.any():
        raise ValueError(f"instance {instance_id} has no visible part to mirror")
    hidden_region = occluders(scene, instance_id)
    axis = mirror_axis(visible, hidden_region)
    if axis is None:
        raise ValueError(
            f"no symmetry axis of instance {instance_id}'s visible part reaches under the objects in front"
        )
    return visible | reflect(visible, axis, where=hidden_region & ~visible), axis


# ----- hidden part: a model's RoI heads on the user's box ----------------------------------------------


class BoxCompleter:
    """A detection model's mask branch run on a box the user drew, as torchvision runs it on its own
    detections: RoIAlign of the backbone's features over the box, the box head to choose the class (unless
    given), then the mask head (the SLN's layering head). The backbone runs once per image (cached), so each
    new box costs only the RoI heads.

    ``predictor`` is a `semlayer.predict.Predictor` (its ``model``, ``kind``, ``K``, ``categories``)."""

    def __init__(self, predictor: Any) -> None:
        if predictor.kind == "maskrcnn_visible":
            raise ValueError("a visible-only Mask R-CNN predicts no hidden part: load an SLN or an amodal model")
        self.predictor = predictor
        self._key: str | None = None
        self._cache: tuple | None = None
        self._lock = threading.Lock()

    def _features(self, image: np.ndarray) -> tuple:
        rgb = _rgb(image)
        key = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape)
        if key != self._key:
            model = self.predictor.model
            # A copy: the app hands read-only images, which torch.from_numpy warns about.
            tensor = torch.tensor(rgb, device=self.predictor.device).permute(2, 0, 1).float().div_(255.0)
            with torch.inference_mode():
                images, _ = model.transform([tensor])
                features = model.backbone(images.tensors)
                glm = model.glm(features[model.glm_feature]).softmax(dim=1) if hasattr(model, "glm") else None
            self._key, self._cache = key, (images.image_sizes, features, glm, rgb.shape[:2])
        assert self._cache is not None  # set with self._key, just now or by an earlier call on this image
        return self._cache

    def amodal(self, image: np.ndarray, box: Sequence[float], category: int | None = None) -> tuple[np.ndarray, int]:
        """(amodal mask of the object in ``box`` [x0, y0, x1, y1] (inclusive pixel corners), the category id
        it was completed as: ``category``, else the box head's best class)."""
        x0, y0, x1, y1 = _check_box(box, _rgb(image).shape[:2])
        return self.amodal_in_frame(image, (x0, y0, x1 + 1.0, y1 + 1.0), category)

    def amodal_in_frame(
        self, image: np.ndarray, box: Sequence[float], category: int | None = None
    ) -> tuple[np.ndarray, int]:
        """`amodal` for a box in the detector's own convention (pixel edges, floats), as its detections have."""
        maps, label = self.maps_in_frame(image, box, category)
        return maps[0] > 0.5, label

    def maps_in_frame(
        self, image: np.ndarray, box: Sequence[float], category: int | None = None
    ) -> tuple[np.ndarray, int]:
        """(the heads' maps pasted into the image, (C, H, W) float32: channel 0 the probability of being
        part of the object (amodal), then, for the SLN, the probability of each depth layer 0..K-1 (layer 0:
        visible); the category id). ``box`` as in `amodal_in_frame`."""
        with self._lock, torch.inference_mode():
            sizes, features, glm, (H, W) = self._features(image)
            frame_box = torch.tensor([list(map(float, box))], dtype=torch.float32, device=self.predictor.device)
            boxes = resize_boxes(frame_box, (H, W), sizes[0])
            heads = self.predictor.model.roi_heads
            label = self._label(heads, features, boxes, sizes, category)
            labels = torch.tensor([label], device=self.predictor.device)
            roi = heads.mask_roi_pool(features, [boxes], sizes)
            if glm is not None:  # the SLN: the global layering probabilities join the mask features
                glm_rois = roi_align(
                    glm,
                    [boxes],
                    roi.shape[-2:],
                    spatial_scale=heads.glm_scale,
                    sampling_ratio=heads.mask_roi_pool.sampling_ratio,
                )
                head_input = torch.cat([roi, glm_rois], dim=1).contiguous(memory_format=torch.channels_last)
                layer_logits, _ = heads.mask_predictor(heads.mask_head(head_input), labels)
                layer_prob = layer_logits.softmax(dim=1)
                prob = torch.cat([1.0 - layer_prob[:, :1], layer_prob[:, 1:]], dim=1)
            else:
                prob = heads.mask_predictor(heads.mask_head(roi))[:, label : label + 1].sigmoid()
            pasted = paste_roi_maps(prob.float().cpu(), frame_box.cpu(), H, W)[0].numpy()
        return pasted, int(self.predictor.categories[label - 1]["id"])

    def _label(self, heads: Any, features: Any, boxes: torch.Tensor, sizes: Any, category: int | None) -> int:
        """The network's label for the box: ``category``'s, else the box head's best class."""
        if category is None:
            logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [boxes], sizes)))
            return int(logits[0, 1:].argmax()) + 1  # the best class other than background
        ids = [int(c["id"]) for c in self.predictor.categories]
        if int(category) not in ids:
            raise ValueError(f"category {category} is not one of the model's {ids}")
        return ids.index(int(category)) + 1

    def object_in(self, image: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(amodal mask, visible part, category id) of the object in ``box`` (inclusive pixel corners), as
        the heads see it: the visible part is where layer 0 is the likeliest layer (None for a model
        without layers)."""
        x0, y0, x1, y1 = _check_box(box, _rgb(image).shape[:2])
        maps, category = self.maps_in_frame(image, (x0, y0, x1 + 1.0, y1 + 1.0))
        amodal = maps[0] > 0.5
        visible = amodal & (np.argmax(maps[1:], axis=0) == 0) if len(maps) > 1 else None
        return amodal, visible, category


def model_proposal(
    completer: BoxCompleter, image: np.ndarray, scene: AmodalScene, instance_id: int, box: Sequence[float]
) -> np.ndarray:
    """Amodal proposal: the model's amodal mask for ``box``, limited to the objects in front (the visible
    part stays as annotated). The instance's category is used when the model knows it."""
    inst = scene.get(instance_id)
    known = {int(c["id"]) for c in completer.predictor.categories}
    category = inst.category if inst.category is not None and int(inst.category) in known else None
    mask, _ = completer.amodal(image, box, category)
    return _limited(scene, instance_id, mask)


# ----- scene edits -------------------------------------------------------------------------------------


def set_visible_part(scene: AmodalScene, instance_id: int, visible: np.ndarray) -> None:
    """Make ``visible`` the instance's visible part, keeping its hidden part: amodal = hidden part + visible.

    Pixels of ``visible`` that objects in front cover cannot be visible (the painter's rule); they join the
    hidden part. Pixels visible before and not in ``visible`` leave the object."""
    inst = scene.get(instance_id)
    visible = np.asarray(visible, bool)
    if visible.shape != scene.shape:
        raise ValueError(f"the visible mask is {visible.shape}, the image {scene.shape}")
    if not visible.any():
        raise ValueError("the visible mask is empty")
    covered = scene.front_union(instance_id)
    external = inst.external if inst.external is not None else np.zeros(scene.shape, bool)
    amodal = (inst.amodal & (covered | external)) | visible
    if not np.array_equal(amodal, inst.amodal):
        inst.set_amodal(amodal)
    if inst.external is not None:
        inst.external = inst.external & ~visible
        if not inst.external.any():
            inst.external = None


def add_visible_instance(scene: AmodalScene, visible: np.ndarray, name: str, category: int | None = None) -> int:
    """A new instance whose visible part is exactly ``visible``: in front of every object it overlaps (a
    pixel visible on it cannot be hidden by them) and behind the others, so that the objects which may hide
    its hidden part stay in front of it. Returns its id."""
    visible = np.asarray(visible, bool)
    if visible.shape != scene.shape:
        raise ValueError(f"the visible mask is {visible.shape}, the image {scene.shape}")
    if not visible.any():
        raise ValueError("the visible mask is empty")
    overlapped = [inst.rank for inst in scene.instances if (inst.amodal & visible).any()]
    inst = Instance(id=scene.next_instance_id(), amodal=visible, name=str(name).strip(), category=category)
    scene.add(inst, rank=min(overlapped) if overlapped else None)
    return inst.id


# ----- the model's objects into the annotation: adopt a prediction, an object from a box ------------------

# A new object goes in front of an annotated object it overlaps when it is visible on at least this share of
# the pixels their amodal masks share.
FRONT_SHARE = 0.5


def depth_judgements(
    scene: AmodalScene, amodal: np.ndarray, visible: np.ndarray | None, known: dict[int, bool] | None = None
) -> dict[int, bool]:
    """Annotated id -> whether a new object (``amodal``) goes in front of it, for every annotated object whose
    amodal mask overlaps it: as ``known`` says where it says (the model's own order), else in front when the
    new object's ``visible`` part covers at least `FRONT_SHARE` of their overlap (``visible`` None: in front
    of everything it overlaps)."""
    amodal = np.asarray(amodal, bool)
    out: dict[int, bool] = {}
    for inst in scene.instances:
        overlap = inst.amodal & amodal
        shared = int(np.count_nonzero(overlap))
        if not shared:
            continue
        if known is not None and inst.id in known:
            out[inst.id] = bool(known[inst.id])
        else:
            seen = shared if visible is None else int(np.count_nonzero(overlap & visible))
            out[inst.id] = seen >= FRONT_SHARE * shared
    return out


def depth_rank(scene: AmodalScene, in_front: dict[int, bool]) -> int:
    """The rank (1 = front) a new object takes: the place in the scene's front-to-back order that contradicts
    the fewest of the judgements ``in_front`` (annotated id -> the new object goes in front of it); among
    equally good places the front-most. With consistent judgements that is just in front of the front-most
    object it goes in front of, else just behind the back-most one it goes behind, else the front."""
    order = scene.order_ids()
    cost = [sum(1 for i, front in in_front.items() if (order.index(i) < pos) == front) for pos in range(len(order) + 1)]
    return int(np.argmin(cost)) + 1


@dataclass
class ObjectProposal:
    """A new object for the annotation: its amodal mask, name, category and rank (1 = front), with the
    visible part it gets there (painter's rule), the judgements the rank came from (`depth_judgements`)
    and a note for the annotator (e.g. the category was not found), empty when there is nothing to say."""

    amodal: np.ndarray
    name: str
    category: int | None
    rank: int
    visible: np.ndarray
    in_front: dict[int, bool]
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """``{"name", "category", "rank", "area", "visible_area", "in_front_of", "behind", "note"}``."""
        return {
            "name": self.name,
            "category": self.category,
            "rank": self.rank,
            "area": int(np.count_nonzero(self.amodal)),
            "visible_area": int(np.count_nonzero(self.visible)),
            "in_front_of": sorted(i for i, front in self.in_front.items() if front),
            "behind": sorted(i for i, front in self.in_front.items() if not front),
            "note": self.note,
        }


def dataset_category(name: str, categories: Sequence[dict[str, Any]]) -> tuple[int | None, str, str]:
    """(category id, name, note) of an object the model calls ``name``, in a dataset with ``categories``: the
    category of that name (case and spaces ignored); without one the dataset's first category, and the
    note says so; a dataset without categories (COCOA) keeps the model's name and no category."""
    if not categories:
        return None, name, ""
    wanted = " ".join(str(name).lower().split())
    for cat in categories:
        if " ".join(str(cat.get("name", "")).lower().split()) == wanted:
            return int(cat["id"]), str(cat["name"]), ""
    default = min(categories, key=lambda c: int(c["id"]))
    note = f"this dataset has no category {name!r}: set to its first, {default.get('name')!r}; correct it if wrong"
    return int(default["id"]), str(default.get("name") or name), note


def object_proposal(
    scene: AmodalScene,
    amodal: np.ndarray,
    visible: np.ndarray | None,
    name: str,
    categories: Sequence[dict[str, Any]],
    known: dict[int, bool] | None = None,
) -> ObjectProposal:
    """The proposal of a new object with this ``amodal`` mask, placed in depth by `depth_judgements` (the
    model's ``visible`` part, ``known`` order) and `depth_rank`; its name and category by
    `dataset_category`."""
    amodal = np.asarray(amodal, bool)
    if amodal.shape != scene.shape:
        raise ValueError(f"the mask is {amodal.shape}, the image {scene.shape}")
    if not amodal.any():
        raise ValueError("the model sees no object there: draw the box around an object")
    in_front = depth_judgements(scene, amodal, visible, known)
    rank = depth_rank(scene, in_front)
    covered = np.zeros(scene.shape, bool)
    for inst in scene.instances:
        if inst.rank < rank:
            covered |= inst.amodal
    category, name, note = dataset_category(name, categories)
    return ObjectProposal(amodal, name, category, rank, amodal & ~covered, in_front, note)


def predicted_order(annotation: AmodalScene, prediction: AmodalScene, predicted_id: int) -> dict[int, bool]:
    """Annotated id -> whether the prediction has its object ``predicted_id`` in front of that annotated
    object's match (the greedy matching of `semlayer.review.match`), for the matched annotated objects
    other than its own match."""
    annotated, predicted = Objects.of(annotation), Objects.of(prediction)
    me = predicted.ids.index(predicted_id)
    return {
        annotated.ids[a]: predicted.ranks[me] < predicted.ranks[p]
        for a, (p, _) in match(annotated, predicted).items()
        if p != me
    }


def adoption(
    annotation: AmodalScene, prediction: AmodalScene, predicted_id: int, categories: Sequence[dict[str, Any]]
) -> ObjectProposal:
    """The predicted object ``predicted_id`` as a new object of the annotation: its amodal mask; its name
    mapped to the dataset's ``categories`` (`dataset_category`); its depth from the prediction: in front of
    an overlapped annotated object when the prediction has it in front of that object's match
    (`predicted_order`), and for an overlapped object the prediction does not match, in front when its
    predicted visible part covers most of their overlap; then placed by `depth_rank`."""
    try:
        inst = prediction.get(int(predicted_id))
    except KeyError:
        raise ValueError(f"the prediction has no object {predicted_id}") from None
    known = predicted_order(annotation, prediction, inst.id)
    return object_proposal(
        annotation, inst.amodal, prediction.visible(inst.id), inst.name or "object", categories, known
    )


def missing_predictions(annotation: AmodalScene, prediction: AmodalScene) -> list[int]:
    """Ids of the predicted objects that match no annotated object (`semlayer.review.match`: amodal IoU
    below 0.5 or taken by a likelier prediction), by descending score."""
    annotated, predicted = Objects.of(annotation), Objects.of(prediction)
    matched = {p for p, _ in match(annotated, predicted).values()}
    left = [k for k in range(len(predicted.ids)) if k not in matched]
    return [predicted.ids[k] for k in sorted(left, key=lambda k: -predicted.scores[k])]


def add_object(scene: AmodalScene, proposal: ObjectProposal) -> int:
    """Add the proposed object at its rank (the others behind it shift back); returns its new id."""
    if proposal.amodal.shape != scene.shape:
        raise ValueError(f"the mask is {proposal.amodal.shape}, the image {scene.shape}")
    inst = Instance(id=scene.next_instance_id(), amodal=proposal.amodal.copy(), name=proposal.name.strip(),
                    category=proposal.category)  # fmt: skip
    scene.add(inst, rank=proposal.rank)
    return inst.id


def adopt_predictions(
    scene: AmodalScene, prediction: AmodalScene, predicted_ids: Sequence[int], categories: Sequence[dict[str, Any]]
) -> list[int]:
    """Adopt the predicted objects one after the other (`adoption`, each placed among the annotated objects
    and those adopted before it); returns the new ids. A scene edit: run it through
    `semlayer.workspace.EditSession.apply` for one undo step."""
    return [add_object(scene, adoption(scene, prediction, pid, categories)) for pid in predicted_ids]


# ----- a pending proposal ------------------------------------------------------------------------------

TOOLS = ("grabcut", "superpixel", "hidden_brush", "hidden_polygon")
COMPLETIONS = ("hull", "mirror", "model")
ACCEPT_AS = ("visible", "new", "amodal", "object")
BRUSH_MODES = ("add", "remove")
DEFAULT_RADIUS = 8
MAX_RADIUS = 512


def image_point(shape: tuple[int, int], point: Sequence[float], what: str) -> tuple[int, int]:
    """``point`` [x, y] rounded to a pixel of an image of ``shape``; ValueError outside it."""
    if len(point) != 2:
        raise ValueError(f"{what}: a point is [x, y], got {list(point)}")
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    H, W = shape
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"{what}: point ({x}, {y}) is outside the {W}x{H} image")
    return x, y


def image_points(shape: tuple[int, int], points: Sequence[Sequence[float]] | None, what: str) -> list[tuple[int, int]]:
    return [image_point(shape, p, f"{what}[{i}]") for i, p in enumerate(points or [])]


def _check_mode(mode: str) -> None:
    if mode not in BRUSH_MODES:
        raise ValueError(f"mode must be 'add' or 'remove', got {mode!r}")


@dataclass
class AssistState:
    """The assists' work on one image: the clicks so far and the *proposal* they made, a visible part
    (GrabCut, superpixels) or one instance's amodal mask (hidden-part brush and polygon, completions).
    Accepting it is one ordinary edit of an editing session (`accept`). Errors are ValueError."""

    key: tuple = ()  # what it was made on (the caller's: the image and the state of its scene)
    box: list[int] | None = None
    corner: tuple[int, int] | None = None  # first corner of a box being drawn
    positive: list[tuple[int, int]] = field(default_factory=list)
    negative: list[tuple[int, int]] = field(default_factory=list)
    polygon: list[tuple[int, int]] = field(default_factory=list)
    proposal: np.ndarray | None = None
    kind: str = "visible"  # what the proposal is: a visible part, or an instance's amodal mask
    instance: int | None = None  # the instance an amodal proposal belongs to
    label: str = ""  # what made it, for the undo history
    tool: str = "grabcut"  # the chosen assist (kept across images)
    new_object: ObjectProposal | None = None  # a whole new object (kind "object"): its name, rank, visible part
    boxes_on_image: bool = False  # clicks on the main image draw a box for a new object (kept across images)
    note: str = ""  # a word for the annotator about the last object added (e.g. its category was guessed)

    def _set(self, proposal: np.ndarray, kind: str, label: str, instance: int | None = None) -> None:
        self.proposal, self.kind, self.label, self.instance = proposal, kind, label, instance
        self.new_object = None

    def summary(self) -> dict[str, Any]:
        """``{"kind", "instance", "label", "area", "mask"}``: the proposal, its mask as COCO RLE (``counts`` a
        string); ``mask`` None when there is none. A new object's (kind ``object``) adds ``object``: its
        `ObjectProposal.summary` (name, category, rank, ...)."""
        if self.proposal is None:
            return {"kind": None, "instance": None, "label": "", "area": 0, "mask": None}
        area = int(self.proposal.sum())
        out = {"kind": self.kind, "instance": self.instance, "label": self.label, "area": area,
               "mask": encode_rle(self.proposal)}  # fmt: skip
        if self.new_object is not None:
            out["object"] = self.new_object.summary()
        return out

    def propose_object(self, completer: BoxCompleter, image: np.ndarray, scene: AmodalScene,
                       box: Sequence[float], categories: Sequence[dict[str, Any]]) -> None:  # fmt: skip
        """A whole new object from the model's RoI heads on ``box`` [x0, y0, x1, y1]: its amodal mask, its
        name from the predicted class (`dataset_category`) and its depth place from the predicted visible
        part (`object_proposal`)."""
        amodal, visible, category = completer.object_in(image, box)
        names = {int(c["id"]): str(c.get("name", "object")) for c in completer.predictor.categories}
        proposal = object_proposal(scene, amodal, visible, names.get(category, "object"), categories)
        self._set(proposal.amodal, "object", f"model object in box {list(box)}")
        self.box, self.new_object = [int(round(float(v))) for v in box], proposal

    def grabcut(self, image: np.ndarray, box: Sequence[float], positive: Sequence[Sequence[float]] = (),
                negative: Sequence[Sequence[float]] = (), foreground: np.ndarray | None = None,
                background: np.ndarray | None = None) -> None:  # fmt: skip
        """GrabCut from ``box`` [x0, y0, x1, y1] and positive / negative clicks (and strokes)."""
        shape = image.shape[:2]
        pos, neg = image_points(shape, positive, "positive"), image_points(shape, negative, "negative")
        fg = clicks_mask(shape, pos) | (np.zeros(shape, bool) if foreground is None else foreground)
        bg = clicks_mask(shape, neg) | (np.zeros(shape, bool) if background is None else background)
        mask = grabcut(image, list(box), fg, bg)
        self.box, self.positive, self.negative = [int(round(float(v))) for v in box], pos, neg
        self._set(mask, "visible", f"GrabCut ({len(pos)}+ / {len(neg)}- clicks)")

    def superpixels(self, labels: np.ndarray, positive: Sequence[Sequence[float]] = (),
                    negative: Sequence[Sequence[float]] = (), stroke: np.ndarray | None = None,
                    mode: str = "add") -> None:  # fmt: skip
        """The superpixels (``labels``) under the positive clicks (and a stroke) added to the visible
        proposal, those under the negative clicks removed."""
        shape = labels.shape
        base = self.proposal if self.proposal is not None and self.kind == "visible" else np.zeros(shape, bool)
        add = superpixel_stroke(labels, clicks_mask(shape, image_points(shape, positive, "positive"), 0))
        remove = superpixel_stroke(labels, clicks_mask(shape, image_points(shape, negative, "negative"), 0))
        if stroke is not None:
            (add if mode == "add" else remove)[...] |= superpixel_stroke(labels, stroke)
        self._set((base | add) & ~remove, "visible", "superpixel brush")

    def amodal_base(self, scene: AmodalScene, instance_id: int) -> np.ndarray:
        """What an amodal assist starts from: the proposal of that instance, else its amodal mask."""
        if self.proposal is not None and self.kind == "amodal" and self.instance == instance_id:
            return self.proposal
        return scene.get(instance_id).amodal

    def paint_hidden(self, scene: AmodalScene, instance_id: int, stroke: np.ndarray, mode: str = "add",
                     label: str = "hidden-part brush") -> None:  # fmt: skip
        """A stroke clipped to the objects in front of the instance, on its amodal proposal."""
        _check_mode(mode)
        clipped = stroke & occluders(scene, instance_id)
        base = self.amodal_base(scene, instance_id)
        self._set(base | clipped if mode == "add" else base & ~clipped, "amodal", label, instance_id)

    def hidden_brush(self, scene: AmodalScene, instance_id: int, points: Sequence[Sequence[float]],
                     radius: float = DEFAULT_RADIUS, mode: str = "add") -> None:  # fmt: skip
        """A brush stroke through ``points`` (one point: a dab); ``radius`` 0 sizes a dab by where it is
        (`auto_radius`)."""
        pts = image_points(scene.shape, points, "points")
        if not pts:
            raise ValueError("a stroke needs at least one point")
        if not 0 <= float(radius) <= MAX_RADIUS:
            raise ValueError(f"radius must be in [0, {MAX_RADIUS}] pixels (0: sized by the click), got {radius}")
        if float(radius) == 0:
            if len(pts) != 1:
                raise ValueError("radius 0 (sized by the click) is for a single dab, not a stroke")
            base = self.amodal_base(scene, instance_id)
            radius = auto_radius(base, *pts[0], mode == "add", keep=scene.visible(instance_id))
        canvas = np.zeros(scene.shape, np.uint8)
        r = int(round(float(radius)))
        for a, b in zip(pts, pts[1:]):
            cv2.line(canvas, a, b, 1, thickness=2 * r + 1)
        self.paint_hidden(scene, instance_id, canvas.astype(bool) | clicks_mask(canvas.shape, pts, r), mode)

    def hidden_polygon(self, scene: AmodalScene, instance_id: int, points: Sequence[Sequence[float]],
                       mode: str = "add") -> None:  # fmt: skip
        """A filled polygon clipped to the objects in front of the instance."""
        poly = polygon_mask(scene.shape, image_points(scene.shape, points, "points"))
        self.paint_hidden(scene, instance_id, poly, mode, "hidden-part polygon")

    def complete(self, scene: AmodalScene, instance_id: int, method: str, image: np.ndarray | None = None,
                 completer: BoxCompleter | None = None, box: Sequence[float] | None = None) -> None:  # fmt: skip
        """A completion proposal of the instance's amodal mask: ``hull``, ``mirror`` or ``model`` (the
        completer's RoI heads on ``box``, default the drawn box, else the instance's amodal box)."""
        if method not in COMPLETIONS:
            raise ValueError(f"completion must be one of {', '.join(COMPLETIONS)}, got {method!r}")
        if method == "hull":
            mask, label = hull_proposal(scene, instance_id), "hull completion"
        elif method == "mirror":
            mask, axis = mirror_proposal(scene, instance_id)
            label = f"mirror completion (axis {axis.angle:g} deg)"
        else:
            if completer is None or image is None:
                raise ValueError("the model's completion needs a model and the image")
            box = box if box is not None else self.box
            if box is None:
                x, y, w, h = scene.get(instance_id).bbox()
                box = [x, y, x + w - 1, y + h - 1]
            mask, label = model_proposal(completer, image, scene, instance_id, list(box)), "model completion"
        self._set(mask, "amodal", label, instance_id)

    def natural_use(self, selected: int | None) -> str:
        """How the proposal is accepted when not said: an amodal one as such, a visible part as the
        selected instance's, else as a new instance."""
        if self.kind in ("amodal", "object"):
            return self.kind
        return "visible" if selected is not None else "new"

    def accept(self, session: Any, as_: str, selected: int | None = None, name: str = "object",
               category: int | None = None) -> int | None:  # fmt: skip
        """Apply the proposal through ``session.apply`` (`semlayer.workspace.EditSession`: one undoable,
        autosaved edit) as ``visible`` (the ``selected`` instance's visible part), ``new``, ``amodal`` or
        ``object`` (a new object with its proposed name, category and rank). Returns the new instance's id for
        ``new`` and ``object``."""
        if self.proposal is None:
            raise ValueError("there is no proposal to accept: click on the assist image or ask for a completion first")
        if as_ not in ACCEPT_AS:
            raise ValueError(f"accept as one of {', '.join(ACCEPT_AS)}, got {as_!r}")
        if (as_ in ("amodal", "object") or self.kind in ("amodal", "object")) and as_ != self.kind:
            what = {"amodal": "an amodal mask", "object": "a new object"}.get(self.kind, "a visible part")
            raise ValueError(f"the proposal is {what}: it cannot be accepted as {as_!r}")
        mask, label = self.proposal, self.label
        if as_ == "object" and self.new_object is not None:
            return session.apply(f"{label}: new {self.new_object.name!r}", add_object, self.new_object)
        if as_ == "amodal":
            session.set_amodal(self.instance, mask)
            return None
        if as_ == "visible":
            session.apply(f"{label}: visible part of {selected}", set_visible_part, selected, mask)
            return None
        return session.apply(f"{label}: new {name!r}", add_visible_instance, mask, str(name or "object"), category)


# ----- the simulated annotator -------------------------------------------------------------------------


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    positive: bool


def _centre(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the region's pixel farthest from its boundary (the image frame counts as boundary);
    the first in row-major order on ties."""
    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def simulated_click(target: np.ndarray, current: np.ndarray) -> Click | None:
    """The standard simulated annotator's next click: at the centre (the point farthest from the boundary)
    of the largest connected false-negative or false-positive region, positive on a false negative; with an
    empty ``current`` that is the target's interior point farthest from its boundary. None when nothing is
    wrong. Regions are 8-connected; on equal areas the false negative wins."""
    target, current = np.asarray(target, bool), np.asarray(current, bool)
    best: tuple[int, bool, np.ndarray] | None = None
    for positive, error in ((True, target & ~current), (False, current & ~target)):
        if not error.any():
            continue
        _, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, positive, labels == k)
    if best is None:
        return None
    x, y = _centre(best[2])
    return Click(x, y, best[1])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
