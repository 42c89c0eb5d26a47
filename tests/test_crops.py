"""Masks kept as crops of their boxes: an instance's memory follows its box, not the image; every crop-aware
path gives what the full-frame rule gives; a large photo is read and predicted in bounded memory."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch

from semlayer import formats
from semlayer.boxes import mask_box
from semlayer.order import constraints_from_overlap, overlapping_pairs
from semlayer.predict import DEFAULT_CHECKPOINT, Predictor, _argmax_channels, _network_size, _normalised_small
from semlayer.scene import AmodalScene, AnnotationSet, Instance
from semlayer.synth import generate_scene

H, W = 4000, 6000


def small_instances(count: int = 30, side: int = 40) -> list[Instance]:
    """``count`` squares of ``side`` (a corner cut off) on a diagonal of an H x W frame, each overlapping the
    next."""
    out = []
    for k in range(count):
        frame = np.zeros((H, W), bool)
        x, y = 100 + k * (side // 2), 100 + k * (side // 3)
        frame[y : y + side, x : x + side] = True
        frame[y, x] = False
        out.append(Instance(k + 1, frame, rank=k + 1, name="square"))
    return out


def test_an_instances_memory_follows_its_box():
    scene = AmodalScene({"id": 1, "height": H, "width": W}, small_instances())
    boxes = [inst.box for inst in scene.instances]
    assert all((x1 - x0, y1 - y0) == (40, 40) for x0, y0, x1, y1 in boxes)
    # 30 bool crops of 40 x 40 (no external masks yet): 48,000 bytes, where 30 frames would be 720 MB.
    assert sum(inst.nbytes for inst in scene.instances) == 30 * 40 * 40
    hidden = scene.instances[3].amodal & ~scene.instances[2].amodal
    scene.instances[3].external = hidden
    assert scene.instances[3].external_crop is not None and scene.instances[3].external_crop.shape == (40, 40)
    assert sum(inst.nbytes for inst in scene.instances) == 31 * 40 * 40
    assert np.array_equal(scene.instances[3].external, hidden)


def test_crops_read_back_as_the_frames_they_were_cut_from():
    rng = np.random.default_rng(0)
    frame = rng.random((30, 50)) > 0.7
    frame[:4] = frame[:, :3] = False
    inst = Instance(1, frame)
    assert inst.box == mask_box(frame) and np.array_equal(inst.amodal, frame)
    x0, y0, x1, y1 = inst.box
    again = Instance.from_crop(1, frame[y0:y1, x0:x1], inst.box, frame.shape)
    assert again.box == inst.box and np.array_equal(again.amodal, frame)
    copy = inst.amodal
    copy[:] = False  # the caller's frame: the instance keeps its mask
    assert np.array_equal(inst.amodal, frame)
    empty = Instance(2, np.zeros((30, 50), bool))
    assert empty.box == (0, 0, 0, 0) and empty.area == 0 and not empty.amodal.any()


def _frame_visible(scene: AmodalScene) -> list[np.ndarray]:
    """The painter's rule over whole frames, as the scene computed it before masks were crops."""
    out: list[np.ndarray] = [np.zeros(0)] * len(scene)
    covered = np.zeros(scene.shape, bool)
    for i in scene.front_to_back():
        inst = scene.instances[i]
        vis = inst.amodal & ~covered
        if inst.external is not None:
            vis &= ~inst.external
        out[i] = vis
        covered |= inst.amodal
    return out


@pytest.mark.parametrize("seed", range(4))
def test_visible_masks_order_and_occlusion_from_crops_equal_the_frame_rule(seed):
    image, gt = generate_scene(np.random.default_rng(seed), size=96, max_instances=6)
    scene = gt if isinstance(gt, AmodalScene) else gt.scene
    frames = _frame_visible(scene)
    assert all(np.array_equal(a, b) for a, b in zip(scene.visible_masks(), frames))
    for inst, vis in zip(scene.instances, frames):
        assert np.array_equal(scene.visible(inst.id), vis)
        assert np.array_equal(scene.occluded(inst.id), inst.amodal & ~vis)
    ranks = scene.ranks()
    amodal = [inst.amodal for inst in scene.instances]
    crops, boxes = [inst.amodal_crop for inst in scene.instances], [inst.box for inst in scene.instances]
    assert overlapping_pairs(ranks, crops, boxes) == overlapping_pairs(ranks, amodal)
    vis_crops = scene.visible_crops()
    assert constraints_from_overlap(vis_crops, crops, None, boxes, boxes) == constraints_from_overlap(frames, amodal)
    again = scene.copy()
    again.set_visible_crops(vis_crops, boxes)
    assert all(np.array_equal(a, b) for a, b in zip(again.visible_masks(), frames))


def big_file(tmp_path) -> tuple[str, AmodalScene]:
    scene = AmodalScene({"id": 1, "file_name": "big.jpg", "height": H, "width": W}, small_instances())
    scene.set_visible([m & ~np.roll(m, 5, axis=1) if k % 3 == 0 else m for k, m in enumerate(scene.visible_masks())])
    path = tmp_path / "big.json"
    formats.save(AnnotationSet([scene], format="cocoa"), path, format="cocoa")
    return str(path), scene


def test_reading_a_large_image_holds_crops_and_a_few_frames(tmp_path):
    path, written = big_file(tmp_path)
    tracemalloc.start()
    (scene,) = formats.load(path).scenes
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 30 regions with a visible mask each were 60 frames of 24 MB while the scene was built; now each is
    # decoded, cropped and dropped, and the scene's running unions are a few frames at most.
    assert peak < 5 * H * W, peak
    assert sum(inst.nbytes for inst in scene.instances) <= 2 * 30 * 40 * 40
    assert all(np.array_equal(a, b) for a, b in zip(scene.visible_masks(), written.visible_masks()))
    assert formats.to_cocoa(AnnotationSet([scene], format="cocoa")) == formats.to_cocoa(
        AnnotationSet([written], format="cocoa")
    )


def _torchvision_outputs(pred: Predictor, rgb: np.ndarray) -> dict:
    """The network's outputs by the detection transform's own normalise and resize (the reference)."""
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    with torch.inference_mode():
        out = dict(pred.model([tensor])[0])
    out["global_layers"] = _argmax_channels(out["global_layers"].numpy()).astype(np.uint8)
    return out


def test_a_large_photos_network_input_is_made_small_with_the_transforms_numbers():
    image, _ = generate_scene(np.random.default_rng(3), size=128, max_instances=4)
    big = cv2.resize(image, (1200, 800), interpolation=cv2.INTER_LINEAR)  # shrunk to 256 x 384 by the model
    pred = Predictor(DEFAULT_CHECKPOINT)
    transform = pred.model.transform
    assert _network_size(transform, 800, 1200) == (256, 384)
    with torch.inference_mode():
        whole = transform.resize(transform.normalize(torch.from_numpy(big).permute(2, 0, 1).float().div_(255.0)))[0]
    small = _normalised_small(transform, big, torch.device("cpu"))
    # Channel by channel, bilinear resizing rounds differently from three channels at once by at most one
    # float32 step; normalising is bit for bit the transform's.
    assert small.shape == whole.shape and torch.allclose(small, whole, rtol=0, atol=4 * 1.2e-7 * 3)
    ours, reference = pred._network(big), _torchvision_outputs(pred, big)
    assert sorted(ours) == sorted(reference) and torch.equal(ours["labels"], reference["labels"])
    for key in ("boxes", "scores", "masks", "layer_logits", "semdist"):
        assert torch.allclose(ours[key], reference[key], rtol=1e-5, atol=1e-4), key
    assert np.mean(ours["global_layers"] != reference["global_layers"]) < 1e-4


def test_predicting_a_large_photo_keeps_crops(tmp_path):
    image, _ = generate_scene(np.random.default_rng(3), size=128, max_instances=4)
    big = cv2.resize(image, (3000, 2000), interpolation=cv2.INTER_LINEAR)
    pred = Predictor(DEFAULT_CHECKPOINT)
    pred.set_image(big)
    pred.scene(0.05)  # decodes the detections into the predictor's cache (crops of their boxes)
    tracemalloc.start()
    scene = pred.scene(0.05)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(scene) >= 3
    for inst in scene.instances:
        external = 0 if inst.external_crop is None else inst.external_crop.size
        assert inst.amodal_crop.shape == (inst.box[3] - inst.box[1], inst.box[2] - inst.box[0])
        assert inst.nbytes == inst.amodal_crop.size + external
    # Building the scene from the cache holds one running union of the frame (bool) and, per box pixel, the
    # crops (masks, layers, the float sem-dist values): below what a frame per instance alone would take.
    boxes = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in (inst.box for inst in scene.instances))
    assert peak < 2000 * 3000 + 8 * boxes < len(scene) * 2000 * 3000, (peak, boxes, len(scene))


@pytest.mark.parametrize("writer", [formats.to_cocoa, formats.to_coco, formats.to_kins, formats.to_results])
def test_writers_give_the_same_document_for_a_scene_built_from_crops_or_frames(writer):
    _, gt = generate_scene(np.random.default_rng(7), size=96, max_instances=6)
    frames = gt if isinstance(gt, AmodalScene) else gt.scene
    frames.instances[-1].external = frames.instances[-1].amodal & np.tri(96, 96, dtype=bool)
    fields = ("rank", "name", "category", "is_stuff", "score", "polygons", "extra", "cluster")
    built = [
        Instance.from_crop(
            i.id, i.amodal_crop, i.box, frames.shape, external=i.external_crop, **{f: getattr(i, f) for f in fields}
        )
        for i in frames.instances
    ]
    crops = AmodalScene(dict(frames.image), built, dict(frames.annotation))
    assert writer(AnnotationSet([crops])) == writer(AnnotationSet([frames]))
    ref = [inst.amodal & ~cover for inst, cover in zip(frames.instances, _front_unions(frames))]
    assert all(
        np.array_equal(v, r & ~(i.external if i.external is not None else False))
        for v, r, i in zip(crops.visible_masks(), ref, frames.instances)
    )


def _front_unions(scene: AmodalScene) -> list[np.ndarray]:
    """Each instance's union of the amodal masks in front of it, over whole frames."""
    return [
        np.any([o.amodal for o in scene.instances if o.rank < inst.rank] or [np.zeros(scene.shape, bool)], axis=0)
        for inst in scene.instances
    ]
