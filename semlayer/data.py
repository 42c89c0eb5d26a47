"""Torch datasets for training: a scene + image -> image tensor and detection targets.

Targets follow torchvision's detection convention, extended with the SLN's dense targets. For an image with N
(non-empty) instances, all in the frame of the augmented image:

* ``boxes`` (N, 4) float32 amodal boxes, xyxy pixel edges; ``visible_boxes`` the same for the visible masks
  (zeros for a fully hidden instance);
* ``labels`` (N,) int64 in 1..C (all 1 when class-agnostic);
* ``masks`` (N, H, W) uint8 amodal masks; ``visible_masks`` (N, H, W) uint8;
* ``layers`` (N, H, W) int8 clipped instance layering maps, -1 outside the amodal mask;
* ``semdist`` (N, H, W) float32 sem-dist maps; ``global_layers`` (H, W) uint8 global layering map;
* ``ranks`` (N,) int64 depth ranks (1 = front), ``image_id`` int64 scalar.

Geometric augmentation (resize with scale jitter, horizontal flip) is applied to the scene's amodal and
external-occlusion masks *before* the targets are computed, so the sem-dist targets are exact for the
augmented image (distances in the new pixel grid) rather than interpolated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from . import formats
from .errors import FormatError
from .boxes import mask_box
from .images import read_image
from .scene import AmodalScene, AnnotationSet, Instance, renumber_ranks
from .semdist import DEFAULT_K, DEFAULT_TAU, encode_scene, global_layering_map, instance_layer_maps
from .synth import CATEGORIES, generate_scene, image_rng

Target = dict[str, torch.Tensor]

# The one class of a class-agnostic model (as COCO-style files write class-agnostic data).
AGNOSTIC_CATEGORY = {"id": 1, "name": "object"}


class SceneSource(Protocol):
    """Anything that yields (RGB uint8 image, scene) pairs by index.

    ``categories`` are the model's classes in label order: label k (1..C) is ``categories[k - 1]``, a
    ``{"id": dataset category id, "name": ...}`` record; ``class_names`` are their names."""

    categories: list[dict[str, Any]]
    class_names: list[str]

    def __len__(self) -> int: ...

    def get(self, index: int) -> tuple[np.ndarray, AmodalScene]: ...

    def label_of(self, instance: Instance, index: int, position: int) -> int: ...


class AnnotationSource:
    """Scenes of an `AnnotationSet` with their images read from ``image_dir`` (by ``file_name``).

    ``class_agnostic`` maps every instance to label 1 (category ``{"id": 1, "name": "object"}``);
    otherwise categories map to labels 1..C in the order of their ids, and ``categories`` keeps each
    label's original category id and name (checkpoints store it, so predictions get the ids back).
    """

    def __init__(
        self,
        annotations: AnnotationSet,
        image_dir: str | Path,
        class_agnostic: bool = True,
        source_name: str = "annotations",
    ):
        self.annotations = annotations
        self.image_dir = Path(image_dir)
        self.source_name = source_name
        self.class_agnostic = class_agnostic
        if class_agnostic:
            self.categories = [dict(AGNOSTIC_CATEGORY)]
            self._label: dict[int, int] = {}
        else:
            if not annotations.categories:
                raise FormatError(
                    source_name,
                    "categories",
                    "a non-empty category list for a per-class model "
                    "(set data.class_agnostic: true for class-agnostic data such as COCOA)",
                )
            cats = sorted(annotations.categories, key=lambda c: int(c["id"]))
            self._label = {int(c["id"]): i + 1 for i, c in enumerate(cats)}
            self.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats]
        self.class_names = [c["name"] for c in self.categories]

    def __len__(self) -> int:
        return len(self.annotations.scenes)

    def get(self, index: int) -> tuple[np.ndarray, AmodalScene]:
        scene = self.annotations.scenes[index]
        if not scene.file_name:
            raise FormatError(self.source_name, f"images[id={scene.image_id}].file_name", "an image file name")
        image = read_image(self.image_dir / scene.file_name, scene.shape)
        return image, scene

    def label_of(self, instance: Instance, index: int, position: int) -> int:
        if self.class_agnostic:
            return 1
        if instance.category is None or int(instance.category) not in self._label:
            scene = self.annotations.scenes[index]
            raise FormatError(
                self.source_name,
                f"annotations[image_id={scene.image_id}, id={instance.id}].category_id",
                f"one of the category ids {sorted(self._label)}, got {instance.category!r}",
            )
        return self._label[int(instance.category)]


class SyntheticSource:
    """Synthetic scenes from `semlayer.synth`, generated on demand: scene ``i`` is image ``i`` of the
    generator's dataset for ``seed`` (the same as `semlayer.synth.generate` writes), and no image is kept
    in memory."""

    def __init__(
        self,
        num_images: int,
        seed: int = 0,
        size: int = 256,
        max_instances: int = 6,
        min_instances: int = 1,
        class_agnostic: bool = True,
    ):
        self.class_agnostic = bool(class_agnostic)
        # Synthetic category ids are 1..C, so a category id is its label.
        self.categories = (
            [dict(AGNOSTIC_CATEGORY)]
            if self.class_agnostic
            else [{"id": int(c["id"]), "name": str(c["name"])} for c in CATEGORIES]
        )
        self.class_names = [c["name"] for c in self.categories]
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.size = int(size)
        self.max_instances = int(max_instances)
        self.min_instances = int(min_instances)

    def __len__(self) -> int:
        return self.num_images

    def get(self, index: int) -> tuple[np.ndarray, AmodalScene]:
        return generate_scene(
            image_rng(self.seed, index),
            size=self.size,
            max_instances=self.max_instances,
            min_instances=self.min_instances,
            image_id=index + 1,
        )

    def label_of(self, instance: Instance, index: int, position: int) -> int:
        return 1 if self.class_agnostic else int(instance.category)


@dataclass(frozen=True)
class Augment:
    """Geometric augmentation and resizing, as torchvision's detection transform resizes: the shorter side
    goes to ``min_size`` (times a factor drawn from ``scale_range`` when training), the longer side at most
    ``max_size``; ``hflip`` is the flip probability."""

    min_size: int = 256
    max_size: int = 512
    scale_range: tuple[float, float] = (1.0, 1.0)
    hflip: float = 0.0

    def scale_for(self, height: int, width: int, jitter: float = 1.0) -> float:
        short, long = min(height, width), max(height, width)
        scale = self.min_size / short
        if long * scale > self.max_size:
            scale = self.max_size / long
        return scale * jitter


def transform_scene(image: np.ndarray, scene: AmodalScene, scale: float, flip: bool) -> tuple[np.ndarray, AmodalScene]:
    """Resize by ``scale`` (then flip horizontally) the image and the scene's amodal and external masks.

    Instances whose amodal mask vanishes are dropped; ranks are renumbered densely in the same order."""
    h, w = image.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    resized = (nh, nw) != (h, w)

    def geo(mask: np.ndarray) -> np.ndarray:
        out = mask
        if resized:
            out = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        if flip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    if resized:
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if flip:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image)

    kept: list[Instance] = []
    for inst in scene.instances:
        amodal = geo(inst.amodal)
        if not amodal.any():
            continue
        kept.append(
            Instance(
                id=inst.id,
                amodal=amodal,
                rank=inst.rank,
                name=inst.name,
                category=inst.category,
                is_stuff=inst.is_stuff,
                external=None if inst.external is None else geo(inst.external),
            )
        )
    for inst, rank in zip(kept, renumber_ranks([k.rank for k in kept])):
        inst.rank = rank
    record = dict(scene.image, height=nh, width=nw)
    return image, AmodalScene(image=record, instances=kept, annotation=dict(scene.annotation))


def scene_targets(scene: AmodalScene, labels: Sequence[int], K: int = DEFAULT_K, tau: float = DEFAULT_TAU) -> Target:
    """Detection and SLN targets (see the module docstring) for a scene whose instances are all non-empty."""
    h, w = scene.shape
    n = len(scene.instances)
    amodal = np.stack([inst.amodal for inst in scene.instances]) if n else np.zeros((0, h, w), bool)
    visible = np.stack(scene.visible_masks()) if n else np.zeros((0, h, w), bool)
    semdist = np.stack([m.full() for m in encode_scene(scene, K, tau)]) if n else np.zeros((0, h, w), np.float32)

    def xyxy(masks: np.ndarray) -> torch.Tensor:
        arr = np.array([mask_box(m) for m in masks], np.float32).reshape(-1, 4)
        return torch.from_numpy(arr)

    return {
        "boxes": xyxy(amodal),
        "visible_boxes": xyxy(visible),
        "labels": torch.as_tensor(list(labels), dtype=torch.int64).reshape(-1),
        "masks": torch.from_numpy(amodal.astype(np.uint8)),
        "visible_masks": torch.from_numpy(visible.astype(np.uint8)),
        "layers": torch.from_numpy(instance_layer_maps(scene, K)),
        "semdist": torch.from_numpy(semdist),
        "global_layers": torch.from_numpy(global_layering_map(list(amodal), (h, w), K)),
        "ranks": torch.as_tensor(scene.ranks(), dtype=torch.int64).reshape(-1),
        "image_id": torch.tensor(scene.image_id, dtype=torch.int64),
    }


class AmodalDataset(Dataset):
    """Image tensors (3, H, W float in [0, 1]) and SLN targets over a `SceneSource`.

    Random augmentation is a pure function of (``seed``, epoch, index) — call `set_epoch` each epoch — so a
    resumed run sees exactly the samples an uninterrupted run would, whatever the worker processes do.
    """

    def __init__(
        self,
        source: SceneSource,
        K: int = DEFAULT_K,
        tau: float = DEFAULT_TAU,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        self.source = source
        self.K = int(K)
        self.tau = float(tau)
        self.augment = augment or Augment()
        self.seed = int(seed)
        self.epoch = 0

    @property
    def class_names(self) -> list[str]:
        return list(self.source.class_names)

    @property
    def categories(self) -> list[dict[str, Any]]:
        """The model's classes in label order, as ``{"id", "name"}`` records of the dataset's categories."""
        return [dict(c) for c in self.source.categories]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, scene = self.source.get(index)
        labels_by_id = {inst.id: self.source.label_of(inst, index, pos) for pos, inst in enumerate(scene.instances)}
        rng = np.random.default_rng([self.seed, self.epoch, index])
        lo, hi = self.augment.scale_range
        jitter = float(rng.uniform(lo, hi)) if hi > lo else lo
        flip = bool(rng.random() < self.augment.hflip)
        scale = self.augment.scale_for(*image.shape[:2], jitter)
        image, scene = transform_scene(image, scene, scale, flip)
        target = scene_targets(scene, [labels_by_id[inst.id] for inst in scene.instances], self.K, self.tau)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        return tensor, target


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images and targets as lists (sizes differ); the model batches and pads them itself."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def targets_to(targets: Sequence[Target], device: torch.device | str) -> list[Target]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def build_dataset(
    config: dict[str, Any],
    split: str,
    train: bool,
    annotations: str | None = None,
    images: str | None = None,
    loader: Callable[[str], AnnotationSet] | None = None,
) -> AmodalDataset:
    """The training (``split='train'``) or validation (``'val'``) dataset of a validated configuration.

    ``annotations``/``images`` (command-line overrides) take precedence over the config's files; with neither,
    the config's synthetic set is generated. Images are resized as the model's ``min_size``/``max_size``
    say; ``train`` turns the augmentation on."""
    data_cfg, model_cfg = config["data"], config["model"]
    files = data_cfg.get(split) or {}
    ann_path = annotations or files.get("annotations")
    img_dir = images or files.get("images")
    aug_cfg = data_cfg["augment"]
    augment = Augment(
        min_size=int(model_cfg["min_size"]),
        max_size=int(model_cfg["max_size"]),
        scale_range=tuple(aug_cfg["scale_range"]) if train else (1.0, 1.0),
        hflip=float(aug_cfg["hflip"]) if train else 0.0,
    )
    if ann_path:
        if not img_dir:
            raise FormatError(str(ann_path), "", "an image folder to go with it (--images / data.*.images)")
        if not Path(img_dir).is_dir():
            raise FormatError(str(img_dir), "", "an existing image folder")
        if loader is None:
            # Compact: a whole real training set as RLE (decoded per sample), not as full-frame masks.
            def loader(path: str) -> AnnotationSet:  # a progress bar from the first (torchrun) process only
                return formats.load(path, compact=True, progress=os.environ.get("RANK", "0") == "0")

        annotation_set = loader(str(ann_path))
        source: SceneSource = AnnotationSource(
            annotation_set, img_dir, bool(data_cfg["class_agnostic"]), source_name=str(ann_path)
        )
    else:
        syn = data_cfg["synthetic" if split == "train" else "val_synthetic"]
        source = SyntheticSource(
            syn["num_images"],
            syn["seed"],
            syn["size"],
            syn["max_instances"],
            syn["min_instances"],
            bool(data_cfg["class_agnostic"]),
        )
    return AmodalDataset(source, int(model_cfg["K"]), float(model_cfg["tau"]), augment, seed=int(data_cfg["seed"]))


__all__ = [
    "AmodalDataset",
    "AnnotationSource",
    "Augment",
    "SceneSource",
    "SyntheticSource",
    "build_dataset",
    "collate",
    "scene_targets",
    "targets_to",
    "transform_scene",
]
