"""Figures for the app and the docs: overlays of instances (each in its own colour, numbered by depth
rank), sem-dist level sets, the global layering map, one instance's sem-dist map as a heat map or a 3-D
surface, and a one-instance inspection panel.

Every function returns an RGB uint8 array. Overlays and panels are drawn with OpenCV (fast enough for
interactive use); plots use matplotlib through its object API (``Figure`` + ``FigureCanvasAgg``), never
pyplot, so no global figure state is created or leaked.
"""

from __future__ import annotations

import functools
import os
from typing import Collection, Sequence

import cv2
import matplotlib
import matplotlib.cm
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .boxes import EMPTY_BOX, crop_over, grow_box, mask_box
from .io_utils import atomic_write_bytes
from .scene import AmodalScene
from .semdist import DEFAULT_K, DEFAULT_TAU, SemDistMap, encode_scene, global_layering_map, raw_layer_crop

VIEWS = ("visible", "occluded", "amodal")
RANK_CMAP = "plasma"
# Fixed colours of the one-instance panel (RGB).
VISIBLE_COLOR = (40, 210, 90)
OCCLUDED_COLOR = (255, 40, 190)


# ----- small helpers ----------------------------------------------------------------------------
def rank_colors(n: int, cmap: str = RANK_CMAP) -> np.ndarray:
    """(n + 1, 3) uint8 RGB, row r = colour of depth rank r (row 0 unused): front-most bright yellow,
    back-most deep blue, evenly spaced on a perceptually uniform colormap."""
    return _rank_colors(n, cmap).copy()


@functools.lru_cache(maxsize=64)
def _rank_colors(n: int, cmap: str) -> np.ndarray:
    # Cached: a matplotlib colormap look-up is a noticeable part of every redraw (docs/benchmarks.md).
    t = np.array([0.9]) if n <= 1 else np.linspace(0.9, 0.08, n)
    rgb = (matplotlib.colormaps[cmap](t)[:, :3] * 255).round().astype(np.uint8)
    colors = np.concatenate([np.zeros((1, 3), np.uint8), rgb], axis=0)
    colors.flags.writeable = False
    return colors


# Each instance's colour follows its id, never its rank, so a reorder recolours nothing. tab20 is a palette
# made to be told apart; its ten strong colours come first, then their light partners: any 10 consecutive
# ids get 10 different hues and any 20 consecutive ids 20 different colours (COCOA numbers regions 1..N per
# image; COCO and KINS number an image's annotations consecutively in practice). Ids 20 apart share one.
_TAB20 = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
ID_PALETTE = (np.concatenate([_TAB20[0::2], _TAB20[1::2]]) * 255).round().astype(np.uint8)
ID_PALETTE.flags.writeable = False


def instance_color(instance_id: int) -> tuple[int, int, int]:
    """The colour (RGB) of the instance with this id, wherever it is drawn: ``ID_PALETTE[(id - 1) % 20]``."""
    r, g, b = (int(c) for c in ID_PALETTE[(int(instance_id) - 1) % len(ID_PALETTE)])
    return r, g, b


def instance_hex(instance_id: int) -> str:
    """`instance_color` as a CSS colour (``#rrggbb``)."""
    return "#{:02x}{:02x}{:02x}".format(*instance_color(instance_id))


def text_color_on(color: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``color`` (RGB)."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ValueError(f"image must be an HxWx3 (or HxWx4) uint8 array, got {img.shape} {img.dtype}")
    if img.shape[:2] != tuple(shape):
        raise ValueError(f"image is {img.shape[1]}x{img.shape[0]} but the scene is {shape[1]}x{shape[0]}")
    return img[..., :3]


def _dim(image: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """Desaturate and darken so coloured annotations stand out (float32 RGB)."""
    img = image.astype(np.float32)
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return (0.35 * img + 0.65 * gray[..., None]) * amount


def _hatch(box: tuple[int, int, int, int], period: int = 6, offset: int = 0) -> np.ndarray:
    """Diagonal stripes (bool) over ``box`` of the image: the project's sign for hidden pixels. Stripes
    are anchored to the image, so crops line up; ``offset`` shifts them, so the hatches of instances
    hidden at the same pixels interleave instead of covering each other."""
    x0, y0, x1, y1 = box
    return (np.add.outer(np.arange(y0, y1), np.arange(x0, x1)) + offset) % period < max(period // 3, 1)


def _fill(
    out: np.ndarray,
    parts: list,
    colors: Sequence[np.ndarray],
    alphas: Sequence[float],
    tint_visible: bool,
    hatch_hidden: bool,
    period: int,
) -> None:
    """Tint visible parts and hatch hidden ones, in place. ``parts`` are ``(index, box, visible crop,
    hidden crop)``, back to front. Tints go first (visible parts never overlap); the hatches go on top of
    everything, so a hidden part shows its own colour rather than the tint of what hides it, and each
    part's stripes are shifted so hatches of parts hidden at the same pixels interleave."""
    for (_, (x0, y0, x1, y1), vis, occ), color, a in zip(parts, colors, alphas):
        weight = np.zeros(vis.shape, np.float32)
        if tint_visible:
            weight[vis] = a
        if hatch_hidden:
            weight[occ] = 0.25 * a  # a faint wash under the stripes keeps thin hidden slivers visible
        region = out[y0:y1, x0:x1]
        region += (color.astype(np.float32) - region) * weight[..., None]
    if not hatch_hidden:
        return
    for k, ((_, box, _, occ), color, a) in enumerate(zip(parts, colors, alphas)):
        if not occ.any():
            continue
        x0, y0, x1, y1 = box
        weight = np.zeros(occ.shape, np.float32)
        weight[occ & _hatch(box, period, offset=2 * k)] = min(1.0, 1.6 * a)
        region = out[y0:y1, x0:x1]
        region += (color.astype(np.float32) - region) * weight[..., None]


def _contours(mask: np.ndarray, offset: tuple[int, int]) -> list[np.ndarray]:
    """Every outline of a mask (outer ones and holes), as (P, 2) int32 points in image coordinates."""
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE, offset=offset)
    return [c[:, 0, :] for c in found]


def _draw_outline(
    canvas: np.ndarray,
    points: np.ndarray,
    solid: np.ndarray | None,
    color: tuple[int, ...],
    thickness: int,
    dash: int = 4,
) -> None:
    """Closed outline; where ``solid`` (per point) is False the line is dashed. Hidden outline = dashed."""
    if solid is None or solid.all():
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], True, color, thickness, cv2.LINE_AA)
        return
    on = solid | ((np.arange(len(points)) // dash) % 2 == 0)
    closed = np.concatenate([points, points[:1]])
    on = np.concatenate([on, on[:1]])
    seg = on[:-1] & on[1:]  # segment k joins point k and k+1
    if not seg.any():
        return
    # Runs of drawn segments become polylines: one cv2 call for the whole outline.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], seg.astype(np.int8), [0]])))
    runs = [closed[a : b + 1].reshape(-1, 1, 2) for a, b in zip(edges[::2], edges[1::2])]
    cv2.polylines(canvas, runs, False, color, thickness, cv2.LINE_AA)


def _label_point(mask: np.ndarray) -> tuple[int, int] | None:
    """The pixel of a mask farthest from its outline (where a label is best read), as (x, y)."""
    box = mask_box(mask)
    if box == EMPTY_BOX:
        return None
    x0, y0, x1, y1 = box
    dist = cv2.distanceTransform(np.pad(mask[y0:y1, x0:x1].astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return x0 + int(x), y0 + int(y)


def _put_text(
    canvas: np.ndarray,
    text: str,
    org: tuple[int, int],
    scale: float,
    color: tuple[int, ...] = (255, 255, 255),
    thickness: int = 1,
) -> None:
    """Text with a dark halo, readable on any background."""
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _instance_label(scene: AmodalScene, index: int) -> str:
    inst = scene.instances[index]
    return inst.name.strip() or f"#{inst.id}"


# ----- overlay ------------------------------------------------------------------------------------
def overlay_by_rank(
    image: np.ndarray,
    scene: AmodalScene,
    view: str = "visible",
    alpha: float = 0.5,
    selected: int | None = None,
    legend: bool = True,
    labels: bool = True,
    shown: Collection[int] | None = None,
) -> np.ndarray:
    """The image with every instance in its own colour (`instance_color`: by id, so a reorder recolours
    nothing), painted back to front, each labelled with its depth rank.

    ``view``: ``visible`` fills each visible region; ``occluded`` fills only the hidden parts (hatched)
    and outlines each whole extent, dashed where hidden; ``amodal`` fills whole extents, visible parts
    solid and hidden parts hatched. ``selected`` (an instance id) is emphasised and the others faded.
    ``legend`` adds a "rank: name" key in the emptiest corner; ``labels`` writes each rank on its
    instance, on a chip of its colour. ``shown``: the ids drawn (default all); visible and hidden parts
    are those of the whole scene, so hiding an instance does not uncover what it hides. Returns HxWx3
    uint8, the image's size, so clicks map to image pixels unchanged."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _check_image(image, scene.shape)
    if selected is not None:
        scene.index_of(selected)  # unknown id: KeyError naming the scene, before any drawing
    h, w = scene.shape
    drawn = [i for i in scene.front_to_back() if shown is None or scene.instances[i].id in shown]
    visible = scene.visible_masks()
    out = img.astype(np.float32)
    thickness = max(1, round(min(h, w) / 320))
    period = max(6, 3 * thickness + 3)
    parts = []
    for i in drawn[::-1]:  # back to front
        inst = scene.instances[i]
        box = mask_box(inst.amodal)
        if box != EMPTY_BOX:
            x0, y0, x1, y1 = box
            vis = visible[i][y0:y1, x0:x1]
            parts.append((i, box, vis, inst.amodal[y0:y1, x0:x1] & ~vis))
    fading = [alpha if selected is None or scene.instances[p[0]].id == selected else 0.3 * alpha for p in parts]
    _fill(
        out,
        parts,
        [ID_PALETTE[(scene.instances[p[0]].id - 1) % len(ID_PALETTE)] for p in parts],
        fading,
        tint_visible=view != "occluded",
        hatch_hidden=view != "visible",
        period=period,
    )
    canvas = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    for i, (x0, y0, x1, y1), vis, occ in parts:
        inst = scene.instances[i]
        color = instance_color(inst.id)
        if view == "visible":
            shapes = [(c, None) for c in _contours(vis, (x0, y0))]
        else:
            # A point of the amodal outline is hidden when its pixel is occluded.
            shapes = [(c, ~occ[c[:, 1] - y0, c[:, 0] - x0]) for c in _contours(inst.amodal[y0:y1, x0:x1], (x0, y0))]
        emphasis = selected is not None and inst.id == selected
        for points, solid in shapes:
            if emphasis:  # a white halo under the selected instance's outline
                _draw_outline(canvas, points, solid, (255, 255, 255), thickness + 2)
            _draw_outline(canvas, points, solid, color, thickness + int(emphasis))
    if labels:
        _draw_rank_labels(canvas, scene, visible, view, drawn)
    if legend and drawn:
        _draw_legend(canvas, scene, drawn, visible if view == "visible" else [inst.amodal for inst in scene.instances])
    return canvas


def selection_outline(view: np.ndarray, scene: AmodalScene, instance_id: int) -> np.ndarray:
    """A copy of ``view`` (a picture of ``scene`` enlarged by a whole factor, 1 included) with the instance's
    whole outline drawn over it: its colour on a white halo, dashed where hidden. Only the instance's
    box is redrawn, so marking a selection costs next to nothing next to drawing the view again. Where the
    view sits on the page is the caller's: it hands over just the part showing the scene."""
    idx = scene.index_of(instance_id)
    inst = scene.instances[idx]
    h, w = scene.shape
    scale = view.shape[0] // h if view.ndim == 3 else 0
    if scale < 1 or view.shape[:2] != (h * scale, w * scale):
        raise ValueError(f"a {view.shape} view cannot hold the {w}x{h} scene enlarged by a whole factor")
    out = view.copy()
    box = mask_box(inst.amodal, margin=1)
    if box == EMPTY_BOX:
        return out
    x0, y0, x1, y1 = box
    amodal = inst.amodal[y0:y1, x0:x1]
    hidden = amodal & ~scene.visible(instance_id)[y0:y1, x0:x1]
    color = instance_color(instance_id)
    thickness = max(3, round(min(h, w) * scale / 170))
    dash = max(2, round(4 * thickness / scale))
    for points in _contours(amodal, (0, 0)):
        solid = ~hidden[points[:, 1], points[:, 0]]
        points = _zoomed(points, scale, (x0 * scale, y0 * scale))
        _draw_outline(out, points, solid, (255, 255, 255), thickness + 2, dash=dash)
        _draw_outline(out, points, solid, color, thickness, dash=dash)
    return out


def _draw_rank_labels(
    canvas: np.ndarray, scene: AmodalScene, visible: list[np.ndarray], view: str, drawn: Sequence[int]
) -> None:
    """Each drawn instance's rank on a chip of its colour, where its (visible, or hidden) part is widest."""
    scale = max(0.35, min(canvas.shape[:2]) / 900)
    for i in drawn:
        inst = scene.instances[i]
        # Hidden parts are where the occluded view looks, so its labels sit there when there are any.
        hidden = inst.amodal & ~visible[i] if view == "occluded" else None
        where = hidden if hidden is not None and hidden.any() else visible[i]
        point = _label_point(where) or _label_point(inst.amodal)
        if point is None:
            continue
        text = str(inst.rank)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x, y = point[0] - tw // 2, point[1] + th // 2
        color = instance_color(inst.id)
        pad = max(1, th // 4)
        cv2.rectangle(canvas, (x - pad - 1, y - th - pad - 1), (x + tw + pad, y + base), (0, 0, 0), -1)
        cv2.rectangle(canvas, (x - pad, y - th - pad), (x + tw + pad - 1, y + base - 1), color, -1)
        cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color_on(color), 1, cv2.LINE_AA)


def _draw_legend(canvas: np.ndarray, scene: AmodalScene, order: list[int], masks: Sequence[np.ndarray]) -> None:
    """A "rank: name" key of the instances ``order`` names (indices, front-most first) in the corner where it
    hides the fewest annotated pixels."""
    h, w = canvas.shape[:2]
    scale = max(0.35, min(h, w) / 1000)
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    row = th + base + 4
    pad = 5
    texts = [f"{scene.instances[i].rank}: {_instance_label(scene, i)}" for i in order]
    fit = max(1, (h - 2 * pad) // row)
    if len(texts) > fit:  # keep the front-most rows, say how many more there are
        texts, order = texts[: fit - 1] + [f"+{len(texts) - fit + 1} more"], order[: fit - 1]
    swatch = th + 2
    text_w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in texts)
    bw, bh = min(w, 3 * pad + swatch + text_w), min(h, 2 * pad + row * len(texts))
    union = np.zeros((h, w), bool)
    for m in masks:
        union |= m
    corners = [(w - bw, 0), (0, 0), (w - bw, h - bh), (0, h - bh)]
    cx, cy = min(corners, key=lambda c: int(union[c[1] : c[1] + bh, c[0] : c[0] + bw].sum()))
    box = canvas[cy : cy + bh, cx : cx + bw]
    box[:] = (box.astype(np.float32) * 0.3).astype(np.uint8)
    for k, text in enumerate(texts):
        y = cy + pad + k * row
        if k < len(order):
            cv2.rectangle(
                canvas,
                (cx + pad, y + 1),
                (cx + pad + swatch, y + swatch - 1),
                instance_color(scene.instances[order[k]].id),
                -1,
            )
        cv2.putText(
            canvas,
            text,
            (cx + 2 * pad + swatch, y + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )


# ----- one instance ------------------------------------------------------------------------------
_PANEL_PALETTE = np.array([OCCLUDED_COLOR, VISIBLE_COLOR], np.uint8)  # indexed by "is visible"


@functools.lru_cache(maxsize=16)
def _stripes(size: tuple[int, int], period: int) -> np.ndarray:
    """`_hatch` over a whole (width, height) canvas, cached: a panel's size repeats from one redraw to the next."""
    stripes = _hatch((0, 0, size[0], size[1]), period=period)
    stripes.flags.writeable = False
    return stripes


def instance_panel(
    image: np.ndarray, scene: AmodalScene, instance_id: int, margin: int = 16, out_size: int = 320
) -> np.ndarray:
    """One instance, cropped around its amodal box plus ``margin``: visible part filled green, occluded
    part hatched magenta, the amodal outline (dashed where hidden), the occluders' outlines in grey and
    a caption strip. The crop is enlarged so its longer side is ``out_size`` (never shrunk)."""
    img = _check_image(image, scene.shape)
    idx = scene.index_of(instance_id)
    inst = scene.instances[idx]
    box = grow_box(inst.box, margin, scene.shape)
    if box == EMPTY_BOX:
        raise ValueError(f"instance {instance_id} of scene {scene.image_id} has an empty amodal mask")
    x0, y0, x1, y1 = box
    # From the crops, in the panel's box: no frame of the image per click.
    vis = crop_over(scene.visible_crop(instance_id), inst.box, box)
    amodal = crop_over(inst.amodal_crop, inst.box, box)
    occ = amodal & ~vis
    size = _zoom_crop(box, out_size)
    zoom = size[0] / (x1 - x0)

    base = cv2.resize(_dim(img[y0:y1, x0:x1], 0.7), size, interpolation=cv2.INTER_LINEAR)
    vis_u, occ_u = _nearest(vis, size), _nearest(occ, size)
    # This blend is the bulk of a click's and a reorder's redraw: the colours by a table look-up, the
    # stripes from a cache, and one OpenCV blend (base * (1 - w) + colour * w, rounded) for the rest.
    weight = np.where(occ_u, np.where(_stripes(size, 8), np.float32(0.85), np.float32(0.2)), np.float32(0.45) * vis_u)
    color = _PANEL_PALETTE[vis_u.view(np.uint8)]
    canvas = cv2.blendLinear(cv2.convertScaleAbs(base), color, 1 - weight, weight)  # base rounded to uint8
    # Outlines traced on the crop and drawn zoomed (as on the layer map): a fraction of the points of
    # tracing the enlarged masks, for the same lines.
    for j in scene.occluders(instance_id):
        occluder = scene.get(j)
        for points in _contours(crop_over(occluder.amodal_crop, occluder.box, box), (0, 0)):
            _draw_outline(canvas, _zoomed(points, zoom), None, (170, 170, 170), 1)
    for points in _contours(amodal, (0, 0)):
        solid = ~occ[points[:, 1], points[:, 0]]
        _draw_outline(canvas, _zoomed(points, zoom), solid, (255, 255, 255), 2, dash=max(1, round(6 / zoom)))
    for points in _contours(vis, (0, 0)):
        _draw_outline(canvas, _zoomed(points, zoom), None, VISIBLE_COLOR, 1)
    rate = 1.0 - float(vis.sum()) / max(int(amodal.sum()), 1)
    caption = f"{_instance_label(scene, idx)}  rank {inst.rank}  occluded {rate:.0%}"
    return _with_caption(canvas, caption, [("visible", VISIBLE_COLOR), ("occluded", OCCLUDED_COLOR)])


def _with_caption(canvas: np.ndarray, caption: str, keys: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    w = canvas.shape[1]
    scale = 0.45
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    line = th + base + 6
    strip = np.full((2 * line + 4, w, 3), 28, np.uint8)
    cv2.putText(strip, caption, (6, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    x = 6
    for text, color in keys:
        cv2.rectangle(strip, (x, line + 3), (x + th, line + 3 + th), color, -1)
        cv2.putText(
            strip, text, (x + th + 5, line + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1, cv2.LINE_AA
        )
        x += th + 15 + cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return np.concatenate([canvas, strip], axis=0)


# ----- one instance: layers and sem-dist map as panels (OpenCV, fast enough for every click) ---------
# Layer 0 is the panel's visible green and layer 1 its occluded magenta; deeper layers run towards violet.
DEEP_LAYER_COLOR = (90, 70, 255)
LAYER_OUTSIDE_COLOR = (28, 28, 28)


def layer_colors(K: int) -> np.ndarray:
    """(K, 3) uint8 RGB, row k = colour of layer k (0 = visible, k = hidden by k objects)."""
    if K < 2:
        raise ValueError(f"K must be at least 2, got {K}")
    rows = [np.array(VISIBLE_COLOR, np.float32)]
    for k in range(1, K):
        t = 0.0 if K == 2 else (k - 1) / (K - 2)
        rows.append((1 - t) * np.array(OCCLUDED_COLOR, np.float32) + t * np.array(DEEP_LAYER_COLOR, np.float32))
    return np.rint(np.stack(rows)).astype(np.uint8)


def _zoom_crop(box: tuple[int, int, int, int], out_size: int) -> tuple[int, int]:
    """(width, height) a crop is shown at: enlarged so its longer side is ``out_size``, never shrunk."""
    x0, y0, x1, y1 = box
    zoom = max(1.0, out_size / max(x1 - x0, y1 - y0))
    return round((x1 - x0) * zoom), round((y1 - y0) * zoom)


def _zoomed(points: np.ndarray, zoom: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Contour points of a map, moved to the centres of their pixels on its ``zoom`` times enlargement
    (placed at ``origin``): outlines traced on the small map and drawn on the large one cost a fraction."""
    return (np.floor((points + 0.5) * zoom) + np.array(origin)).astype(np.int32)


def _nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (width, height): every displayed pixel is one map pixel."""
    if arr.dtype == bool:
        return cv2.resize(arr.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(arr, size, interpolation=cv2.INTER_NEAREST)


def _wrap(text: str, width: int, scale: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word keeps its line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and cv2.getTextSize(f"{lines[-1]} {word}", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _key_strip(
    width: int, caption: str, keys: list[tuple[str, tuple[int, int, int]]], notes: Sequence[str] = ()
) -> np.ndarray:
    """A dark strip as wide as a panel: the caption, colour keys, then notes, each wrapped to the width."""
    scale, pad = 0.42, 6
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, th), base = cv2.getTextSize("Ag", font, scale, 1)
    line = th + base + 6
    # Rows of (x, text, swatch colour or None, text colour).
    rows: list[list[tuple[int, str, tuple[int, int, int] | None, tuple[int, int, int]]]] = []
    rows += [[(pad, text, None, (255, 255, 255))] for text in _wrap(caption, width - 2 * pad, scale)]
    x = width
    for text, color in keys:
        item = th + 5 + cv2.getTextSize(text, font, scale, 1)[0][0]
        if x + item > width - pad:
            rows.append([])
            x = pad
        rows[-1].append((x, text, color, (230, 230, 230)))
        x += item + 12
    for note in notes:
        rows += [[(pad, text, None, (200, 200, 200))] for text in _wrap(note, width - 2 * pad, scale)]
    strip = np.full((line * len(rows) + 4, width, 3), 28, np.uint8)
    for r, row in enumerate(rows):
        for x, text, swatch, color in row:
            if swatch is not None:
                cv2.rectangle(strip, (x, r * line + 3), (x + th, r * line + 3 + th), tuple(int(c) for c in swatch), -1)
                x += th + 5
            cv2.putText(strip, text, (x, r * line + th + 3), font, scale, color, 1, cv2.LINE_AA)
    return strip


def _layer_crop(
    scene_or_layers: AmodalScene | np.ndarray, instance_id: int | None, K: int
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], str]:
    """The clipped layers (-1 outside) on the instance's box, the box's origin, the frame's (h, w) and a
    label for the caption."""
    if isinstance(scene_or_layers, AmodalScene):
        scene = scene_or_layers
        if instance_id is None:
            raise ValueError("give the instance_id of the scene's instance whose layers to draw")
        idx = scene.index_of(instance_id)
        (x0, y0, _, _), raw = raw_layer_crop(scene, idx)
        if raw.size == 0:
            raise ValueError(f"instance {instance_id} of scene {scene.image_id} has an empty amodal mask")
        return np.minimum(raw, K - 1), (x0, y0), scene.shape, _instance_label(scene, idx)
    if instance_id is not None:
        raise ValueError("instance_id is only meaningful with a scene; a layer map is drawn as given")
    layers = np.asarray(scene_or_layers)
    if layers.ndim != 2 or not np.issubdtype(layers.dtype, np.integer):
        raise ValueError(f"a layer map must be a 2-D integer array, got {layers.shape} {layers.dtype}")
    box = mask_box(layers >= 0)
    if box == EMPTY_BOX:
        raise ValueError("the layer map is empty (no pixel has a layer >= 0)")
    lo, hi = int(layers.min()), int(layers.max())
    if lo < -1 or hi > K - 1:
        raise ValueError(f"layer values must be -1 (outside) or 0..{K - 1}, got {lo}..{hi}")
    x0, y0, x1, y1 = box
    return layers[y0:y1, x0:x1].astype(np.int32), (x0, y0), layers.shape, ""


def layer_map_figure(
    scene_or_layers: AmodalScene | np.ndarray,
    instance_id: int | None = None,
    K: int = DEFAULT_K,
    image: np.ndarray | None = None,
    margin: int = 16,
    out_size: int = 320,
) -> np.ndarray:
    """One instance's layer map in discrete colours: 0 visible (green), 1 hidden by one object (magenta),
    2, ... hidden by more (towards violet; the last level K-1 means "K-1 or more"), with a legend strip.

    ``scene_or_layers`` is a scene (the layers of instance ``instance_id`` follow from the depth order and
    external occlusion, clipped at K-1) or a layer map as given (integer, -1 outside, 0 .. K-1 inside;
    e.g. a prediction's ``Instance.layers`` or ``SemDistMap.layers()``), full frame or any crop of one.
    Outside the mask (-1) shows ``image`` dimmed, or dark grey without one. Cropped and enlarged as
    `instance_panel` (same ``margin`` and ``out_size``: the same crop), so the two line up side by side."""
    crop, (ox, oy), (H, W), label = _layer_crop(scene_or_layers, instance_id, K)
    colors = layer_colors(K)
    ch, cw = crop.shape
    x0, y0, x1, y1 = max(ox - margin, 0), max(oy - margin, 0), min(ox + cw + margin, W), min(oy + ch + margin, H)
    layers = np.full((y1 - y0, x1 - x0), -1, np.int32)
    layers[oy - y0 : oy - y0 + ch, ox - x0 : ox - x0 + cw] = crop
    size = _zoom_crop((x0, y0, x1, y1), out_size)
    zoom = size[0] / (x1 - x0)
    # Composed at the map's own resolution, then enlarged: every displayed pixel is one map pixel.
    if image is not None:
        base = _dim(_check_image(image, (H, W))[y0:y1, x0:x1], 0.5)
    else:
        base = np.full((y1 - y0, x1 - x0, 3), LAYER_OUTSIDE_COLOR, np.float32)
    inside = layers >= 0
    fill = colors[np.maximum(layers, 0)].astype(np.float32)
    # Mostly opaque fills: the layers must read at a glance; a trace of the image keeps the context.
    composed = np.where(inside[..., None], base + (fill - base) * 0.8, base)
    canvas = _nearest(np.clip(np.rint(composed), 0, 255).astype(np.uint8), size)
    for k in range(1, K):  # borders between layers, then the amodal outline
        for points in _contours(layers >= k, (0, 0)):
            _draw_outline(canvas, _zoomed(points, zoom), None, (235, 235, 235), 1)
    for points in _contours(layers >= 0, (0, 0)):
        _draw_outline(canvas, _zoomed(points, zoom), None, (255, 255, 255), 2)
    for k in range(K):  # each layer's number where it has most room (if it has some)
        region = np.pad(layers == k, 1).astype(np.uint8)
        dist = cv2.distanceTransform(region, cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        if dist[y, x] * zoom >= 8:
            (tw, th), _ = cv2.getTextSize(str(k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            _put_text(canvas, str(k), (round((x - 0.5) * zoom) - tw // 2, round((y - 0.5) * zoom) + th // 2), 0.5)
    counts = np.bincount(crop[crop >= 0].ravel(), minlength=K)
    names = ["visible"] + [f"hidden by {k}{'+' if k == K - 1 else ''}" for k in range(1, K)]
    keys = [(f"{k} {name}: {int(n)} px", colors[k]) for k, (name, n) in enumerate(zip(names, counts))]
    caption = f"layer map{' of ' + label if label else ''} (K={K})"
    return np.concatenate([canvas, _key_strip(canvas.shape[1], caption, keys)], axis=0)


@functools.lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    """(256, 3) uint8 RGB table of a matplotlib colormap (shared: read-only)."""
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    lut.setflags(write=False)
    return lut


def semdist_heat_panel(
    sdm: SemDistMap, margin: int = 16, out_size: int = 320, cmap: str = "magma", title: str | None = None
) -> np.ndarray:
    """One instance's sem-dist map as a heat map with its integer level contours (cyan: ``S > 0`` dashed
    = amodal, ``S > k`` dotted, ``S > K-1`` solid = visible) and a colour bar 0 .. K, drawn with OpenCV.

    The interactive counterpart of `semdist_heatmap` (a matplotlib figure with axes, for documents):
    cropped and enlarged as `instance_panel` (same ``margin`` and ``out_size``: the same crop)."""
    crop, box = _crop_values(sdm, margin)
    size = _zoom_crop(box, out_size)
    K = sdm.K
    lut = _lut(cmap)
    index = np.clip(np.rint(crop * (255.0 / K)), 0, 255).astype(np.uint8)
    canvas = _nearest(lut[index], size)
    zoom = size[0] / crop.shape[1]
    for level in range(K):
        solid = level == K - 1
        for points in _contours(crop > level, (0, 0)):
            pattern = None if solid else np.zeros(len(points), bool)
            _draw_outline(
                canvas,
                _zoomed(points, zoom),
                pattern,
                (0, 255, 255),
                2 if solid or level == 0 else 1,
                dash=max(1, round((6 if level == 0 else 3) / zoom)),
            )
    width = canvas.shape[1]
    bar_h, pad = 10, 6
    ramp = lut[np.linspace(0, 255, width - 2 * pad).round().astype(np.intp)]
    bar = np.full((bar_h + 16, width, 3), 28, np.uint8)
    bar[2 : 2 + bar_h, pad : width - pad] = ramp[None]
    for k in range(K + 1):  # tick labels under the bar at S = 0, 1, .., K
        x = pad + round(k / K * (width - 2 * pad - 1))
        text = str(k)
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1)
        cv2.putText(
            bar,
            text,
            (min(max(x - tw // 2, 0), width - tw), bar_h + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (220, 220, 220),
            1,
            cv2.LINE_AA,
        )
    caption = title if title is not None else f"sem-dist map (K={K}): S = level + distance / tau"
    notes = [f"cyan: S > 0 amodal (dashed), S > {K - 1} visible (solid)"]
    return np.concatenate([canvas, _key_strip(width, caption, [], notes=notes), bar], axis=0)


# ----- matplotlib figures ----------------------------------------------------------------------------
def _render(fig: Figure) -> np.ndarray:
    """Draw a figure off-screen and return its pixels (RGB uint8); the figure is then released."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    fig.clear()
    return out


def _image_figure(h: int, w: int, extra_width: float = 0.0, min_width: int = 480, dpi: int = 100) -> Figure:
    scale = max(1.0, min_width / w)
    return Figure(figsize=(w * scale / dpi + extra_width, h * scale / dpi + 0.45), dpi=dpi, layout="constrained")


def level_set_figure(
    image: np.ndarray,
    scene: AmodalScene,
    maps: Sequence[SemDistMap] | None = None,
    K: int = DEFAULT_K,
    tau: float = DEFAULT_TAU,
) -> np.ndarray:
    """The sem-dist level sets of every instance over the dimmed image (as the SLN paper draws them).

    Per instance, in its depth-rank colour: the amodal outline ``S > 0`` (dashed), each occlusion level
    ``S > k`` for ``k = 1 .. K-2`` (dotted) and the visible outline ``S > K-1`` (solid); the visible part
    is tinted and the occluded part hatched, so visible part, hidden part and whole extent read at a
    glance. ``maps`` (source order) default to ``encode_scene(scene, K, tau)``."""
    img = _check_image(image, scene.shape)
    tau_text = f", τ={tau:g}" if maps is None else ""  # given maps do not say which tau made them
    if maps is None:
        maps = encode_scene(scene, K, tau)
    if len(maps) != len(scene.instances):
        raise ValueError(f"got {len(maps)} sem-dist maps for a scene of {len(scene.instances)} instances")
    h, w = scene.shape
    n = len(scene.instances)
    colors = rank_colors(n)
    fig = _image_figure(h, w, extra_width=1.9)
    ax = fig.add_subplot()
    ax.imshow(_level_set_fills(img, scene, maps, colors), interpolation="nearest")
    k_max = max((m.K for m in maps), default=K)
    for i in scene.front_to_back()[::-1]:
        m = maps[i]
        x0, y0, x1, y1 = m.box
        if x1 > x0 and y1 > y0:
            _level_contours(ax, m.values, m.box, m.K, colors[scene.instances[i].rank] / 255.0, 1.3, 2.0)
    _rank_labels(ax, scene, maps, colors)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(f"sem-dist level sets (K={k_max}{tau_text})", fontsize=10)
    _level_set_legend(ax, scene, colors, k_max)
    return _render(fig)


def _level_set_fills(img: np.ndarray, scene: AmodalScene, maps: Sequence[SemDistMap], colors: np.ndarray) -> np.ndarray:
    """The dimmed image with each instance's visible part tinted and its occluded part hatched (uint8 RGB).
    Composed in numpy (one image) rather than one matplotlib artist per region: cheaper."""
    out = _dim(img, 0.6)
    parts = [
        (i, maps[i].box, maps[i].values > maps[i].K - 1, (maps[i].values > 0) & (maps[i].values <= maps[i].K - 1))
        for i in scene.front_to_back()[::-1]
        if maps[i].values.size
    ]
    _fill(
        out,
        parts,
        [colors[scene.instances[p[0]].rank] for p in parts],
        [0.4] * len(parts),
        tint_visible=True,
        hatch_hidden=True,
        period=6,
    )
    return np.clip(out, 0, 255).astype(np.uint8)


def _level_contours(
    ax: Axes, values: np.ndarray, box: Sequence[int], K: int, color: object, width: float, top_width: float
) -> None:
    """The contours ``S > k`` (k = 0 .. K-1) of a crop of sem-dist ``values`` placed at ``box``: the amodal
    one (k = 0) dashed, the visible one (k = K-1) solid and ``top_width`` wide, those between dotted."""
    x0, y0, x1, y1 = box
    # One pixel of zeros around the crop closes every contour; pixel centres sit at integers, so the 0.5
    # contour of a thresholded map runs exactly along pixel edges.
    padded = np.pad(values, 1)
    xs, ys = np.arange(x0 - 1, x1 + 1), np.arange(y0 - 1, y1 + 1)
    for level in range(K):
        if (padded > level).any():
            ax.contour(
                xs,
                ys,
                (padded > level).astype(np.float32),
                levels=[0.5],
                colors=[color],
                linestyles="--" if level == 0 else ("-" if level == K - 1 else ":"),
                linewidths=top_width if level == K - 1 else width,
            )


def _rank_labels(ax: Axes, scene: AmodalScene, maps: Sequence[SemDistMap], colors: np.ndarray) -> None:
    """Each instance's rank on a chip of its colour, where its visible part (else its amodal mask) is widest."""
    for i, inst in enumerate(scene.instances):
        point = _label_point(maps[i].visible()) or _label_point(maps[i].amodal())
        if point is not None:
            ax.text(
                point[0],
                point[1],
                str(inst.rank),
                color="white",
                fontsize=9,
                fontweight="bold",
                ha="center",
                va="center",
                bbox={
                    "boxstyle": "round,pad=0.15",
                    "fc": tuple(colors[inst.rank] / 255.0),
                    "ec": "none",
                    "alpha": 0.85,
                },
            )


def _level_set_legend(ax: Axes, scene: AmodalScene, colors: np.ndarray, k_max: int) -> None:
    """The line styles of the levels, the hatching, then one colour per instance, front to back."""
    handles = [
        Line2D([], [], color="0.2", ls="-", lw=2.0, label=f"visible: S > {k_max - 1}"),
        *[
            Line2D([], [], color="0.2", ls=":", lw=1.3, label=f"layer ≤ {k_max - 1 - k}: S > {k}")
            for k in range(k_max - 2, 0, -1)
        ],
        Line2D([], [], color="0.2", ls="--", lw=1.3, label="amodal: S > 0"),
        Patch(facecolor="white", edgecolor="0.2", hatch="////", label="occluded part"),
    ]
    handles += [
        Patch(
            color=tuple(colors[scene.instances[i].rank] / 255.0),
            label=f"{scene.instances[i].rank}: {_instance_label(scene, i)}",
        )
        for i in scene.front_to_back()
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7.5,
        frameon=False,
        handlelength=2.2,
        borderaxespad=0.0,
    )


def global_layering_figure(
    image: np.ndarray, scene_or_G: AmodalScene | np.ndarray, K: int = DEFAULT_K, note: str = ""
) -> np.ndarray:
    """The global layering map G (how many objects claim each pixel, capped at K) over the dimmed image,
    with a discrete colorbar 0 .. K; ``note`` is a second title line (e.g. where the map comes from)."""
    if isinstance(scene_or_G, AmodalScene):
        G = global_layering_map([inst.amodal for inst in scene_or_G.instances], scene_or_G.shape, K)
    else:
        G = np.asarray(scene_or_G)
        if G.ndim != 2:
            raise ValueError(f"G must be a 2-D map, got shape {G.shape}")
        if G.size and (G.min() < 0 or G.max() > K):
            raise ValueError(f"G must hold values 0..{K}, got {int(G.min())}..{int(G.max())}")
    h, w = G.shape
    img = _check_image(image, (h, w))
    # Level 0 (background) stays the dimmed image; 1 .. K get increasingly hot colours.
    hot = matplotlib.colormaps["inferno"](np.linspace(0.35, 0.95, K))[:, :3]
    palette = np.concatenate([[[0.2, 0.2, 0.2]], hot], axis=0)
    base = _dim(img, 0.6) / 255.0
    weight = np.where(G > 0, 0.75, 0.0)[..., None]
    shown = base + (palette[G.astype(np.intp)] - base) * weight
    fig = _image_figure(h, w, extra_width=1.0)
    ax = fig.add_subplot()
    cmap = ListedColormap(palette)
    norm = BoundaryNorm(np.arange(-0.5, K + 1.5), cmap.N)
    ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, ticks=np.arange(K + 1), fraction=0.05, pad=0.02)
    bar.ax.set_yticklabels([str(k) for k in range(K)] + [f"≥{K}"])
    bar.set_label("objects covering the pixel")
    ax.set_axis_off()
    ax.set_title(f"global layering map G (K={K})" + (f"\n{note}" if note else ""), fontsize=10)
    return _render(fig)


def _crop_values(sdm: SemDistMap, margin: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The map's values on its box grown by ``margin`` (clipped to the image), and that box."""
    x0, y0, x1, y1 = sdm.box
    H, W = sdm.shape
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the sem-dist map is empty (its instance has no pixels)")
    gx0, gy0, gx1, gy1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, W), min(y1 + margin, H)
    crop = np.zeros((gy1 - gy0, gx1 - gx0), np.float32)
    crop[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0] = sdm.values
    return crop, (gx0, gy0, gx1, gy1)


def semdist_heatmap(sdm: SemDistMap, margin: int = 8, title: str | None = None, cmap: str = "magma") -> np.ndarray:
    """One instance's sem-dist map as a heat map (image coordinates on the axes) with its integer level
    contours, cropped to the instance's box plus ``margin``."""
    crop, (x0, y0, x1, y1) = _crop_values(sdm, margin)
    h, w = crop.shape
    scale = max(1.0, 320 / max(h, w))
    fig = Figure(figsize=(w * scale / 100 + 1.4, h * scale / 100 + 0.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    extent = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)
    im = ax.imshow(crop, cmap=cmap, vmin=0, vmax=sdm.K, interpolation="nearest", extent=extent)
    _level_contours(ax, crop, (x0, y0, x1, y1), sdm.K, "cyan", 1.4, 1.4)
    ax.set_xlim(x0 - 0.5, x1 - 0.5)
    ax.set_ylim(y1 - 0.5, y0 - 0.5)
    bar = fig.colorbar(im, ax=ax, ticks=np.arange(sdm.K + 1), fraction=0.06, pad=0.03)
    bar.set_label("S (level + distance / τ)")
    ax.set_title(title if title is not None else f"sem-dist map (K={sdm.K})", fontsize=10)
    ax.tick_params(labelsize=7)
    return _render(fig)


def semdist_surface(
    sdm: SemDistMap,
    margin: int = 4,
    title: str | None = None,
    elev: float = 38.0,
    azim: float = -62.0,
    max_grid: int = 120,
    cmap: str = "magma",
) -> np.ndarray:
    """One instance's sem-dist map as a 3-D surface: each level is a terrace (visible part on top,
    occluded parts lower, the outside at 0), each terrace rising from its edges over ``tau`` pixels.
    Large boxes are subsampled to at most ``max_grid`` points a side."""
    crop, (x0, y0, x1, y1) = _crop_values(sdm, margin)
    step = max(1, int(np.ceil(max(crop.shape) / max_grid)))
    z = crop[::step, ::step]
    xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    fig = Figure(figsize=(5.6, 4.6), dpi=100)
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(
        xs, ys, z, cmap=cmap, vmin=0, vmax=sdm.K, rstride=1, cstride=1, linewidth=0, antialiased=False, shade=True
    )
    ax.set_zlim(0, sdm.K)
    ax.set_zticks(np.arange(sdm.K + 1))
    ax.set_xlim(x0, x1 - 1)
    ax.set_ylim(y1 - 1, y0)  # image rows grow towards the viewer, as in the image
    ax.view_init(elev=elev, azim=azim)
    ax.set_xlabel("x", fontsize=8)
    ax.set_ylabel("y", fontsize=8)
    ax.set_zlabel("S", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title if title is not None else f"sem-dist surface (K={sdm.K})", fontsize=10)
    fig.subplots_adjust(left=0.0, right=0.95, bottom=0.02, top=0.95)
    return _render(fig)


# ----- files -----------------------------------------------------------------------------------------
def save_png(array: np.ndarray, path: str | os.PathLike) -> str:
    """Write an RGB (HxWx3), RGBA (HxWx4) or grey (HxW) uint8 array as PNG, atomically. Returns the path."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"save_png needs an HxW, HxWx3 or HxWx4 uint8 array, got {arr.shape} {arr.dtype}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path} as PNG")
    return str(atomic_write_bytes(path, data.tobytes()))
