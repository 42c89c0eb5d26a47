import math

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from semlayer import formats, synth
from semlayer.errors import ConfigError

SIZE = 128  # small frames keep the batch fast; the generator scales everything with the size
BATCH = 40


@pytest.fixture(scope="module")
def layouts():
    return [synth.sample_layout(synth.image_rng(11, k), SIZE, max_instances=6) for k in range(BATCH)]


@pytest.fixture(scope="module")
def scenes(layouts):
    return [layout.to_scene(k + 1) for k, layout in enumerate(layouts)]


def test_categories_are_stable_coco_records():
    assert [(c["id"], c["name"]) for c in synth.CATEGORIES] == [
        (1, "disc"),
        (2, "box"),
        (3, "triangle"),
        (4, "ring"),
        (5, "star"),
        (6, "capsule"),
        (7, "cross"),
        (8, "heart"),
    ]
    assert all(c["supercategory"] == "shape" for c in synth.CATEGORIES)
    assert sorted(synth.SHAPES) == [c["id"] for c in synth.CATEGORIES]


def test_same_seed_same_bytes_and_other_seed_other_scene():
    img_a, scene_a = synth.generate_scene(np.random.default_rng(5), SIZE)
    img_b, scene_b = synth.generate_scene(np.random.default_rng(5), SIZE)
    assert img_a.tobytes() == img_b.tobytes()
    assert [(i.id, i.rank, i.name, i.category, i.polygons) for i in scene_a.instances] == [
        (i.id, i.rank, i.name, i.category, i.polygons) for i in scene_b.instances
    ]
    assert all(np.array_equal(a.amodal, b.amodal) for a, b in zip(scene_a.instances, scene_b.instances))
    img_c, _ = synth.generate_scene(np.random.default_rng(6), SIZE)
    assert img_c.tobytes() != img_a.tobytes()


def test_image_k_does_not_depend_on_how_many_images_are_made():
    three = list(synth.generate(3, seed=4, size=SIZE))
    five = list(synth.generate(5, seed=4, size=SIZE))
    assert [s.image_id for _, s in five] == [1, 2, 3, 4, 5]
    assert three[2][0].tobytes() == five[2][0].tobytes()
    assert three[2][1].image == five[2][1].image
    assert three[0][0].tobytes() != three[1][0].tobytes()


def test_scene_records_and_instances(scenes):
    scene = scenes[0]
    assert scene.image == {"id": 1, "file_name": "synth_000001.png", "height": SIZE, "width": SIZE}
    for s in scenes:
        # Instance k is the k-th from the front, as COCOA lists regions.
        assert [i.id for i in s.instances] == [i.rank for i in s.instances] == list(range(1, len(s) + 1))
        for inst in s.instances:
            assert inst.name == synth.CATEGORY_NAMES[inst.category]
            assert inst.external is None and not inst.is_stuff


def test_batch_covers_every_shape_texture_count_and_occlusion_level(layouts, scenes):
    assert {i.category for s in scenes for i in s.instances} == set(synth.CATEGORY_NAMES)
    assert {o.texture.kind for lay in layouts for o in lay.objects} == set(synth.OBJECT_TEXTURES)
    assert {lay.background.kind for lay in layouts} == set(synth.BACKGROUND_TEXTURES)
    counts = [len(s) for s in scenes]
    assert min(counts) == 1 and max(counts) == 6
    rates = [r for s in scenes for r in s.occlude_rates()]
    assert any(0 < r <= 0.25 for r in rates), "no mildly occluded instance"
    assert any(r > 0.5 for r in rates), "no heavily occluded instance"
    assert sum(r == 0 for r in rates) > 0


def test_every_multi_object_scene_has_a_real_overlap(scenes):
    for s in scenes:
        if len(s) < 2:
            continue
        best = max(
            (a.amodal & b.amodal).sum() / min(a.area, b.area)
            for k, a in enumerate(s.instances)
            for b in s.instances[k + 1 :]
        )
        assert best >= synth.MIN_OVERLAP_FRACTION, f"scene {s.image_id}: largest overlap {best:.3f}"


def test_minimum_visible_area_holds_even_in_crowded_scenes(scenes):
    crowded = [synth.generate_scene(synth.image_rng(3, k), SIZE, 10, 10)[1] for k in range(8)]
    assert all(len(s) == 10 for s in crowded)
    for s in scenes + crowded:
        for inst, vis in zip(s.instances, s.visible_masks()):
            need = max(synth.MIN_VISIBLE_PIXELS, math.ceil(synth.MIN_VISIBLE_FRACTION * inst.area))
            assert vis.sum() >= need, f"scene {s.image_id} instance {inst.id}: {vis.sum()} < {need}"


def test_each_instance_is_one_flat_polygon_that_rasterises_to_its_mask(scenes):
    for s in scenes:
        for inst in s.instances:
            assert len(inst.polygons) == 1 and len(inst.polygons[0]) % 2 == 0
            rle = mask_utils.frPyObjects(inst.polygons, SIZE, SIZE)
            assert np.array_equal(mask_utils.decode(rle)[:, :, 0].astype(bool), inst.amodal)
            # Whole objects: nothing touches the frame.
            assert not (
                inst.amodal[0].any() or inst.amodal[-1].any() or inst.amodal[:, 0].any() or inst.amodal[:, -1].any()
            )


def test_rings_have_an_open_hole(scenes):
    rings = [i for s in scenes for i in s.instances if i.name == "ring"]
    assert rings
    for inst in rings:
        # The background of the padded mask splits in two: the outside and the hole.
        n, _ = cv2.connectedComponents((~np.pad(inst.amodal, 1)).astype(np.uint8), connectivity=4)
        assert n - 1 == 2


def test_image_pixels_come_from_the_instance_that_is_visible_there(layouts):
    for layout in layouts[:12]:
        image = layout.render()
        scene = layout.to_scene()
        kernel = np.ones((3, 3), np.uint8)
        for vis, obj in zip(scene.visible_masks(), layout.objects):
            (x0, y0, x1, y1), rgb = obj.render()
            # Away from the neighbours' one-pixel anti-aliased fringe, the pixel is the object's own colour.
            core = cv2.erode(vis.astype(np.uint8), kernel, borderValue=0).astype(bool)[y0:y1, x0:x1]
            assert core.sum() > 0
            np.testing.assert_array_equal(image[y0:y1, x0:x1][core], rgb[core])
        # Far from every object, the background shows.
        union = np.zeros((SIZE, SIZE), bool)
        for inst in scene.instances:
            union |= inst.amodal
        far = ~cv2.dilate(union.astype(np.uint8), kernel).astype(bool)
        background = np.clip(np.rint(layout.background.paint((0, 0, SIZE, SIZE))), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(image[far], background[far])


def test_generate_scene_is_the_sampled_layout_rendered():
    image, scene = synth.generate_scene(synth.image_rng(9, 0), SIZE, image_id=4)
    layout = synth.sample_layout(synth.image_rng(9, 0), SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert image.tobytes() == layout.render().tobytes()
    assert scene.image_id == 4 and len(scene) == len(layout.objects)


def test_write_dataset_round_trips_through_cocoa(tmp_path):
    path = synth.write_dataset(tmp_path / "out", num_images=3, seed=2, size=96, progress=False)
    assert path == tmp_path / "out" / "annotations.json"
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "synth_000001.png",
        "synth_000002.png",
        "synth_000003.png",
    ]
    assert formats.validate(path) == []
    loaded = formats.load(path)
    assert loaded.format == "cocoa" and loaded.categories == synth.CATEGORIES
    for (image, scene), back in zip(synth.generate(3, seed=2, size=96), loaded.scenes):
        png = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "images" / scene.file_name)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(png, image)
        assert back.image == scene.image
        assert [(i.id, i.rank, i.name, i.category, i.polygons) for i in back.instances] == [
            (i.id, i.rank, i.name, i.category, i.polygons) for i in scene.instances
        ]
        for a, b, va, vb in zip(scene.instances, back.instances, scene.visible_masks(), back.visible_masks()):
            assert np.array_equal(a.amodal, b.amodal) and np.array_equal(va, vb)
    # Same seed, same bytes on disk.
    again = synth.write_dataset(tmp_path / "again", num_images=3, seed=2, size=96, progress=False)
    assert again.read_bytes() == path.read_bytes()
    for name in ("synth_000001.png", "synth_000003.png"):
        assert (tmp_path / "again" / "images" / name).read_bytes() == (tmp_path / "out" / "images" / name).read_bytes()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: synth.generate_scene(np.random.default_rng(0), size=32), "size must be an integer >= 64"),
        (lambda: synth.generate_scene(np.random.default_rng(0), max_instances=2, min_instances=3), "max_instances"),
        (lambda: synth.generate_scene(np.random.default_rng(0), min_instances=0), "min_instances must be"),
        (lambda: list(synth.generate(2, seed=-1)), "seed must be an integer >= 0"),
        (lambda: list(synth.generate(-1, seed=0)), "num_images must be"),
        (lambda: synth.generate_scene(np.random.default_rng(0), 64, 80, 80), "could not place 80 objects"),
    ],
)
def test_bad_arguments_raise_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
