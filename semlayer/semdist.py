"""Layering maps and semantics-aware distance (sem-dist) maps: encode and decode.

The encoding (normative for this project, see docs/semdist.md). K = number of depth levels, tau = distance
truncation in pixels. For instance i and pixel p of its amodal mask:

* layer ``l_i(p)`` = number of instances in front of i covering p, plus 1 where p is externally occluded;
  clipped ``lam_i(p) = min(l_i(p), K - 1)``; 0 on the visible region;
* ``delta_i(p) = min(1, d(p) / tau)``, d = Euclidean distance to the nearest pixel outside p's level
  region (pixels beyond the image border are outside);
* ``S_i(p) = (K - 1 - lam_i(p)) + delta_i(p)``, and 0 outside the amodal mask.

Decoding: amodal = S > 0, visible = S > K - 1, layer = K - ceil(S) clipped to 0..K-1. The global layering map is
``G(p) = min(K, number of amodal masks covering p)``.

Everything works inside each instance's bounding box; `SemDistMap` keeps the crop and its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from .boxes import crop_over
from .order import Constraint, Ordering, box_pairs, ranks_from_constraints
from .scene import AmodalScene, Instance

DEFAULT_K = 3
DEFAULT_TAU = 6.0


@dataclass
class SemDistMap:
    """One instance's sem-dist map, stored as a crop: ``values`` covers rows ``y0:y1``, cols ``x0:x1``
    of an image of size ``shape``; everything outside the crop is 0 (outside the amodal mask)."""

    values: np.ndarray
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)
    shape: tuple[int, int]
    K: int = DEFAULT_K
    # False for a map made from layers alone (`from_layers` without values): S sits at each level's top.
    has_distances: bool = True
    # Decoded once: an order vote over N maps reads every map's layers N - 1 times.
    _layer_crop: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _front_key: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_layers(
        cls,
        layers: np.ndarray,
        box: tuple[int, int, int, int],
        shape: tuple[int, int],
        K: int = DEFAULT_K,
        values: np.ndarray | None = None,
        front_key: np.ndarray | None = None,
    ) -> SemDistMap:
        """The map whose layers are ``layers`` (an int8 crop, -1 outside) at the level centres' tops
        (S = K - layer): enough for masks and order votes when no distances are known. The map keeps
        ``layers`` as its decoded layers (no copy), so the caller must not modify them afterwards; so too
        ``values`` and `front_key`, which a caller that has already computed them (the predictor, for many
        maps at once) may pass."""
        has_distances = values is not None
        if values is None:
            values = np.where(layers >= 0, K - layers, 0).astype(np.float32)
        m = cls(values, box, shape, K, has_distances)
        m._layer_crop = np.asarray(layers, np.int8)
        m._front_key = front_key
        return m

    def layer_crop(self) -> np.ndarray:
        """Per-pixel layer over the crop (int8, -1 outside the amodal mask); do not modify it."""
        if self._layer_crop is None:
            self._layer_crop = decode_layers(self.values, self.K)
        return self._layer_crop

    def front_key(self) -> np.ndarray:
        """The layer crop with "outside" as a layer behind every other (127), for `pairwise_votes`."""
        if self._front_key is None:
            layers = self.layer_crop()
            self._front_key = np.where(layers < 0, np.int8(127), layers)
        return self._front_key

    @property
    def nbytes(self) -> int:
        """Bytes held by the crop's arrays (values and decoded layers)."""
        held = [self.values, self._layer_crop, self._front_key]
        return sum(a.nbytes for a in held if a is not None)

    def full(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.values
        return out

    def _paste(self, crop: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full(self.shape, fill, crop.dtype)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = crop
        return out

    def amodal(self) -> np.ndarray:
        return self._paste(self.values > 0, False)

    def visible(self) -> np.ndarray:
        return self._paste(self.values > self.K - 1, False)

    def occluded(self) -> np.ndarray:
        return self._paste((self.values > 0) & (self.values <= self.K - 1), False)

    def layers(self) -> np.ndarray:
        """Per-pixel layer (0 = visible .. K-1), -1 outside the amodal mask; int8 full frame."""
        return self._paste(self.layer_crop(), np.int8(-1))


def raw_layer_crops(scene: AmodalScene) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Unclipped layer ``l_i`` per instance (source order) as (box, int32 crop, -1 outside the mask)."""
    count = np.zeros(scene.shape, np.int32)
    out: list = [None] * len(scene.instances)
    for i in scene.front_to_back():
        inst = scene.instances[i]
        box = inst.box
        x0, y0, x1, y1 = box
        amodal = inst.amodal_crop
        layer = count[y0:y1, x0:x1].copy()
        if inst.external_crop is not None:
            layer += inst.external_crop
        layer[~amodal] = -1
        out[i] = (box, layer)
        count[y0:y1, x0:x1] += amodal
    return out


def raw_layer_crop(scene: AmodalScene, index: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """``raw_layer_crops(scene)[index]`` for one instance, counted in its box only: what one instance's
    figures need costs its box, not the image."""
    inst = scene.instances[index]
    box = inst.box
    layer = np.zeros(inst.amodal_crop.shape, np.int32)
    for other in scene.instances:
        if other.rank < inst.rank:
            layer += crop_over(other.amodal_crop, other.box, box)
    if inst.external_crop is not None:
        layer += inst.external_crop
    layer[~inst.amodal_crop] = -1
    return box, layer


def level_sdm(layer: np.ndarray, K: int = DEFAULT_K, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Sem-dist values for one crop of clipped-or-raw layers (-1 outside). Returns float32."""
    lam = np.where(layer < 0, -1, np.minimum(layer, K - 1))
    out = np.zeros(lam.shape, np.float32)
    for k in np.unique(lam):
        if k < 0:
            continue
        region = lam == k
        # Pad with zeros so the image border (and the crop border) count as outside the region.
        padded = np.pad(region.astype(np.uint8), 1)
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        out[region] = (K - 1 - k) + np.minimum(1.0, dist[region] / tau)
    return out


def encode_scene(scene: AmodalScene, K: int = DEFAULT_K, tau: float = DEFAULT_TAU) -> list[SemDistMap]:
    """Sem-dist map of every instance of the scene, in source order."""
    _check_params(K, tau)
    maps = []
    for box, layer in raw_layer_crops(scene):
        maps.append(SemDistMap(level_sdm(layer, K, tau), box, scene.shape, K))
    return maps


def instance_layer_maps(scene: AmodalScene, K: int = DEFAULT_K) -> np.ndarray:
    """(N, H, W) int8 clipped layers per instance, -1 outside its amodal mask."""
    out = np.full((len(scene.instances), *scene.shape), -1, np.int8)
    for i, (box, layer) in enumerate(raw_layer_crops(scene)):
        x0, y0, x1, y1 = box
        out[i, y0:y1, x0:x1] = np.where(layer < 0, -1, np.minimum(layer, K - 1))
    return out


def global_layering_map(masks: Sequence[np.ndarray], shape: tuple[int, int], K: int = DEFAULT_K) -> np.ndarray:
    """G(p) = min(K, number of masks covering p), uint8."""
    count = np.zeros(shape, np.int32)
    for m in masks:
        count += m
    return np.minimum(count, K).astype(np.uint8)


def layering_agreement(G: np.ndarray, masks: Sequence[np.ndarray], K: int = DEFAULT_K) -> float | None:
    """Share of the pixels that ``G`` or some mask covers where ``G`` equals the masks' own global layering
    map: how far a predicted G (a separate head of the network) agrees with its predicted instances. None
    when neither covers any pixel."""
    own = global_layering_map(masks, G.shape, K)
    covered = (G > 0) | (own > 0)
    if not covered.any():
        return None
    return float(np.count_nonzero((G == own) & covered)) / float(np.count_nonzero(covered))


def decode_layers(values: np.ndarray, K: int = DEFAULT_K) -> np.ndarray:
    """Layer per pixel from sem-dist values: K - ceil(S), clipped to 0..K-1 where S > 0 (so a value above K,
    which `amodal` counts as inside, is the visible layer 0); -1 where S <= 0. int8."""
    layers = np.clip(K - np.ceil(values), 0, K - 1).astype(np.int8)
    layers[values <= 0] = -1
    return layers


def pairwise_votes(a: SemDistMap, b: SemDistMap) -> tuple[int, int]:
    """On the overlap of two amodal masks: (#pixels where a is on a lower layer, #where b is)."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 >= x1 or y0 >= y1:
        return 0, 0
    sa = (slice(y0 - ay0, y1 - ay0), slice(x0 - ax0, x1 - ax0))
    sb = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
    # a is in front of b at p iff both cover p and a's layer is lower: front_key(a) < layers(b) says
    # exactly that, since a's outside is 127 there and b's outside is -1.
    return (
        int(np.count_nonzero(a.front_key()[sa] < b.layer_crop()[sb])),
        int(np.count_nonzero(b.front_key()[sb] < a.layer_crop()[sa])),
    )


def order_constraints(maps: Sequence[SemDistMap], weights: Sequence[float] | None = None) -> list[Constraint]:
    """Pairwise order voted on overlapping layers: the majority of lower-layer pixels is in front.
    ``weights`` (e.g. detection scores) scale each pair's evidence."""
    out = []
    for i, j in box_pairs([m.box for m in maps]):
        vi, vj = pairwise_votes(maps[i], maps[j])
        if vi == vj:
            continue
        w = abs(vi - vj) * (1.0 if weights is None else float(weights[i]) * float(weights[j]))
        out.append(Constraint(i, j, w) if vi > vj else Constraint(j, i, w))
    return out


def decode_ranks(maps: Sequence[SemDistMap], tie_break: Sequence[float] | None = None) -> Ordering:
    """Ranks (1 = front) from sem-dist maps alone."""
    if tie_break is None:
        # With no overlap evidence, the instance with the more visible pixels goes first.
        tie_break = [-float((m.values > m.K - 1).sum()) for m in maps]
    return ranks_from_constraints(len(maps), order_constraints(maps), tie_break)


def decode_scene(maps: Sequence[SemDistMap], image: dict, template: Sequence[Instance] | None = None) -> AmodalScene:
    """An `AmodalScene` from sem-dist maps: amodal masks, ranks and the visible masks they encode.

    ``template`` (optional) supplies ids, names and categories per map."""
    ordering = decode_ranks(maps)
    instances = []
    for i, m in enumerate(maps):
        src = template[i] if template is not None else None
        instances.append(
            Instance(
                id=src.id if src else i + 1,
                amodal=m.amodal(),
                rank=ordering.ranks[i],
                name=src.name if src else "",
                category=src.category if src else None,
                is_stuff=src.is_stuff if src else False,
            )
        )
    scene = AmodalScene(image=dict(image), instances=instances)
    scene.set_visible([m.visible() for m in maps])
    return scene


def _check_params(K: int, tau: float) -> None:
    if int(K) != K or K < 2:
        raise ValueError(
            f"K must be an integer >= 2 (one level for the visible part, at least one for occluded parts), got {K}"
        )
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
