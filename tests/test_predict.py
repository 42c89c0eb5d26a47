"""semlayer.predict: the cached Predictor and predict_files.

Exact decoding rules are tested on a fake network whose RoI maps are drawn by hand; the real tiny SLN
(configs/tiny_synth.yaml, untrained, saved as a checkpoint) checks the invariants and the file round trip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from semlayer import formats, predict
from semlayer.config import load_config
from semlayer.model.checkpoint import save_checkpoint
from semlayer.errors import ConfigError, FormatError, SemlayerError
from semlayer.model import build_model, paste_roi_maps
from semlayer.predict import Predictor, _argmax_channels, _drop_specks, _paste_geometry, _paste_in_box, predict_files
from semlayer.synth import CATEGORIES, generate_scene

K, M = 3, 28
# A dataset's categories in label order, with the gaps of COCO ids: label 1 -> id 3, 2 -> 17, 3 -> 90.
CATEGORY_MAP = [{"id": 3, "name": "car"}, {"id": 17, "name": "cat"}, {"id": 90, "name": "toothbrush"}]


# ----- a network with hand-drawn outputs ---------------------------------------------------------------
def cells(layer: int = 0) -> np.ndarray:
    """A 28x28 RoI grid of layers (-1 = outside), all ``layer``."""
    return np.full((M, M), layer, np.int64)


class FakeNet(nn.Module):
    """Returns fixed detections ``(box, score, label, layer cells)`` and counts its forward passes."""

    def __init__(self, dets: list[tuple[tuple[float, ...], float, int, np.ndarray]], kind: str = "sln"):
        super().__init__()
        self.dets, self.kind, self.calls = dets, kind, 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        H, W = images[0].shape[-2:]
        grids = torch.from_numpy(np.stack([d[3] for d in self.dets])) if self.dets else torch.zeros((0, M, M))
        one_hot = torch.nn.functional.one_hot(grids.long() + 1, K + 1).permute(0, 3, 1, 2).float()
        logits = one_hot * 20.0 - 10.0
        out = {
            "boxes": torch.tensor([d[0] for d in self.dets], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([d[1] for d in self.dets], dtype=torch.float32),
            "labels": torch.tensor([d[2] for d in self.dets], dtype=torch.int64),
        }
        if self.kind == "sln":
            out["layer_logits"] = logits
            out["masks"] = 1.0 - logits.softmax(dim=1)[:, :1]
            out["semdist"] = torch.where(grids >= 0, K - grids - 0.5, 0.0).float()[:, None]
            out["global_layers"] = torch.zeros((K + 1, H, W))
            out["global_layers"][1, : H // 2] = 1.0  # the top half "covered once"
        else:
            out["masks"] = (grids >= 0).float()[:, None]
        return [out]


def fake_predictor(dets, kind="sln", class_names=("object",), categories=None, **kwargs) -> Predictor:
    num = len(class_names if categories is None else categories)
    config = {"model": {"kind": kind, "K": K, "num_classes": num}}
    if categories is not None:
        return Predictor(model=FakeNet(dets, kind), config=config, categories=categories, **kwargs)
    return Predictor(model=FakeNet(dets, kind), config=config, class_names=list(class_names), **kwargs)


def reference(dets, shape) -> tuple[np.ndarray, np.ndarray]:
    """Amodal masks and layers (-1 outside) of the fake detections, pasted full frame by `paste_roi_maps`."""
    net = FakeNet(dets)
    out = net([torch.zeros((3, *shape))])[0]
    amodal = paste_roi_maps(out["masks"], out["boxes"], *shape)[:, 0].numpy() > 0.5
    probs = paste_roi_maps(out["layer_logits"].softmax(dim=1)[:, 1:], out["boxes"], *shape).numpy()
    return amodal, np.where(amodal, probs.argmax(axis=1), -1)


def image(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


# ----- exact decoding rules on the fake network ---------------------------------------------------------
def occlusion_dets() -> list:
    """B (best score) is occluded by A where they overlap and, in its corner, by nothing detected;
    C stands alone with a 4x4-cell layer-1 blob."""
    b_cells = cells(0)
    b_cells[:14, :14] = 1  # under A (image x, y 20..32) and a pixel beyond its edge
    b_cells[20:, 20:] = 1  # corner (image x, y 40..48): something undetected is in front
    c_cells = cells(0)
    c_cells[12:16, 12:16] = 1
    return [
        ((20.0, 20.0, 48.0, 48.0), 0.9, 1, b_cells),
        ((4.0, 4.0, 32.0, 32.0), 0.8, 1, cells(0)),
        ((60.0, 2.0, 88.0, 30.0), 0.7, 1, c_cells),
    ]


def test_order_votes_visible_masks_and_external_occlusion():
    dets = occlusion_dets()
    amodal, layers = reference(dets, (96, 96))
    pred = fake_predictor(dets)
    pred.set_image(image(96, 96))
    scene = pred.scene(score_thr=0.5, image_record={"id": 7, "file_name": "x.png"})
    assert scene.image == {"id": 7, "file_name": "x.png", "height": 96, "width": 96}
    b, a, c = scene.instances
    assert [i.id for i in scene.instances] == [1, 2, 3]  # score order
    assert [i.score for i in scene.instances] == pytest.approx([0.9, 0.8, 0.7])
    assert (b.rank, a.rank, c.rank) == (2, 1, 3)  # A is on layer 0 where B is on layer 1: A in front
    for inst, k in zip((b, a, c), range(3)):
        np.testing.assert_array_equal(inst.amodal, amodal[k])
        # The head's layers, made to follow the scene: 0 on its visible mask, at least 1 on the hidden part.
        expected = np.where(inst.amodal, np.where(scene.visible(inst.id), 0, np.maximum(layers[k], 1)), -1)
        np.testing.assert_array_equal(inst.semdist.layers(), expected)
        assert inst.layers.dtype == np.int8 and inst.semdist.values.dtype == np.float32
        assert inst.layers.shape == inst.semdist.values.shape  # a crop of the amodal mask's box
        assert inst.semdist.box == tuple(int(v) for v in np.add(inst.bbox(), [0, 0, *inst.bbox()[:2]]))
        assert inst.name == "object" and inst.category == 1
    # The sem-dist map: the pasted regression inside the amodal mask (2.5 on layer 0 cells), 0 outside.
    full = b.semdist.full()
    assert full[~b.amodal].max() == 0.0 and full[30, 40] == pytest.approx(2.5)
    # B's occlusion not explained by A: the corner block (64 px), plus a 1 px rim along A's edge (27 px,
    # more than 2 % of B's area): the rim is dropped as too thin, the block is kept.
    unexplained = b.amodal & (layers[0] != 0) & ~a.amodal
    corner = np.zeros_like(unexplained)
    corner[38:, 38:] = True
    assert int((unexplained & corner).sum()) == 64 and int((unexplained & ~corner).sum()) == 27
    assert 27 > 0.02 * b.area
    np.testing.assert_array_equal(b.external, unexplained & corner)
    np.testing.assert_array_equal(scene.visible(1), b.amodal & ~a.amodal & ~(unexplained & corner))
    assert a.external is None
    # C's blob (21 px, 5 thick) is 2.5 % of its 841 px: kept, and dropped when pieces need 3 %.
    blob = c.amodal & (layers[2] != 0)
    assert int(blob.sum()) == 21 and c.area == 841
    np.testing.assert_array_equal(c.external, blob)
    strict = fake_predictor(dets, min_external_fraction=0.03)
    strict.set_image(image(96, 96))
    assert strict.scene(0.5).get(3).external is None


def test_duplicates_are_suppressed_across_labels_by_visible_evidence():
    behind = cells(1)
    behind[-3:, :] = 0  # visible only in a strip below the front object
    behind[:, -3:] = 0
    dets = [
        ((10.0, 10.0, 38.0, 38.0), 0.9, 1, cells(0)),
        ((11.0, 10.0, 39.0, 38.0), 0.8, 2, cells(0)),  # the same object again, as the other class
        ((12.0, 12.0, 40.0, 40.0), 0.7, 1, behind),  # another object, amodal IoU 0.75 with the first
    ]
    pred = fake_predictor(dets, class_names=("box", "disc"))
    pred.set_image(image(64, 64))
    scene = pred.scene(0.5)
    assert [(i.id, i.rank, i.name) for i in scene.instances] == [(1, 1, "box"), (3, 2, "box")]
    amodal, _ = reference(dets, (64, 64))
    inter = (amodal[0] & amodal[2]).sum()
    assert inter / (amodal[0] | amodal[2]).sum() > 0.7
    everything = fake_predictor(dets, class_names=("box", "disc"), mask_nms_thr=1.0)
    everything.set_image(image(64, 64))
    assert [(i.id, i.name) for i in everything.scene(0.5).instances] == [(1, "box"), (2, "disc"), (3, "box")]


def test_labels_map_back_to_the_dataset_category_ids_and_names():
    (b, sb, _, cb), (a, sa, _, ca), (c, sc, _, cc) = occlusion_dets()
    dets = [(b, sb, 3, cb), (a, sa, 1, ca), (c, sc, 2, cc)]  # network labels 3, 1, 2
    pred = fake_predictor(dets, categories=CATEGORY_MAP)
    assert pred.categories == CATEGORY_MAP and pred.class_names == ["car", "cat", "toothbrush"]
    pred.set_image(image(96, 96))
    assert [(i.id, i.category, i.name) for i in pred.scene(0.5).instances] == [
        (1, 90, "toothbrush"),
        (2, 3, "car"),
        (3, 17, "cat"),
    ]
    assert [(m.category, m.name) for m in map(pred.instance_maps, (1, 2, 3))] == [
        (90, "toothbrush"),
        (3, "car"),
        (17, "cat"),
    ]
    # Class names alone (and old checkpoints) mean ids 1..C.
    by_names = fake_predictor(dets, class_names=("car", "cat", "toothbrush"))
    assert by_names.categories == [{"id": 1, "name": "car"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "toothbrush"}]
    by_names.set_image(image(96, 96))
    assert [(i.category, i.name) for i in by_names.scene(0.5).instances] == [(3, "toothbrush"), (1, "car"), (2, "cat")]
    # A class-agnostic model keeps category 1, "object".
    agnostic = fake_predictor(occlusion_dets())
    assert agnostic.categories == [{"id": 1, "name": "object"}]


def test_threshold_changes_and_queries_do_not_rerun_the_network():
    dets = occlusion_dets()
    pred = fake_predictor(dets)
    net = pred.model
    pred.set_image(image(96, 96))
    assert [i.id for i in pred.scene(0.85).instances] == [1]
    assert [i.id for i in pred.scene(0.5).instances] == [1, 2, 3]
    assert [i.id for i in pred.scene(0.75).instances] == [1, 2]
    maps = pred.instance_maps(2)
    assert (maps.id, maps.score, maps.box) == (2, pytest.approx(0.8), (4.0, 4.0, 32.0, 32.0))
    np.testing.assert_array_equal(maps.amodal, pred.scene(0.5).get(2).amodal)
    np.testing.assert_array_equal(maps.visible_evidence, maps.layers == 0)
    g = pred.global_layers()
    assert g.dtype == np.uint8 and g.shape == (96, 96) and g[:48].min() == 1 and g[48:].max() == 0
    assert net.calls == 1
    pred.set_image(image(96, 96))
    assert net.calls == 2


def test_no_detections_give_an_empty_scene():
    pred = fake_predictor([])
    pred.set_image(image(30, 40))
    scene = pred.scene(0.0, image_record={"id": 3})
    assert len(scene) == 0 and scene.shape == (30, 40) and scene.image_id == 3


@pytest.mark.parametrize("kind", ["maskrcnn_amodal", "maskrcnn_visible"])
def test_baselines_order_by_overlap_share_and_paint(kind):
    big = ((4.0, 4.0, 44.0, 44.0), 0.8, 1, cells(0))
    small = ((30.0, 30.0, 50.0, 50.0), 0.9, 1, cells(0))
    pred = fake_predictor([small, big], kind=kind)
    pred.set_image(image(64, 64))
    scene = pred.scene(0.5)
    s, b = scene.instances
    # The overlap is a smaller share of the big instance: it goes in front.
    overlap = s.amodal & b.amodal
    assert overlap.sum() / b.area < overlap.sum() / s.area
    assert (s.id, s.rank, b.id, b.rank) == (1, 2, 2, 1)
    np.testing.assert_array_equal(scene.visible(1), s.amodal & ~b.amodal)
    assert s.layers is None and s.semdist is None and s.external is None and b.external is None
    with pytest.raises(SemlayerError, match="predicts no global layering map"):
        pred.global_layers()


def test_drop_specks_by_size_and_thickness():
    mask = np.zeros((20, 24), bool)
    mask[1:6, 1:6] = True  # 25 px, 5 thick
    mask[10:13, 10:13] = True  # 9 px, 3 thick
    mask[18, 0:20] = True  # 20 px, 1 thick
    mask[0:12, 21:23] = True  # 24 px, 2 thick (touching the frame's edge)
    assert {int(_drop_specks(mask, n).sum()) for n in (0, 9)} == {34}
    assert int(_drop_specks(mask, 10).sum()) == 25
    assert not _drop_specks(mask, 26).any()


def test_bad_calls_are_clear_errors(monkeypatch, tmp_path):
    pred = fake_predictor([])
    with pytest.raises(RuntimeError, match="set_image"):
        pred.scene()
    pred.set_image(image(8, 8))
    with pytest.raises(ConfigError, match=r"score threshold: expected a number in \[0, 1\], got 1.5"):
        pred.scene(1.5)
    with pytest.raises(ValueError, match=r"instance id: expected an integer in 1..0, got 1"):
        pred.instance_maps(1)
    with pytest.raises(ValueError, match="image_record height is 9"):
        pred.scene(0.5, image_record={"id": 1, "height": 9})
    with pytest.raises(ConfigError, match="device"):
        fake_predictor([], device="gpu-please")
    with pytest.raises(ConfigError, match="expected 2 names"):
        Predictor(model=FakeNet([]), config={"model": {"num_classes": 2}}, class_names=["a"])
    with pytest.raises(ConfigError, match=r"categories: expected 2 categories \(model.num_classes\), got 3"):
        Predictor(model=FakeNet([]), config={"model": {"num_classes": 2}}, categories=CATEGORY_MAP)
    with pytest.raises(ConfigError, match="give class_names or categories, not both"):
        Predictor(
            model=FakeNet([]),
            config={"model": {"num_classes": 1}},
            class_names=["a"],
            categories=[{"id": 4, "name": "a"}],
        )
    with pytest.raises(FormatError, match=r"Predictor: categories\[1\].id: a unique category id; 3 comes twice"):
        fake_predictor([], categories=[{"id": 3, "name": "a"}, {"id": 3, "name": "b"}])
    with pytest.raises(FormatError, match=r"categories\[0\].id: an integer category id, got '3'"):
        fake_predictor([], categories=[{"id": "3", "name": "a"}])
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tmp_path / "nothing.pt")
    with pytest.raises(FormatError, match="the shipped demo checkpoint"):
        Predictor()


# ----- the real tiny SLN -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """configs/tiny_synth.yaml, untrained, at a small input size so the tests stay fast."""
    config = load_config("configs/tiny_synth.yaml")
    config["model"].update(min_size=64, max_size=96)
    torch.manual_seed(0)
    model = build_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path, {"model": model.state_dict(), "config": config, "class_names": [c["name"] for c in CATEGORIES]}
    )
    return path


@pytest.fixture(scope="module")
def categorized_checkpoint(tmp_path_factory):
    """The same tiny SLN with three classes, as trained on a dataset whose category ids are 3, 17 and 90."""
    config = load_config("configs/tiny_synth.yaml")
    config["model"].update(min_size=64, max_size=96, num_classes=3)
    torch.manual_seed(0)
    model = build_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny3.pt"
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "config": config,
            "class_names": [c["name"] for c in CATEGORY_MAP],
            "categories": CATEGORY_MAP,
        },
    )
    return path


@pytest.fixture(scope="module")
def synth_image():
    return generate_scene(np.random.default_rng(5), size=64, max_instances=4)[0]


def test_real_model_runs_once_and_scenes_are_consistent(checkpoint, synth_image):
    pred = Predictor(checkpoint)
    calls = []
    pred.model.register_forward_hook(lambda *_: calls.append(1))
    pred.set_image(synth_image)
    scene = pred.scene(0.0)
    scores = [i.score for i in scene.instances]
    assert len(scene) >= 5 and scores == sorted(scores, reverse=True)
    assert sorted(scene.ranks()) == list(range(1, len(scene) + 1))
    visible = scene.visible_masks()
    assert np.stack(visible).sum(axis=0).max() == 1  # no pixel is visible on two instances
    covered = np.zeros(scene.shape, bool)
    for i in scene.front_to_back():  # the painter's rule
        inst = scene.instances[i]
        external = inst.external if inst.external is not None else np.zeros(scene.shape, bool)
        np.testing.assert_array_equal(visible[i], inst.amodal & ~covered & ~external)
        np.testing.assert_array_equal(_drop_specks(external, 0.02 * inst.area), external)
        covered |= inst.amodal
        layers, values = inst.semdist.layers(), inst.semdist.full()
        assert layers.min() == -1 and layers.max() < K
        np.testing.assert_array_equal(layers >= 0, inst.amodal)
        np.testing.assert_array_equal(layers == 0, visible[i])  # the maps follow the order
        assert values[~inst.amodal].max() == 0 and 0 <= values.min() and values.max() <= K
    # A higher threshold keeps exactly the instances that pass it (NMS commutes with the threshold).
    thr = float(np.median(scores))
    assert [i.id for i in pred.scene(thr).instances] == [i.id for i in scene.instances if i.score >= thr]
    # The front-most instance's maps are the head's, except where its hidden evidence was dropped as specks:
    # there the scene shows it, so the maps say layer 0, each pixel's distance part kept.
    front = scene.front_to_back()[0]
    raw, final = pred.instance_maps(scene.instances[front].id), scene.instances[front].semdist
    moved = raw.layers != final.layers()
    assert (raw.layers[moved] >= 1).all() and visible[front][moved].all()
    np.testing.assert_array_equal(final.full()[~moved], raw.semdist[~moved])
    np.testing.assert_allclose(final.full()[moved], raw.semdist[moved] + raw.layers[moved], atol=1e-6)
    assert pred.global_layers().shape == synth_image.shape[:2]
    assert len(calls) == 1
    pred.set_image(synth_image)
    assert len(calls) == 2


def test_real_model_pasting_matches_paste_roi_maps(checkpoint, synth_image):
    pred = Predictor(checkpoint)
    pred.set_image(synth_image)
    tensor = torch.from_numpy(synth_image).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        out = pred.model([tensor])[0]
    order = torch.argsort(out["scores"], descending=True, stable=True)
    H, W = synth_image.shape[:2]
    amodal = paste_roi_maps(out["masks"][order], out["boxes"][order], H, W)[:, 0].numpy() > 0.5
    probs = paste_roi_maps(out["layer_logits"][order].softmax(dim=1)[:, 1:], out["boxes"][order], H, W).numpy()
    for d in range(len(order)):
        maps = pred.instance_maps(d + 1)
        np.testing.assert_array_equal(maps.amodal, amodal[d])
        np.testing.assert_array_equal(maps.layers, np.where(amodal[d], probs[d].argmax(axis=0), -1))


def test_grey_rgba_and_empty_inputs(checkpoint, synth_image):
    pred = Predictor(checkpoint)
    grey = synth_image.mean(axis=2).astype(np.uint8)
    pred.set_image(grey)
    assert pred.scene(0.0).shape == grey.shape
    rgba = np.dstack([synth_image, np.full(grey.shape, 200, np.uint8)])
    pred.set_image(rgba)
    assert pred.scene(0.0).shape == grey.shape
    pred.model.roi_heads.score_thresh = 1.0  # nothing passes: the network returns no detection
    pred.set_image(synth_image)
    assert pred.num_detections == 0 and len(pred.scene(0.0)) == 0


@pytest.mark.parametrize("fmt", ["cocoa", "coco", "results"])
def test_predict_files_writes_valid_files_and_skips_unreadable_images(tmp_path, checkpoint, synth_image, fmt):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(synth_image).save(folder / "a.png")
    Image.fromarray(synth_image[:, :, 0], "L").save(folder / "sub" / "b.png")
    Image.fromarray(np.dstack([synth_image, synth_image[:, :, 1]]), "RGBA").save(folder / "c.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image either, and not listed")
    Image.fromarray(synth_image[:40]).save(tmp_path / "single.png")
    out = tmp_path / f"pred.{fmt}.json"
    report = predict_files(
        checkpoint,
        [folder, tmp_path / "single.png", tmp_path / "missing.png"],
        out,
        fmt=fmt,
        score_thr=0.0,
        progress=False,
    )
    assert [p for p, _ in report.skipped] == [str(folder / "broken.jpg"), str(tmp_path / "missing.png")]
    assert report.skipped[0][1].startswith("not a readable image (UnidentifiedImageError")
    assert report.skipped[1][1] == "an image file (not found)"
    assert report.num_images == 4 and report.num_instances >= 4
    assert formats.validate(out) == []
    annset = formats.load(out)
    assert [s.image_id for s in annset.scenes] == [1, 2, 3, 4]
    assert [s.shape for s in annset.scenes] == [(64, 64)] * 3 + [(40, 64)]
    if fmt != "results":  # a results list has no image records
        assert [s.file_name for s in annset.scenes] == ["a.png", "c.png", "sub/b.png", "single.png"]
    assert sum(len(s) for s in annset.scenes) == report.num_instances
    assert all(inst.score is not None for s in annset.scenes for inst in s.instances)


@pytest.mark.parametrize("fmt", ["cocoa", "coco", "results"])
def test_predict_files_keeps_the_predicted_external_occlusion(monkeypatch, tmp_path, fmt):
    """The file holds `Predictor.scene`'s visible masks (what the app shows and exports), external occlusion
    included, and it validates: occlusion by nothing detected is a note, not a violation."""
    live = fake_predictor(occlusion_dets())
    monkeypatch.setattr(
        predict, "Predictor", lambda checkpoint, device="cpu", semdist=True: fake_predictor(occlusion_dets())
    )
    Image.fromarray(image(96, 96)).save(tmp_path / "x.png")
    out = tmp_path / f"pred.{fmt}.json"
    predict_files("fake.pt", [tmp_path / "x.png"], out, fmt=fmt, progress=False)
    live.set_image(image(96, 96))
    expected = live.scene(0.5, {"id": 1, "file_name": "x.png"})
    b, c = expected.get(1), expected.get(3)
    assert b.external.sum() == 64 and c.external.sum() == 21  # B's corner block, C's blob
    report = formats.validation_report(out)
    assert report.violations == []
    if fmt != "results":  # a results list states no authoritative order, so the painter's rule is not checked
        paths = (
            ["annotations[0].regions[1]", "annotations[0].regions[2]"]
            if fmt == "cocoa"
            else ["annotations[0]", "annotations[2]"]
        )
        assert report.external == list(zip(paths, [64, 21]))
    scene = formats.load(out).scenes[0]
    assert sorted(scene.ranks()) == [1, 2, 3]
    for inst, vis in zip(scene.instances, scene.visible_masks()):
        twin = next(i for i in expected.instances if i.rank == inst.rank)
        np.testing.assert_array_equal(inst.amodal, twin.amodal)
        np.testing.assert_array_equal(vis, expected.visible(twin.id))
    np.testing.assert_array_equal(next(i for i in scene.instances if i.rank == b.rank).external, b.external)


def test_predict_files_refuses_bad_options_before_running(tmp_path, checkpoint):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "pred.json"
    with pytest.raises(ConfigError, match="no image files to predict: .*empty: no image files"):
        predict_files(checkpoint, [tmp_path / "empty"], out)
    with pytest.raises(ConfigError, match="format: expected one of cocoa, coco, results, got 'xml'"):
        predict_files(checkpoint, [tmp_path], out, fmt="xml")
    with pytest.raises(ConfigError, match="score threshold"):
        predict_files(checkpoint, [tmp_path], out, score_thr=-0.1)
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(
        SemlayerError,
        match=r"no image could be read: .*bad.png: not a readable image.*; "
        r".*typo.png: an image file \(not found\)",
    ):
        predict_files(checkpoint, [tmp_path / "bad.png", tmp_path / "typo.png"], out, progress=False)
    assert not out.exists()


# ----- categories: the dataset's ids, not the network's labels ---------------------------------------
class CycledLabels(nn.Module):
    """The wrapped network with labels 1, 2, 3, 1, ... in descending score order (an untrained network gives
    nearly every detection the same class), so detection ``id`` d has label ``(d - 1) % 3 + 1``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images):
        outs = self.net(images)
        for out in outs:
            order = torch.argsort(out["scores"], descending=True, stable=True)
            labels = torch.empty_like(out["labels"])
            labels[order] = torch.arange(len(order)) % 3 + 1
            out["labels"] = labels
        return outs


@pytest.fixture
def cycled_labels(monkeypatch):
    """Every checkpoint loaded for inference (Predictor, predict_files) runs under `CycledLabels`."""
    load = predict.load_for_inference

    def cycled(path, device):
        model, config, categories = load(path, device)
        return CycledLabels(model).eval(), config, categories

    monkeypatch.setattr(predict, "load_for_inference", cycled)


def test_real_model_instances_carry_the_checkpoints_category_ids(categorized_checkpoint, synth_image, cycled_labels):
    pred = Predictor(categorized_checkpoint)
    assert pred.categories == CATEGORY_MAP and pred.class_names == ["car", "cat", "toothbrush"]
    pred.set_image(synth_image)
    scene = pred.scene(0.0)
    assert len(scene) >= 6
    for inst in scene.instances:
        expected = CATEGORY_MAP[(inst.id - 1) % 3]
        assert (inst.category, inst.name) == (expected["id"], expected["name"])
        maps = pred.instance_maps(inst.id)
        assert (maps.category, maps.name) == (expected["id"], expected["name"])
    assert {i.category for i in scene.instances} == {3, 17, 90}


def written_categories(doc, fmt: str) -> dict[int, tuple[int, str | None]]:
    """Depth rank -> (category_id, region name) of every instance written (one image)."""
    if fmt == "coco":
        return {a["amodal_region"]["order"]: (a["category_id"], a["amodal_region"]["name"]) for a in doc["annotations"]}
    if fmt == "cocoa":
        return {r["order"]: (r["category_id"], r["name"]) for r in doc["annotations"][0]["regions"]}
    return {r["order"]: (r["category_id"], None) for r in doc}


@pytest.mark.parametrize("fmt", ["coco", "cocoa", "results"])
def test_predict_files_writes_the_dataset_category_ids(
    tmp_path, categorized_checkpoint, synth_image, cycled_labels, fmt
):
    Image.fromarray(synth_image).save(tmp_path / "a.png")
    out = tmp_path / f"pred.{fmt}.json"
    report = predict_files(categorized_checkpoint, [tmp_path / "a.png"], out, fmt=fmt, score_thr=0.0, progress=False)
    pred = Predictor(categorized_checkpoint)
    pred.set_image(synth_image)
    scene = pred.scene(0.0)
    expected = {i.rank: CATEGORY_MAP[(i.id - 1) % 3] for i in scene.instances}
    doc = json.loads(out.read_text())
    assert report.num_instances == len(scene) >= 6
    assert written_categories(doc, fmt) == {
        rank: (c["id"], None if fmt == "results" else c["name"]) for rank, c in expected.items()
    }
    if fmt != "results":
        assert doc["categories"] == CATEGORY_MAP
        assert formats.load(out).categories == CATEGORY_MAP


def test_checkpoints_without_categories_keep_ids_1_to_c(tmp_path, checkpoint, synth_image, cycled_labels):
    synth_ids = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    assert [c["id"] for c in synth_ids] == list(range(1, 9))
    pred = Predictor(checkpoint)  # written with class_names only, as every checkpoint before categories
    assert pred.categories == synth_ids
    pred.set_image(synth_image)
    scene = pred.scene(0.0)
    assert [(i.category, i.name) for i in scene.instances] == [
        ((i.id - 1) % 3 + 1, CATEGORIES[(i.id - 1) % 3]["name"]) for i in scene.instances
    ]
    Image.fromarray(synth_image).save(tmp_path / "a.png")
    predict_files(checkpoint, [tmp_path / "a.png"], tmp_path / "pred.json", fmt="coco", score_thr=0.0, progress=False)
    doc = json.loads((tmp_path / "pred.json").read_text())
    assert doc["categories"] == synth_ids
    assert written_categories(doc, "coco") == {
        i.rank: ((i.id - 1) % 3 + 1, CATEGORIES[(i.id - 1) % 3]["name"]) for i in scene.instances
    }
    # The shipped demo model has no categories entry either: the synthetic ids 1..8.
    assert Predictor().categories == synth_ids


def test_bad_checkpoint_categories_are_clear_errors(tmp_path, categorized_checkpoint):
    ckpt = torch.load(categorized_checkpoint, weights_only=True)
    ckpt["categories"] = CATEGORY_MAP[:2]
    torch.save(ckpt, tmp_path / "short.pt")
    with pytest.raises(FormatError, match=r"short.pt: categories: one category per class name \(3\), got 2"):
        Predictor(tmp_path / "short.pt")
    ckpt["categories"] = [*CATEGORY_MAP[:2], {"id": 90}]
    torch.save(ckpt, tmp_path / "nameless.pt")
    with pytest.raises(FormatError, match=r"nameless.pt: categories\[2\].name: a category name"):
        Predictor(tmp_path / "nameless.pt")
    with pytest.raises(ConfigError, match="a checkpoint has its own"):
        Predictor(categorized_checkpoint, categories=CATEGORY_MAP)


@pytest.mark.parametrize("seed", range(4))
def test_box_paste_equals_torchvision_paste_and_argmax_equals_numpy(seed):
    """The crop the predictor pastes equals ``paste_roi_maps`` (torchvision's paste) over the crop's
    place, to float rounding, for boxes inside and across the image edges; the channel arg-max
    equals numpy's (ties to the first channel)."""
    g = torch.Generator().manual_seed(seed)
    H, W = 40, 52
    maps = torch.rand((6, 3, 28, 28), generator=g)
    # Boxes start up to 10 px before the image and end up to 30 px beyond it, but all meet the image
    # (torchvision's paste fails on a box wholly outside; ours gives an empty crop, checked below).
    xy = torch.rand((6, 2), generator=g) * torch.tensor([W + 5.0, H + 5.0]) - 10
    wh = torch.rand((6, 2), generator=g) * 40 + 10.5
    boxes = torch.cat([xy, xy + wh], dim=1)
    for channels in (maps, maps[:, :1]):  # several channels (the SLN), one (a baseline's mask)
        full = paste_roi_maps(channels, boxes, H, W).numpy()
        padded, grown = _paste_geometry(channels, boxes)
        for d in range(6):
            crop, (x0, y0, x1, y1) = _paste_in_box(padded[d], grown[d], H, W)
            crop = crop.transpose(2, 0, 1)  # channels last, as OpenCV gives them
            assert crop.shape[0] == channels.shape[1]
            outside = full[d].copy()
            if x1 > x0:
                np.testing.assert_allclose(crop, full[d][:, y0:y1, x0:x1], atol=1e-5)
                outside[:, y0:y1, x0:x1] = 0
            assert not outside.any()  # nothing of the paste lies beyond the crop
    padded, grown = _paste_geometry(maps, boxes)
    crop, place = _paste_in_box(padded[0], [W + 3, 5, W + 20, 30], H, W)
    assert crop.shape == (0, 0, 3) and place == (0, 0, 0, 0)
    ties = torch.rand((3, 9, 11), generator=g).numpy()
    ties[2, :3] = ties[0, :3]
    np.testing.assert_array_equal(_argmax_channels(ties), ties.argmax(axis=0))


@pytest.mark.parametrize("shift", [0.0, -1.4, 0.9])
def test_semdist_is_the_regression_clamped_into_each_pixels_predicted_level(shift):
    """Bilinear pasting blends levels at boundaries, and a regression can be off its level anywhere: the map
    is clamped into (K - 1 - layer) + [1/tau, 1], so it always decodes to the predicted layers."""
    from semlayer.semdist import decode_layers

    pred = fake_predictor(occlusion_dets())
    forward = pred.model.forward

    def shifted(images):
        out = forward(images)
        out[0]["semdist"] = out[0]["semdist"] + shift
        return out

    pred.model.forward = shifted
    pred.set_image(image(96, 96))
    tau = 6.0  # the default model.tau
    for inst in pred.scene(score_thr=0.5).instances:
        semdist, layers = inst.semdist.full(), inst.semdist.layers()
        np.testing.assert_array_equal(decode_layers(semdist, K), layers)
        top = (K - layers[inst.amodal]).astype(np.float32)
        values = semdist[inst.amodal]
        assert values.min() >= (top - 1 + np.float32(1 / tau)).min() and (values <= top).all()
        assert (semdist[~inst.amodal] == 0).all()
    b = pred.scene(score_thr=0.5).instances[0]
    # Away from boundaries the regression (K - layer - 0.5 on every cell) passes through, or is clamped.
    expected = {0.0: 2.5, -1.4: 2.0 + np.float32(1 / tau), 0.9: 3.0}[shift]
    assert b.semdist.layers()[30, 40] == 0 and b.semdist.full()[30, 40] == pytest.approx(expected, abs=1e-6)


def test_maps_of_a_small_object_in_a_big_image_are_crops_of_its_box():
    """An instance's layer and sem-dist maps cost what its box costs, not what the image costs."""
    small = ((1000.0, 2000.0, 1040.0, 2030.0), 0.9, 1, cells(0))
    pred = fake_predictor([small])
    pred.set_image(image(3000, 4000))
    (inst,) = pred.scene(0.5).instances
    x, y, w, h = (int(v) for v in inst.bbox())
    assert inst.semdist.box == (x, y, x + w, y + h) and w * h <= 42 * 32
    # float32 values + int8 layers: 5 bytes a box pixel, where a full frame of values alone holds 48 MB.
    assert inst.semdist.nbytes == 5 * w * h
    assert inst.layers.shape == (h, w) and inst.semdist.layers().shape == (3000, 4000)


def test_predict_files_coco_and_results_outputs_evaluate_in_pycocotools(monkeypatch, tmp_path):
    """`semlayer predict`'s COCO-style file loads in pycocotools' ``COCO`` (ground truth) and its results list
    in ``loadRes``; COCOeval scores the one against the other at AP 1."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    monkeypatch.setattr(
        predict, "Predictor", lambda checkpoint, device="cpu", semdist=True: fake_predictor(occlusion_dets())
    )
    Image.fromarray(image(96, 96)).save(tmp_path / "x.png")
    for fmt in ("coco", "results"):
        predict_files("fake.pt", [tmp_path / "x.png"], tmp_path / f"pred.{fmt}.json", fmt=fmt, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "pred.coco.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "pred.results.json")), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(gt.getAnnIds()) == 3 and ev.stats[0] == pytest.approx(1.0)
