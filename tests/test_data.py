import numpy as np
import pytest
import torch
from PIL import Image

from semlayer import semdist
from semlayer.data import (
    AmodalDataset,
    AnnotationSource,
    Augment,
    SyntheticSource,
    collate,
    scene_targets,
    transform_scene,
)
from semlayer.errors import FormatError
from semlayer.images import read_image
from semlayer.scene import AmodalScene, AnnotationSet, Instance


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def toy_scene(image_id=7, file_name="toy.png"):
    """The docs/formats.md toy scene (8x10; region 1 in front of region 2) plus external occlusion on region 2."""
    h, w = 8, 10
    ext = rect(h, w, 8, 5, 9, 7)
    return AmodalScene(
        {"id": image_id, "height": h, "width": w, "file_name": file_name},
        [
            Instance(1, rect(h, w, 1, 1, 5, 5), rank=1, category=3),
            Instance(2, rect(h, w, 3, 3, 9, 7), rank=2, category=9, external=ext),
        ],
    )


def test_targets_of_the_toy_scene_are_exact():
    scene = toy_scene()
    t = scene_targets(scene, [1, 1], K=3, tau=6)
    assert t["boxes"].tolist() == [[1, 1, 5, 5], [3, 3, 9, 7]]
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, 8, 10)
    assert t["masks"].sum(dim=(1, 2)).tolist() == [16, 24]
    # Region 2: 24 px amodal - 4 px under region 1 - 2 px external = 18 visible.
    assert t["visible_masks"].sum(dim=(1, 2)).tolist() == [16, 18]
    assert t["visible_boxes"].tolist() == [[1, 1, 5, 5], [3, 3, 9, 7]]
    assert t["layers"].dtype == torch.int8
    assert t["layers"][1, 3, 3] == 1 and t["layers"][1, 5, 8] == 1 and t["layers"][1, 4, 6] == 0
    assert t["layers"][1, 0, 0] == -1
    expected = np.stack([m.full() for m in semdist.encode_scene(scene, 3, 6)])
    np.testing.assert_array_equal(t["semdist"].numpy(), expected)
    assert t["semdist"][1, 3, 3].item() == pytest.approx(1 + 1 / 6)
    assert t["global_layers"].dtype == torch.uint8
    assert t["global_layers"][3, 3] == 2 and t["global_layers"][1, 1] == 1 and t["global_layers"][0, 0] == 0
    assert t["ranks"].tolist() == [1, 2] and int(t["image_id"]) == 7


def test_flip_moves_layers_and_distances_with_the_pixels():
    scene = toy_scene()
    image = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)
    flipped_image, flipped = transform_scene(image, scene, 1.0, flip=True)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    t0 = scene_targets(scene, [1, 1])
    t1 = scene_targets(flipped, [1, 1])
    for key in ("masks", "visible_masks", "layers", "semdist", "global_layers"):
        np.testing.assert_array_equal(t1[key].numpy(), np.flip(t0[key].numpy(), -1), err_msg=key)
    # x' = W - x for box edges.
    assert t1["boxes"].tolist() == [[5, 1, 9, 5], [1, 3, 7, 7]]
    assert t1["ranks"].tolist() == [1, 2]


def test_rescale_computes_distances_in_the_new_pixel_grid():
    scene = toy_scene()
    image = np.zeros((8, 10, 3), np.uint8)
    big_image, big = transform_scene(image, scene, 2.0, flip=False)
    assert big_image.shape == (16, 20, 3) and big.shape == (16, 20)
    np.testing.assert_array_equal(big.instances[0].amodal, rect(16, 20, 2, 2, 10, 10))
    np.testing.assert_array_equal(big.instances[1].external, rect(16, 20, 16, 10, 18, 14))
    t = scene_targets(big, [1, 1], K=3, tau=6)
    assert t["boxes"].tolist() == [[2, 2, 10, 10], [6, 6, 18, 14]]
    # Exact, not interpolated: the occluded 4x4 corner of region 2 now has distances 1 and 2.
    assert t["semdist"][1, 6, 6].item() == pytest.approx(1 + 1 / 6)
    assert t["semdist"][1, 7, 7].item() == pytest.approx(1 + 2 / 6)


def test_instances_that_vanish_are_dropped_and_ranks_renumbered():
    h, w = 40, 40
    scene = AmodalScene(
        {"id": 1, "height": h, "width": w},
        [Instance(1, rect(h, w, 1, 1, 2, 2), rank=1), Instance(2, rect(h, w, 5, 5, 30, 30), rank=2)],
    )
    _, small = transform_scene(np.zeros((h, w, 3), np.uint8), scene, 0.25, flip=False)
    assert [i.id for i in small.instances] == [2] and small.ranks() == [1] and small.shape == (10, 10)


def test_scale_for_follows_torchvision_min_max_rule():
    aug = Augment(min_size=256, max_size=512)
    assert aug.scale_for(256, 256) == 1.0
    assert aug.scale_for(128, 200) == 2.0
    assert aug.scale_for(100, 400) == pytest.approx(512 / 400)  # the long side caps it
    assert aug.scale_for(512, 512, jitter=0.5) == pytest.approx(0.25)


def test_empty_scene_gives_empty_targets_of_the_right_shapes():
    scene = AmodalScene({"id": 3, "height": 6, "width": 9}, [])
    t = scene_targets(scene, [])
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    assert t["masks"].shape == (0, 6, 9) and t["layers"].shape == (0, 6, 9) and t["semdist"].shape == (0, 6, 9)
    assert t["global_layers"].shape == (6, 9) and int(t["global_layers"].sum()) == 0


def _write(path, array, mode=None, exif=None):
    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if exif is not None:
        im.save(path, exif=exif)
    else:
        im.save(path)
    return path


def test_read_image_converts_grey_rgba_and_16_bit(tmp_path):
    grey = np.full((4, 5), 77, np.uint8)
    out = read_image(_write(tmp_path / "g.png", grey))
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out == 77).all()
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left two columns opaque red, the rest transparent -> white
    out = read_image(_write(tmp_path / "a.png", rgba))
    assert out[0, 0].tolist() == [200, 0, 0] and out[0, 4].tolist() == [255, 255, 255]
    deep = np.array([[0, 1000], [2000, 4000]], np.uint16)
    out = read_image(_write(tmp_path / "d.png", deep))
    assert out[..., 0].tolist() == [[0, 63], [127, 255]]


def test_read_image_applies_exif_orientation(tmp_path):
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _write(tmp_path / "r.jpg", arr, exif=exif.tobytes())
    out = read_image(path)
    assert out.shape == (6, 4, 3)
    assert out[0, -1].mean() > 128  # the marker went to the top-right corner
    # An annotation made on the raw pixel grid still matches.
    assert read_image(path, expected_hw=(4, 6)).shape == (4, 6, 3)
    with pytest.raises(FormatError, match="height x width 5 x 5"):
        read_image(path, expected_hw=(5, 5))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(FormatError, match="bad.png.*readable image"):
        read_image(bad)


def test_annotation_source_maps_categories_and_reads_images(tmp_path):
    Image.fromarray(np.full((8, 10, 3), 9, np.uint8)).save(tmp_path / "toy.png")
    cats = [{"id": 9, "name": "board"}, {"id": 3, "name": "box"}]
    ann = AnnotationSet(scenes=[toy_scene()], categories=cats, format="coco")
    per_class = AnnotationSource(ann, tmp_path, class_agnostic=False, source_name="ann.json")
    assert per_class.class_names == ["box", "board"]
    ds = AmodalDataset(per_class, augment=Augment(min_size=8, max_size=20))
    image, target = ds[0]
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32
    assert image[0, 0, 0].item() == pytest.approx(9 / 255)
    assert target["labels"].tolist() == [1, 2]
    agnostic = AmodalDataset(AnnotationSource(ann, tmp_path), augment=Augment(min_size=8, max_size=20))
    assert agnostic[0][1]["labels"].tolist() == [1, 1] and agnostic.class_names == ["object"]

    ann.scenes[0].instances[1].category = 5
    with pytest.raises(FormatError, match=r"ann.json: annotations\[image_id=7, id=2\].category_id"):
        ds[0]
    with pytest.raises(FormatError, match="categories"):
        AnnotationSource(AnnotationSet(scenes=[toy_scene()]), tmp_path, class_agnostic=False)


def test_annotation_source_reports_a_missing_image(tmp_path):
    ds = AmodalDataset(AnnotationSource(AnnotationSet(scenes=[toy_scene(file_name="gone.jpg")]), tmp_path))
    with pytest.raises(FormatError, match="gone.jpg"):
        ds[0]


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    source = SyntheticSource(num_images=3, seed=5, size=64, max_instances=3)
    aug = Augment(min_size=64, max_size=128, scale_range=(0.5, 1.5), hflip=0.5)
    a, b = AmodalDataset(source, augment=aug, seed=1), AmodalDataset(source, augment=aug, seed=1)
    ia, ta = a[2]
    ib, tb = b[2]
    assert torch.equal(ia, ib) and all(torch.equal(ta[k], tb[k]) for k in ta)
    sizes = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        sizes.add(tuple(a[2][0].shape))
    assert len(sizes) > 1  # scale jitter varies with the epoch


def test_synthetic_dataset_and_collate():
    ds = AmodalDataset(SyntheticSource(num_images=2, seed=0, size=64, max_instances=4), augment=Augment(64, 128))
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and len(targets) == 2
    for image, t in zip(images, targets):
        n = len(t["boxes"])
        assert image.shape == (3, 64, 64) and n >= 1
        assert t["layers"].shape == (n, 64, 64) and t["semdist"].shape == (n, 64, 64)
        # Every target is consistent with the decoding rules of the sem-dist map.
        np.testing.assert_array_equal(t["semdist"].numpy() > 0, t["masks"].numpy().astype(bool))
        np.testing.assert_array_equal(t["semdist"].numpy() > 2, t["visible_masks"].numpy().astype(bool))
        np.testing.assert_array_equal(t["global_layers"].numpy(), np.minimum(t["masks"].sum(0).numpy(), 3))
    assert collate([]) == ([], [])


def test_a_real_training_file_is_held_compactly_and_gives_the_same_samples(tmp_path):
    from semlayer import formats
    from semlayer.data import build_dataset
    from semlayer.config import defaults
    from semlayer.synth import write_dataset

    write_dataset(tmp_path, num_images=3, seed=4, size=64)
    ann, images = tmp_path / "annotations.json", tmp_path / "images"
    config = defaults()
    config["model"].update(min_size=64, max_size=64)
    ds = build_dataset(config, "train", True, annotations=str(ann), images=str(images))
    assert isinstance(ds.source.annotations.scenes, formats.CompactScenes)
    dense = build_dataset(config, "train", True, annotations=str(ann), images=str(images), loader=formats.load)
    assert not isinstance(dense.source.annotations.scenes, formats.CompactScenes)
    for i in range(3):
        (ia, ta), (ib, tb) = ds[i], dense[i]
        assert torch.equal(ia, ib) and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
