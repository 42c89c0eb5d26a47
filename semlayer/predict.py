"""Inference. `Predictor` runs the network once per image and answers every later query (a score threshold,
one instance's maps, the global layering map) from its cache, as Segment Anything's predictor caches the image
embedding, so a click in the app never runs the network again. `predict_files` runs a checkpoint over image
files and folders into one annotation file. How a scene is decoded from the network's outputs (instance ids,
pasting, duplicates, depth order, visible masks, the maps, categories) is in docs/design.md, section 5."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, cast

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes
from tqdm import tqdm

from . import distributed, formats
from .boxes import EMPTY_BOX, mask_box
from .config import defaults
from .errors import ConfigError, FormatError, SemlayerError
from .formats.compact import CompactScenes, compact_record
from .images import ImageReadError, read_image, to_rgb
from .model.sln import RoIMapTransform
from .model.checkpoint import categories_from_names, check_categories, load_for_inference
from .order import Constraint, box_pairs, ranks_from_constraints
from .resources import ASSETS
from .scene import AmodalScene, AnnotationSet, Instance
from .semdist import SemDistMap, order_constraints

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = ASSETS / "checkpoints" / "sln_tiny_synth.pt"
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MASK_THRESHOLD = 0.5
OUTPUT_FORMATS = ("cocoa", "coco", "results")
# Pixels of pasted detection crops whose per-pixel steps run together: bounds the float buffers a large
# photo's detections need, while a small image's run in one group.
DECODE_PIXELS = 1 << 22
MIN_EXTERNAL_THICKNESS = 3  # px: external-occlusion pieces no square of this side fits in are noise


@dataclass
class _Detection:
    """One detection's pasted maps, cropped to the bounding box of its amodal mask."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends) of the crops in the image
    amodal: np.ndarray  # bool crop
    evidence: np.ndarray  # bool crop: visible evidence (layer 0, or the mask for baselines)
    layers: np.ndarray | None = None  # int8 crop, -1 outside the amodal mask (SLN only)
    semdist: np.ndarray | None = None  # float32 crop, 0 outside the amodal mask (SLN only)
    layer_map: SemDistMap | None = None  # the layers as a SemDistMap that decodes to them, for order votes
    area: int = 0
    evidence_area: int = 0

    @property
    def empty(self) -> bool:
        return self.area == 0


@dataclass
class InstanceMaps:
    """One detection's full-frame maps, before the painter's rule (`Predictor.instance_maps`)."""

    id: int
    score: float
    category: int  # the dataset's category id (the checkpoint's categories), not the network's label
    name: str
    box: tuple[float, float, float, float]  # detector box, x0, y0, x1, y1 in image pixels
    amodal: np.ndarray  # bool HxW
    visible_evidence: np.ndarray  # bool HxW: predicted visible region (layer 0; the mask for baselines)
    layers: np.ndarray | None  # int8 HxW, -1 outside the amodal mask; None for baselines
    semdist: np.ndarray | None  # float32 HxW in each pixel's level, 0 outside; None: baselines, semdist=False


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} was asked for, but PyTorch sees no CUDA device here")
    return dev


def _check_score_thr(score_thr: float) -> float:
    if isinstance(score_thr, bool) or not isinstance(score_thr, (int, float)) or not 0.0 <= score_thr <= 1.0:
        raise ConfigError(f"score threshold: expected a number in [0, 1], got {score_thr!r}")
    return float(score_thr)


def _paste_geometry(maps: torch.Tensor, boxes: torch.Tensor) -> tuple[np.ndarray, list[list[int]]]:
    """What torchvision's ``paste_masks_in_image`` does before pasting, for all RoIs at once: RoI maps
    (R, C, M, M) with a 1-cell zero border, as float32 numpy channels-last (R, M+2, M+2, C) for OpenCV, and
    the boxes grown to match, as integers."""
    padded, scale = expand_masks(maps, padding=1)
    return (
        np.ascontiguousarray(padded.permute(0, 2, 3, 1).numpy()),
        expand_boxes(boxes, scale).to(dtype=torch.int64).tolist(),
    )


def _paste_in_box(
    padded: np.ndarray, box: Sequence[int], height: int, width: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One RoI's bordered maps (M+2, M+2, C) pasted (bilinear) into its grown integer ``box`` as
    ``paste_masks_in_image`` pastes a mask, and cut to the image: ``(crop (h, w, C), (x0, y0, x1, y1))``,
    channels last as OpenCV gives them. OpenCV's bilinear resize uses F.interpolate's half-pixel rule
    (``align_corners=False``, clamped at the edges), so the crop equals torchvision's paste up to float
    rounding, in one call for all channels."""
    bx0, by0, bx1, by1 = box
    w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
    x0, x1 = max(bx0, 0), min(bx1 + 1, width)
    y0, y1 = max(by0, 0), min(by1 + 1, height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0, padded.shape[-1]), np.float32), (0, 0, 0, 0)
    resized = cv2.resize(padded, (w, h), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:  # OpenCV drops a single channel's axis
        resized = resized[:, :, None]
    return resized[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0], (x0, y0, x1, y1)


def _argmax_channels(maps: np.ndarray) -> np.ndarray:
    """``maps.argmax(axis=0)`` as int8 (first maximum wins), by one comparison per channel: each pass reads
    one contiguous channel, where numpy's arg-max across the leading axis first copies the array to put
    that axis last."""
    best = maps[0]
    index = np.zeros(best.shape, np.int8)
    for k in range(1, maps.shape[0]):
        higher = maps[k] > best
        index[higher] = k
        best = np.maximum(best, maps[k])
    return index


def _network_scale(transform: RoIMapTransform, height: int, width: int) -> float:
    """The scale factor torchvision's ``_resize_image_and_masks`` resizes an image by at inference."""
    return min(transform.min_size[-1] / min(height, width), transform.max_size / max(height, width))


def _network_size(transform: RoIMapTransform, height: int, width: int) -> tuple[int, int] | None:
    """The ``(h, w)`` the detection transform resizes an image to at inference (``F.interpolate``'s
    rounding) when that shrinks it, None otherwise."""
    scale = _network_scale(transform, height, width)
    if scale >= 1.0:
        return None
    return math.floor(float(height) * scale), math.floor(float(width) * scale)


def _normalised_small(transform: RoIMapTransform, rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """The (3, h, w) tensor the transform's ``normalize`` then ``resize`` make of a uint8 RGB image, built
    one channel at a time (each channel's arithmetic is the transform's, so the values are too)."""
    height, width = rgb.shape[:2]
    scale = _network_scale(transform, height, width)
    mean = torch.as_tensor(transform.image_mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(transform.image_std, dtype=torch.float32, device=device)
    channels = []
    with torch.inference_mode():
        for c in range(3):
            plane = torch.from_numpy(np.ascontiguousarray(rgb[:, :, c])).to(device).float().div_(255.0)
            plane.sub_(mean[c]).div_(std[c])  # in place: the same arithmetic as ``(image - mean) / std``
            channels.append(
                F.interpolate(
                    plane[None, None],
                    scale_factor=scale,
                    mode="bilinear",
                    recompute_scale_factor=True,
                    align_corners=False,
                )[0, 0]
            )
    return torch.stack(channels)


def _upsampled_argmax(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``_argmax_channels`` of (C, h, w) logits resized (bilinear, ``align_corners=False``) to ``size``,
    one channel at a time: equal to resizing them all at once, without C float frames of the image."""
    best = index = None
    for k in range(logits.shape[0]):
        channel = F.interpolate(logits[None, k : k + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
        if best is None or index is None:
            best, index = channel, torch.zeros(size, dtype=torch.int8, device=channel.device)
            continue
        index[channel > best] = k
        torch.maximum(best, channel, out=best)
    return cast(torch.Tensor, index).cpu().numpy()


def _overlap(a: np.ndarray, a_box: Sequence[int], b: np.ndarray, b_box: Sequence[int]) -> int:
    """Number of pixels set in both crops."""
    x0, y0 = max(a_box[0], b_box[0]), max(a_box[1], b_box[1])
    x1, y1 = min(a_box[2], b_box[2]), min(a_box[3], b_box[3])
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(
        np.count_nonzero(
            a[y0 - a_box[1] : y1 - a_box[1], x0 - a_box[0] : x1 - a_box[0]]
            & b[y0 - b_box[1] : y1 - b_box[1], x0 - b_box[0] : x1 - b_box[0]]
        )
    )


def _full(crop: np.ndarray, box: Sequence[int], shape: tuple[int, int], fill: Any = 0) -> np.ndarray:
    """A crop placed in a full frame of ``fill``: only for `Predictor.instance_maps`, whose maps are full
    frames by contract; scenes keep crops."""
    frame = np.full(shape, fill, crop.dtype)
    x0, y0, x1, y1 = box
    frame[y0:y1, x0:x1] = crop
    return frame


def _drop_specks(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without its specks: 8-connected pieces smaller than ``min_pixels`` or so thin that no
    ``MIN_EXTERNAL_THICKNESS`` square fits inside (e.g. a rim along an occluder's edge)."""
    out = np.zeros(mask.shape, bool)
    if np.count_nonzero(mask) < min_pixels:
        return out
    x0, y0, x1, y1 = mask_box(mask)
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    # Zeros beyond the crop's edge: a thin piece along the edge erodes away too.
    kernel = np.ones((MIN_EXTERNAL_THICKNESS, MIN_EXTERNAL_THICKNESS), np.uint8)
    core = cv2.erode(crop, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    keep = np.zeros(count, bool)
    keep[np.unique(labels[core])] = True
    keep &= stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # background
    out[y0:y1, x0:x1] = keep[labels]
    return out


class Predictor:
    """A checkpoint loaded once; `set_image` runs the network once, every other query reads the cache.

    ``checkpoint`` is a semlayer checkpoint (None: `DEFAULT_CHECKPOINT`, the shipped demo model).
    Alternatively pass an already built ``model`` with its ``config`` (a configuration with a ``model``
    section) and either its ``categories`` (``{"id", "name"}`` records in label order: label k is
    ``categories[k - 1]``) or its ``class_names`` (ids 1..C). Predicted instances carry the category ids
    and names, never the network's labels. ``mask_nms_thr``: IoU of visible evidence above which a
    lower-scored detection is a duplicate. ``min_external_fraction``: external-occlusion pieces smaller
    than this share of an instance's amodal area are dropped (as are pieces thinner than
    ``MIN_EXTERNAL_THICKNESS``). ``semdist=False`` skips the SLN's sem-dist layers (``Instance.semdist`` then
    holds the layers alone, at each level's top, ``has_distances`` False; masks, layers and order are the
    same), for callers that do not use the maps; it is a flag on the model's head, so predictors sharing one
    ``model`` share it.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        *,
        model: nn.Module | None = None,
        config: dict[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        categories: Sequence[dict[str, Any]] | None = None,
        mask_nms_thr: float = 0.5,
        min_external_fraction: float = 0.02,
        semdist: bool = True,
    ):
        self.device = _device(device)
        what, noun = "class_names", "names"
        if model is not None:
            if checkpoint is not None:
                raise ConfigError("give a checkpoint or a model, not both")
            if config is None:
                raise ConfigError("a model needs its config (at least its 'model' section)")
            if class_names is not None and categories is not None:
                raise ConfigError("give class_names or categories, not both")
            model_cfg = {**defaults()["model"], **dict(config.get("model", {}))}
            num = int(model_cfg["num_classes"])
            if categories is not None:
                what, noun = "categories", "categories"
                cats = check_categories(list(categories), "Predictor")
            elif class_names is not None:
                cats = categories_from_names(class_names)
            else:
                cats = categories_from_names(["object"] if num == 1 else [str(i) for i in range(1, num + 1)])
            self.model = model.to(self.device).eval()
            self.config = config
        else:
            path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
            if checkpoint is None and not path.is_file():
                raise FormatError(
                    str(path),
                    "",
                    "the shipped demo checkpoint (not found; pass a checkpoint "
                    "file, e.g. --checkpoint runs/tiny/best.pt)",
                )
            if categories is not None or class_names is not None:
                raise ConfigError("categories and class_names go with a model; a checkpoint has its own")
            self.model, self.config, cats = load_for_inference(path, self.device)
            model_cfg = {**defaults()["model"], **self.config["model"]}
        if len(cats) != int(model_cfg["num_classes"]):
            raise ConfigError(
                f"{what}: expected {model_cfg['num_classes']} {noun} (model.num_classes), got {len(cats)}"
            )
        if not 0.0 <= mask_nms_thr <= 1.0:
            raise ConfigError(f"mask_nms_thr: expected a number in [0, 1], got {mask_nms_thr!r}")
        if not 0.0 <= min_external_fraction <= 1.0:
            raise ConfigError(f"min_external_fraction: expected a number in [0, 1], got {min_external_fraction!r}")
        self.categories: list[dict[str, Any]] = [dict(c) for c in cats]
        self.class_names: list[str] = [c["name"] for c in cats]
        self.kind: str = str(model_cfg["kind"])
        self.K: int = int(model_cfg["K"])
        self._min_distance = np.float32(1.0 / float(model_cfg["tau"]))  # a level's smallest distance part
        self.mask_nms_thr = float(mask_nms_thr)
        self.min_external_fraction = float(min_external_fraction)
        head = getattr(getattr(self.model, "roi_heads", None), "mask_predictor", None)
        if hasattr(head, "predict_semdist"):
            head.predict_semdist = bool(semdist)
        # The cache of the current image (see set_image).
        self._raw: dict[str, torch.Tensor] | None = None
        self._shape = (0, 0)
        self._paste: tuple[np.ndarray, list[list[int]]] | None = None
        self._dets: list[_Detection | None] = []
        self._nms_done = 0  # detections [0, _nms_done) have been through NMS
        self._keep: list[int] = []
        self._global: np.ndarray | None = None

    @property
    def has_layers(self) -> bool:
        """Whether the model predicts layers and sem-dist maps (the SLN) or only masks (a baseline)."""
        return self.kind == "sln"

    @property
    def num_detections(self) -> int:
        """Detections the network returned for the current image (any score, before NMS)."""
        self._require_image()
        return int(self._raw["scores"].numel())

    # ----- the network ------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Run the network on an image (HxWx3 uint8 RGB; grey, RGBA and float images are converted)
        and cache its raw outputs; the previous image's cache is dropped."""
        rgb = to_rgb(image)
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ImageReadError("<array>", f"an image with pixels, got shape {rgb.shape}")
        out = self._network(rgb)
        order = torch.argsort(out["scores"], descending=True, stable=True)
        raw = {k: v[order].cpu() for k, v in out.items() if k != "global_layers"}
        self._global = None
        if "global_layers" in out:
            # Kept as the arg-max only: the (K + 1) float frames would be 16 bytes a pixel of the image.
            self._global = cast(np.ndarray, out["global_layers"])
        self._raw = raw
        self._shape = (int(rgb.shape[0]), int(rgb.shape[1]))
        self._paste = None
        self._dets = [None] * int(raw["scores"].numel())
        self._nms_done = 0
        self._keep = []

    def _network(self, rgb: np.ndarray) -> dict[str, Any]:
        """The network's outputs for one image in the image's frame, ``global_layers`` as its uint8 arg-max.

        An image the network's transform would shrink is normalised and shrunk here, one colour channel at
        a time with the transform's own operations (so the numbers are the same), so that it never exists
        as a float tensor at full size; the boxes and the global logits are then brought back to the
        image's frame as the transform's ``postprocess`` does, again a channel at a time."""
        height, width = rgb.shape[:2]
        transform = getattr(self.model, "transform", None)
        small = _network_size(transform, height, width) if isinstance(transform, RoIMapTransform) else None
        if small is None or not isinstance(transform, RoIMapTransform):
            tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float().div_(255.0)
            with torch.inference_mode():
                out = dict(self.model([tensor])[0])
        else:
            tensor = _normalised_small(transform, rgb, self.device)
            transform.presized = True
            try:
                with torch.inference_mode():
                    out = dict(self.model([tensor])[0])
            finally:
                transform.presized = False
        if small is not None:
            out["boxes"] = resize_boxes(out["boxes"], list(small), [height, width])
        if "global_layers" in out:  # in the image's frame already unless the image was shrunk here
            glm = out["global_layers"]
            index = _argmax_channels(glm.cpu().numpy()) if small is None else _upsampled_argmax(glm, (height, width))
            out["global_layers"] = index.astype(np.uint8)
        return out

    def _require_image(self) -> None:
        if self._raw is None:
            raise RuntimeError("no image: call set_image(image) first")

    # ----- cached per-detection maps ----------------------------------------------------------------
    def _detection(self, d: int) -> _Detection:
        if self._dets[d] is None:
            self._decode([d])
        return self._dets[d]

    def _decode(self, ds: Sequence[int]) -> None:
        """Decode detections ``ds`` into the cache. Each is pasted over its box and cut to the bounding
        box of its amodal mask (smaller crops make every later pairwise test cheaper) on its own, but the
        per-pixel steps then run together over the pixels of a group of them (`DECODE_PIXELS`), laid end to
        end in one buffer."""
        raw, (H, W) = self._raw, self._shape
        if self._paste is None:
            channels = [raw["masks"]]
            if self.has_layers:
                # Probabilities, not logits, are pasted: bilinear blending (also with the zero border) scales
                # a probability vector, which keeps its arg-max; blending logits with zeros would not.
                channels += [raw["layer_logits"].softmax(dim=1)[:, 1:]]
                if "semdist" in raw:
                    channels.append(raw["semdist"])
            self._paste = _paste_geometry(torch.cat(channels, dim=1), raw["boxes"])
        padded, boxes = self._paste
        found: list[tuple[int, np.ndarray, tuple[int, int, int, int]]] = []
        pending = 0
        for d in ds:
            crop, box = _paste_in_box(padded[d], boxes[d], H, W)
            amodal = crop[:, :, 0] > MASK_THRESHOLD
            cx0, cy0, cx1, cy1 = tight = mask_box(amodal)
            if tight == EMPTY_BOX:
                self._dets[d] = self._empty_detection()
                continue
            # A copy, so the whole pasted box is not kept alive by a view of its tight part.
            found.append((d, crop[cy0:cy1, cx0:cx1].copy(), (box[0] + cx0, box[1] + cy0, box[0] + cx1, box[1] + cy1)))
            pending += (cy1 - cy0) * (cx1 - cx0)
            if pending >= DECODE_PIXELS:  # a large photo's detections: per-pixel steps in bounded groups
                self._decode_found(found)
                found, pending = [], 0
        if found:
            self._decode_found(found)

    def _decode_found(self, found: list[tuple[int, np.ndarray, tuple[int, int, int, int]]]) -> None:
        """The per-pixel steps of `_decode` for pasted tight crops ``(detection, crop (h, w, C), box)``."""
        raw, (H, W), K = self._raw, self._shape, self.K
        padded = self._paste[0]
        sizes = [crop.shape[0] * crop.shape[1] for _, crop, _ in found]
        ends = np.cumsum(sizes)
        # Channels first, so that each channel's pixels are contiguous for the steps below.
        pixels = np.empty((padded.shape[-1], int(ends[-1])), np.float32)
        for (_, crop, _), end, size in zip(found, ends, sizes):
            pixels[:, end - size : end].reshape(-1, *crop.shape[:2])[...] = crop.transpose(2, 0, 1)

        amodal = pixels[0] > MASK_THRESHOLD
        per_pixel = {"amodal": amodal, "evidence": amodal}
        if self.has_layers:
            layers = _argmax_channels(pixels[1 : K + 1])
            layers[~amodal] = -1
            top = np.where(amodal, K - layers, 0).astype(np.float32)  # S at each level's top, 0 outside
            per_pixel.update(layers=layers, top=top, front=np.where(amodal, layers, np.int8(127)), evidence=layers == 0)
            # The regression clamped into each pixel's predicted level, (K - 1 - layer) + [1 / tau, 1] (the
            # encoder's range of the distance part), so the map decodes to exactly these layers: level sets
            # drawn from it and the layer map never disagree; only the distance part comes from the regression.
            if "semdist" in raw:
                clamped = np.clip(pixels[K + 1], top - 1 + self._min_distance, top)
                per_pixel["semdist"] = np.where(amodal, clamped, np.float32(0))
        for (d, crop, box), end, size in zip(found, ends, sizes):
            maps = {name: values[end - size : end].reshape(crop.shape[:2]) for name, values in per_pixel.items()}
            det = _Detection(
                box,
                maps["amodal"],
                maps["evidence"],
                area=int(np.count_nonzero(maps["amodal"])),
                evidence_area=int(np.count_nonzero(maps["evidence"])),
            )
            if self.has_layers:
                det.layers, det.semdist = maps["layers"], maps.get("semdist")
                det.layer_map = SemDistMap.from_layers(
                    maps["layers"], box, (H, W), K, values=maps["top"], front_key=maps["front"]
                )
            self._dets[d] = det

    def _empty_detection(self) -> _Detection:
        empty = np.zeros((0, 0), bool)
        det = _Detection((0, 0, 0, 0), empty, empty)
        if self.has_layers:
            det.layers = np.zeros((0, 0), np.int8)
            det.semdist = np.zeros((0, 0), np.float32) if "semdist" in self._raw else None
        return det

    def _category(self, label: int) -> tuple[int, str]:
        """(dataset category id, name) of a network label 1..C; an unknown label stands for itself."""
        if 1 <= label <= len(self.categories):
            cat = self.categories[label - 1]
            return cat["id"], cat["name"]
        return label, str(label)

    def _kept(self, count: int) -> list[int]:
        """Non-empty, non-duplicate detections among the ``count`` best-scored ones (score order)."""
        self._decode([d for d in range(self._nms_done, count) if self._dets[d] is None])
        while self._nms_done < count:
            d = self._nms_done
            det = self._detection(d)
            if not det.empty and not any(self._duplicate(det, self._detection(k)) for k in self._keep):
                self._keep.append(d)
            self._nms_done += 1
        return [d for d in self._keep if d < count]

    def _duplicate(self, det: _Detection, kept: _Detection) -> bool:
        if self.mask_nms_thr >= 1.0:  # no IoU exceeds 1: suppression is off
            return False
        inter = _overlap(det.evidence, det.box, kept.evidence, kept.box)
        union = det.evidence_area + kept.evidence_area - inter
        return union > 0 and inter / union > self.mask_nms_thr

    # ----- queries ----------------------------------------------------------------------------------
    def scene(self, score_thr: float = 0.5, image_record: dict[str, Any] | None = None) -> AmodalScene:
        """The predicted scene of the current image from the cache (the network does not run again).

        ``image_record`` supplies the image's ``id`` (default 1), ``file_name`` and other fields."""
        self._require_image()
        score_thr = _check_score_thr(score_thr)
        H, W = self._shape
        record: dict[str, Any] = {"id": 1, "file_name": ""}
        record.update(image_record or {})
        for key, size in (("height", H), ("width", W)):
            if key in record and int(record[key]) != size:
                raise ValueError(f"image_record {key} is {record[key]}, but the image has {key} {size}")
            record[key] = size
        scores = self._raw["scores"]
        count = int((scores >= score_thr).sum())
        kept = self._kept(count)
        dets = [self._detection(d) for d in kept]
        weights = [float(scores[d]) for d in kept]
        ranks = ranks_from_constraints(len(kept), self._order_constraints(dets, weights)).ranks

        instances = []
        for det, d, rank in zip(dets, kept, ranks):
            category, name = self._category(int(self._raw["labels"][d]))
            instances.append(
                Instance.from_crop(
                    d + 1, det.amodal, det.box, (H, W), rank=rank, name=name, category=category, score=float(scores[d])
                )
            )
        scene = AmodalScene(record, instances, annotation={"author": "semlayer.predict"})
        if self.has_layers:
            self._follow_order(scene, dets)
        return scene

    def _follow_order(self, scene: AmodalScene, dets: list[_Detection]) -> None:
        """The painter's rule under the decided order, in each detection's box: external occlusion (hidden
        evidence no instance in front explains, specks dropped) and the maps attached as crops whose layers
        say what the scene says: layer 0 exactly on the visible mask, at least layer 1 on the hidden part
        (each changed pixel keeps the regression's distance part, S moved by the layers it moved)."""
        K = self.K
        covered = np.zeros(scene.shape, bool)
        for i in scene.front_to_back():
            inst, det = scene.instances[i], dets[i]
            x0, y0, x1, y1 = det.box
            in_front = covered[y0:y1, x0:x1]
            external = _drop_specks(det.amodal & ~det.evidence & ~in_front, self.min_external_fraction * det.area)
            inst.set_external_crop(external)  # the detection's box is the amodal mask's tight box
            hidden = in_front | external
            head = cast(np.ndarray, det.layers)  # an SLN's detections have layers
            layers = np.where(hidden, np.maximum(head, 1), 0).astype(np.int8)
            layers[~det.amodal] = -1
            values = None
            if det.semdist is not None:
                values = np.where(det.amodal, det.semdist + (head - layers), np.float32(0)).astype(np.float32)
            inst.semdist = SemDistMap.from_layers(layers, det.box, scene.shape, K, values=values)
            covered[y0:y1, x0:x1] |= det.amodal

    def _order_constraints(self, dets: list[_Detection], weights: list[float]) -> list[Constraint]:
        if self.has_layers:
            return order_constraints([det.layer_map for det in dets], weights)
        out = []
        for i, j in box_pairs([det.box for det in dets]):
            inter = _overlap(dets[i].amodal, dets[i].box, dets[j].amodal, dets[j].box)
            if inter == 0:
                continue
            share_i, share_j = inter / dets[i].area, inter / dets[j].area
            w = abs(share_i - share_j) * weights[i] * weights[j]
            if share_i < share_j:
                out.append(Constraint(i, j, w))
            elif share_j < share_i:
                out.append(Constraint(j, i, w))
        return out

    def global_layers(self) -> np.ndarray:
        """(H, W) uint8 global layering map: the most probable number of amodal masks covering each pixel
        (clipped at K). Only the SLN predicts it."""
        self._require_image()
        if self._global is None:
            raise SemlayerError(f"a {self.kind} model predicts no global layering map (only the SLN does)")
        return self._global.copy()

    def instance_maps(self, instance_id: int) -> InstanceMaps:
        """The full-frame maps of one detection (``Instance.id`` in `scene`), at any score."""
        self._require_image()
        n = self.num_detections
        if isinstance(instance_id, bool) or not isinstance(instance_id, (int, np.integer)) or not 1 <= instance_id <= n:
            raise ValueError(f"instance id: expected an integer in 1..{n}, got {instance_id!r}")
        d = int(instance_id) - 1
        det, shape = self._detection(d), self._shape
        category, name = self._category(int(self._raw["labels"][d]))
        x0, y0, x1, y1 = (float(v) for v in self._raw["boxes"][d].tolist())
        return InstanceMaps(
            id=d + 1,
            score=float(self._raw["scores"][d]),
            category=category,
            name=name,
            box=(x0, y0, x1, y1),
            amodal=_full(det.amodal, det.box, shape),
            visible_evidence=_full(det.evidence, det.box, shape),
            layers=None if det.layers is None else _full(det.layers, det.box, shape, np.int8(-1)),
            semdist=None if det.semdist is None else _full(det.semdist, det.box, shape),
        )


# ----- files -----------------------------------------------------------------------------------------
@dataclass
class PredictReport:
    """What `predict_files` did: images written, instances written, inputs skipped (path, reason)."""

    out: Path
    num_images: int = 0
    num_instances: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: bool = True  # False on the processes of a torchrun other than rank 0 (their counts are 0)


def list_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Image files named by ``inputs`` as ``(path, file_name)``, and inputs that yield none.

    A folder gives its image files (by extension, recursively, hidden files and folders left out, sorted),
    each named by its path relative to the folder; any other input is taken as an image file named by its
    base name (reading it tells whether it is one). A file named twice is listed once."""
    found: list[tuple[Path, str]] = []
    empty: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            files = sorted(
                (p.relative_to(root).as_posix(), p)
                for p in root.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            if not files:
                empty.append((str(root), f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder"))
            pairs = [(p, name) for name, p in files]
        else:
            pairs = [(root, root.name)]
        for path, name in pairs:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append((path, name))
    return found, empty


class _ImageFiles(Dataset):
    """One process's share of the image files (every ``world``-th from ``rank`` on), read and converted to RGB
    in DataLoader workers: items are ``(file index, image or None, why not)``."""

    def __init__(self, files: Sequence[tuple[Path, str]], rank: int = 0, world: int = 1):
        self.files = files
        self.rank, self.world = rank, world
        self.indices = range(rank, len(files), world)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[int, np.ndarray | None, str]:
        index = self.indices[item]
        path = self.files[index][0]
        try:
            return index, read_image(path), ""
        except ImageReadError as exc:
            log.info("skipped %s", exc)
            return index, None, str(exc).removeprefix(f"{path}: ")


def _as_list(batch: list) -> list:
    return batch


def predict_files(
    checkpoint: str | os.PathLike | None,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    fmt: str = "cocoa",
    score_thr: float = 0.5,
    device: str | torch.device = "cpu",
    progress: bool = True,
    workers: int = 0,
    batch_size: int = 4,
) -> PredictReport:
    """Predict every image of ``inputs`` (files or folders) and write one annotation file ``out`` as
    ``fmt`` (``cocoa`` native with a ``score`` per region, ``coco``-style amodal, or a ``results`` list).

    Images get ids 1, 2, ... in input order; visible masks are `Predictor.scene`'s (the painter's rule under
    the predicted order, and the predicted external occlusion). An image that cannot be read is reported in
    ``PredictReport.skipped`` and left out; the others are still written (nothing is written, and
    `SemlayerError` raised, when no image can be read).

    ``workers`` DataLoader processes read and decode the images, ``batch_size`` at a time, while the network
    runs (0: read in this process). Each scene is kept as RLE (`formats.CompactScenes`) and the file is
    written scene by scene, so memory follows the largest image, not the number of images. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) every process predicts every WORLD_SIZE-th image (gloo on the CPU,
    NCCL with ``device="cuda"``, each process on the GPU of its local rank) and process 0 writes the one
    file, the same bytes as one process writes: the network sees one image at a time, so an image's
    prediction does not depend on which images share its process or batch."""
    score_thr = _check_file_options(fmt, score_thr, workers, batch_size)
    files, empty = list_images(inputs)
    if not files:
        reasons = "; ".join(f"{p}: {why}" for p, why in empty) or "no inputs given"
        raise ConfigError(f"no image files to predict: {reasons}")
    info = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: this process takes its share
        info = distributed.init_distributed("cuda" if _device(device).type == "cuda" else "cpu")
        device = info.device
    rank, world = (info.rank, info.world_size) if info else (0, 1)
    try:
        predictor = Predictor(checkpoint, device=device, semdist=False)  # files hold no sem-dist maps
        share = _ImageFiles(files, rank=rank, world=world)
        records, failed = _predict_share(predictor, share, score_thr, batch_size, workers, progress)
        parts = distributed.gather_objects((records, failed))
        ok = distributed.broadcast_object(parts is None or any(r for r, _ in parts))
        if parts is not None:
            records = sorted(r for rs, _ in parts for r in rs)
            failed = sorted(f for _, fs in parts for f in fs)
        report = PredictReport(Path(out), skipped=list(empty) + [(str(files[i][0]), why) for i, why in failed])
        if not ok:
            raise SemlayerError("no image could be read: " + "; ".join(f"{p}: {why}" for p, why in report.skipped))
        if rank == 0:
            scenes = CompactScenes.from_records((r for _, r, _ in records), range(1, len(records) + 1))
            report.num_images, report.num_instances = len(records), sum(n for _, _, n in records)
            categories = [dict(c) for c in predictor.categories]  # the training data's ids, not the labels 1..C
            formats.save(AnnotationSet(scenes, categories, format=fmt), out, format=fmt)
        distributed.barrier()  # the file is complete when any process returns
        report.written = rank == 0
        return report
    finally:
        if info is not None:
            distributed.cleanup()


def _check_file_options(fmt: str, score_thr: float, workers: int, batch_size: int) -> float:
    """The score threshold as a float, once every option of `predict_files` is known to be good."""
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    score_thr = _check_score_thr(score_thr)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers: expected an integer >= 0, got {workers!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size: expected an integer >= 1, got {batch_size!r}")
    return score_thr


def _predict_share(
    predictor: Predictor, share: _ImageFiles, score_thr: float, batch_size: int, workers: int, progress: bool
) -> tuple[list[tuple[int, bytes, int]], list[tuple[int, str]]]:
    """This process's images predicted: ``(file index, scene as RLE, instances)`` of each readable one, and
    ``(file index, why not)`` of each unreadable one."""
    loader = DataLoader(share, batch_size=batch_size, num_workers=workers, collate_fn=_as_list)
    records: list[tuple[int, bytes, int]] = []
    failed: list[tuple[int, str]] = []
    total = len(share.files)
    with tqdm(
        total=total, desc="predict", unit="img", disable=not progress or share.rank != 0, dynamic_ncols=True
    ) as bar:
        for batch in loader:
            for index, image, why in batch:
                if image is None:
                    failed.append((index, why))
                else:
                    predictor.set_image(image)
                    # Image ids are final once every process's readable images are known (`predict_files`).
                    scene = predictor.scene(score_thr, {"id": index + 1, "file_name": share.files[index][1]})
                    records.append((index, compact_record(scene), len(scene)))
                bar.update(min(share.world, bar.total - bar.n))  # the others go at the same pace
    return records, failed
