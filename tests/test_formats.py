import contextlib
import copy
import io
import logging
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from semlayer import formats
from semlayer.errors import ConfigError, FormatError
from semlayer.formats import Violation
from semlayer.formats._base import Context, stated_occlusion
from semlayer.formats.api import detect, parse, read_json
from semlayer.formats.masks import encode_rle, mask_to_polygon, polygons_to_mask, rle_counts
from semlayer.order import overlapping_pairs
from semlayer.scene import AmodalScene, AnnotationSet, Instance

DATA = Path(__file__).parent / "data"


def fixture(name):
    return json.loads((DATA / f"{name}.json").read_text())


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


BOX, BOARD = rect(8, 10, 1, 1, 5, 5), rect(8, 10, 3, 3, 9, 7)
BOARD_VISIBLE = BOARD & ~BOX


def error_of(obj, source="bad.json"):
    with pytest.raises(FormatError) as info:
        formats.from_dict(obj, source)
    return str(info.value)


def messages(obj):
    return [str(v) for v in formats.validate(obj)]


def assert_same_scenes(a, b):
    """Same scenes, instance by instance front to back: amodal and visible masks bit-exact, ranks, names,
    categories, unknown fields. (COCOA writes regions front-most first, so record order may change.)"""
    assert len(a) == len(b)
    for sa, sb in zip(a.scenes, b.scenes):
        assert sa.image == sb.image and len(sa) == len(sb)
        va, vb = sa.visible_masks(), sb.visible_masks()
        for i, j in zip(sa.front_to_back(), sb.front_to_back()):
            ia, ib = sa.instances[i], sb.instances[j]
            assert (ia.rank, ia.name, ia.is_stuff, ia.category, ia.score, ia.extra) == (
                ib.rank,
                ib.name,
                ib.is_stuff,
                ib.category,
                ib.score,
                ib.extra,
            )
            assert np.array_equal(ia.amodal, ib.amodal) and np.array_equal(va[i], vb[j])


# ----- the docs/formats.md toy scene in every format --------------------------------------------------------
@pytest.mark.parametrize(
    "name, fmt",
    [("cocoa_toy", "cocoa"), ("coco_toy", "coco"), ("kins2019_toy", "kins2019"), ("kins2020_toy", "kins2020")],
)
def test_toy_scene_in_every_format(name, fmt):
    annset = formats.load(DATA / f"{name}.json")
    assert annset.format == fmt and len(annset) == 1
    scene = annset.scenes[0]
    assert scene.image_id == 7 and scene.shape == (8, 10)
    assert scene.ranks() == [1, 2]
    assert np.array_equal(scene.instances[0].amodal, BOX) and np.array_equal(scene.instances[1].amodal, BOARD)
    visible = scene.visible_masks()
    assert np.array_equal(visible[0], BOX) and np.array_equal(visible[1], BOARD_VISIBLE)
    assert int(visible[1].sum()) == 20
    assert scene.occlude_rates() == [0.0, 1 / 6]
    assert all(inst.external is None for inst in scene.instances)
    assert formats.validate(DATA / f"{name}.json") == []


def test_cocoa_toy_fields():
    annset = formats.load(DATA / "cocoa_toy.json")
    scene = annset.scenes[0]
    assert [i.name for i in scene.instances] == ["box", "board"]
    assert [i.id for i in scene.instances] == [1, 2]
    assert scene.instances[0].polygons == [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]
    assert scene.annotation == {
        "id": 1,
        "image_id": 7,
        "author": "tool",
        "url": "",
        "size": 2,
        "depth_constraint": "1-2",
    }
    assert scene.image["date_captured"] == "" and annset.categories == [] and annset.images == []
    assert formats.to_cocoa(annset) == fixture("cocoa_toy")


def test_coco_toy_fields():
    annset = formats.load(DATA / "coco_toy.json")
    scene = annset.scenes[0]
    assert annset.categories == [{"id": 1, "name": "box"}, {"id": 2, "name": "board"}]
    assert [(i.id, i.category, i.name) for i in scene.instances] == [(1, 1, "box"), (2, 2, "board")]
    assert scene.instances[0].polygons is None  # RLE source
    assert scene.annotation == {"url": "", "image_id": 7, "size": 2, "author": "tool", "depth_constraint": "1-2"}


def test_kins_categories_and_names():
    k19 = formats.load(DATA / "kins2019_toy.json")
    assert [(i.category, i.name) for i in k19.scenes[0].instances] == [(2, "pedestrian"), (4, "car")]
    k20 = formats.load(DATA / "kins2020_toy.json")
    assert [(i.id, i.category, i.name) for i in k20.scenes[0].instances] == [(1, 4, "car"), (2, 4, "car")]
    assert k20.categories == [{"id": 4, "name": "car", "supercategory": "vehicles"}]


def test_kins2020_clusters_outrank_pixel_evidence():
    obj = fixture("kins2020_toy")
    # Cluster 1 says the board (ico 1) is in front although the visible masks say otherwise.
    obj["annotations"][0]["ico_id"], obj["annotations"][1]["ico_id"] = 2, 1
    assert formats.from_dict(obj).scenes[0].ranks() == [2, 1]
    # Different clusters: the masks decide (the box's visible mask covers 4 px of the board).
    obj["annotations"][1]["oco_id"] = 2
    assert formats.from_dict(obj).scenes[0].ranks() == [1, 2]
    # A third, non-overlapping instance in no cluster goes by record order among the unordered.
    third = copy.deepcopy(obj["annotations"][0])
    third.update(
        id=3,
        oco_id=0,
        ico_id=0,
        a_segm=[[0.0, 6.0, 2.0, 6.0, 2.0, 8.0, 0.0, 8.0]],
        i_segm=[[0.0, 6.0, 2.0, 6.0, 2.0, 8.0, 0.0, 8.0]],
    )
    obj["annotations"].insert(0, third)
    assert formats.from_dict(obj).scenes[0].ranks() == [1, 2, 3]


def test_results_list():
    annset = formats.load(DATA / "results_toy.json")
    assert annset.format == "results"
    scene = annset.scenes[0]
    assert scene.image == {"id": 7, "height": 8, "width": 10, "file_name": ""}
    assert scene.ranks() == [2, 1] and [i.score for i in scene.instances] == [0.75, 0.5]
    assert [int(v.sum()) for v in scene.visible_masks()] == [20, 16]
    assert formats.to_results(annset) == fixture("results_toy")
    # Without `order` and visible masks, the higher score goes in front.
    bare = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")} for r in fixture("results_toy")]
    bare[0]["score"], bare[1]["score"] = 0.2, 0.9
    assert formats.from_dict(bare).scenes[0].ranks() == [2, 1]


def test_detection_rules():
    assert formats.detect([]) == "results"
    assert formats.detect({"images": [], "annotations": []}) == "cocoa"
    assert formats.detect({"images": [], "annotations": [], "categories": []}) == "coco"
    assert formats.detect({"annotations": [{"id": 1}, {"regions": []}]}) == "cocoa"
    assert formats.detect({"annotations": [{"i_segm": []}]}) == "kins2020"
    assert formats.detect({"annotations": [{"inmodal_seg": {}}]}) == "kins2019"
    assert formats.detect({"annotations": [{"segmentation": []}]}) == "coco"
    with pytest.raises(
        FormatError,
        match=r"^x.json: a JSON object with images and annotations, or a list of "
        r"results; got the string 'hi'$",
    ):
        formats.detect("hi", "x.json")


# ----- BSDS quirks, unknown fields, several annotators ------------------------------------------------
def test_bsds_annotators_stay_separate_and_quirks_survive():
    src = fixture("bsds_toy")
    annset = formats.load(DATA / "bsds_toy.json")
    assert [s.image_id for s in annset.scenes] == [100, 100]
    assert [s.annotation["author"] for s in annset.scenes] == ["a", "b"]
    assert annset.scenes[1].annotation["comment"] == "second annotator"
    assert annset.scenes[0].image["license"] == "?" and annset.scenes[0].image["data_captured"] == "2016"
    assert [i.name for i in annset.scenes[0].instances] == ["sky ", "tree  ", "house"]
    assert [i.is_stuff for i in annset.scenes[0].instances] == [True, False, False]
    assert annset.scenes[0].instances[1].extra == {"attr": {"x": 1}}
    assert annset.scenes[0].occlude_rates() == [0.0, 0.25, 10 / 48]
    assert annset.scenes[1].ranks() == [1, 2] and annset.scenes[1].occlude_rates() == [0.0, 10 / 32]
    assert [im["id"] for im in annset.images] == [101]
    assert annset.extra == {"info": {"description": "BSDS amodal toy"}}
    assert formats.validate(src) == []
    assert formats.to_cocoa(annset) == src


def test_round_trips_cocoa_coco_cocoa_and_back():
    src = fixture("bsds_toy")
    annset = formats.from_dict(src)
    coco = formats.to_coco(annset)
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4, 5]  # per-scene region ids renumbered
    assert [a["amodal_base"]["id"] for a in coco["annotations"]] == [11, 11, 11, 12, 12]
    again = formats.from_dict(json.loads(json.dumps(coco)))
    assert again.format == "coco" and again.categories == []
    assert_same_scenes(annset, again)
    assert formats.to_cocoa(again) == src
    assert formats.validate(coco) == []
    # and back: COCO -> COCOA -> COCO
    coco_src = fixture("coco_toy")
    first = formats.from_dict(coco_src)
    back = formats.from_dict(formats.to_cocoa(first))
    assert back.categories == first.categories
    assert_same_scenes(first, back)
    assert formats.to_coco(formats.from_dict(formats.to_coco(back))) == formats.to_coco(back)


def test_kins_converts_to_cocoa_coco_and_kins():
    for name in ("kins2019_toy", "kins2020_toy"):
        annset = formats.load(DATA / f"{name}.json")
        for writer in (formats.to_cocoa, formats.to_coco, formats.to_kins):
            out = writer(annset)
            assert formats.validate(out) == []
            assert_same_scenes(annset, formats.from_dict(out))


def kins_scene():
    """A overlaps B and C (B and C do not meet), D overlaps only C, E is alone; F and G form a second cluster."""
    h, w = 20, 30
    boxes = {
        "A": (0, 0, 10, 10),
        "B": (8, 0, 14, 6),
        "C": (5, 8, 12, 14),
        "D": (10, 12, 16, 18),
        "E": (20, 15, 25, 19),
        "F": (20, 0, 25, 5),
        "G": (22, 3, 28, 8),
    }
    ranks = {"A": 1, "F": 2, "B": 3, "G": 4, "C": 5, "D": 6, "E": 7}
    insts = [Instance(k + 1, rect(h, w, *boxes[n]), rank=ranks[n], name="car", category=4) for k, n in enumerate(boxes)]
    return AnnotationSet(
        [AmodalScene({"id": 3, "height": h, "width": w, "file_name": "k.png"}, insts)],
        categories=[{"id": 4, "name": "car"}],
    )


def test_kins_clusters_from_overlaps_and_order():
    annset = kins_scene()
    # Clusters numbered by their front-most member (A rank 1, F rank 2); ico_id = 1 + the deepest overlapping
    # instance in front: B and C are each under A only (2), D under C (3); E overlaps nothing: (0, 0), as the
    # KINS README labels non-overlapping instances and the KINS 2020 files state them.
    assert formats.kins_clusters(annset.scenes[0]) == [(1, 1), (1, 2), (1, 2), (1, 3), (0, 0), (2, 1), (2, 2)]


def test_kins_writer_round_trip():
    annset = kins_scene()
    out = formats.to_kins(annset)
    assert formats.detect(out) == "kins2020" and formats.validate(out) == []
    ann = out["annotations"][3]  # D
    assert (ann["id"], ann["category_id"], ann["oco_id"], ann["ico_id"]) == (4, 4, 1, 3)
    assert ann["a_bbox"] == ann["bbox"] == [10.0, 12.0, 6.0, 6.0] and ann["a_area"] == ann["area"] == 36.0
    assert ann["i_area"] == 36.0 - 4.0 and ann["i_bbox"] == [10.0, 12.0, 6.0, 6.0]  # C hides 2x2 of it
    back = formats.from_dict(out)
    scene, again = annset.scenes[0], back.scenes[0]
    assert [i.id for i in again.instances] == [i.id for i in scene.instances]
    for a, b, va, vb in zip(scene.instances, again.instances, scene.visible_masks(), again.visible_masks()):
        assert (b.category, b.name) == (a.category, "car")
        assert np.array_equal(a.amodal, b.amodal) and np.array_equal(va, vb)
    # KINS keeps the order of overlapping instances (not of the others): every overlapping pair is the same.
    pairs = lambda s: sorted(overlapping_pairs(s.ranks(), [i.amodal for i in s.instances]))  # noqa: E731
    assert pairs(again) == pairs(scene)
    # pycocotools reads it as it is (the amodal copies), and KINS -> KINS is stable.
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(out)
        coco.createIndex()
    assert mask_utils.area(coco.annToRLE(coco.loadAnns([4])[0])) == 36
    assert formats.to_kins(back) == out


def test_kins_file_clusters_are_written_back_while_the_order_agrees_with_them():
    obj = fixture("kins2020_toy")
    obj["annotations"][0]["oco_id"] = obj["annotations"][1]["oco_id"] = 5  # not what kins_clusters would say
    obj["annotations"][1]["ico_id"] = 3
    annset = formats.from_dict(obj)
    assert [(a["oco_id"], a["ico_id"]) for a in formats.to_kins(annset)["annotations"]] == [(5, 1), (5, 3)]
    # Reordered against them (the board in front): derived anew from the scene.
    scene = annset.scenes[0]
    scene.instances[0].rank, scene.instances[1].rank = 2, 1
    assert [(a["oco_id"], a["ico_id"]) for a in formats.to_kins(annset)["annotations"]] == [(1, 2), (1, 1)]


def test_categories_without_an_entry_are_named_after_their_instances_when_they_agree():
    scene = kins_scene().scenes[0]
    scene.instances[0].category = 9
    assert formats.to_kins(AnnotationSet([scene]))["categories"] == [{"id": 4, "name": "car"}, {"id": 9, "name": "car"}]
    scene.instances[1].category, scene.instances[1].name = 9, "van"  # two names for id 9: no name to pick
    assert formats.to_coco(AnnotationSet([scene]))["categories"] == [{"id": 4, "name": "car"}, {"id": 9, "name": "9"}]


def test_kins_writer_refuses_several_scenes_per_image_and_converts_from_the_cli(tmp_path):
    toy = formats.load(DATA / "cocoa_toy.json")
    twice = AnnotationSet([toy.scenes[0], copy.deepcopy(toy.scenes[0])])
    with pytest.raises(ConfigError, match=r"KINS holds one annotation per image, but images \[7\]"):
        formats.to_kins(twice)
    from semlayer.cli import main

    out = tmp_path / "toy.kins.json"
    assert main(["convert", str(DATA / "cocoa_toy.json"), str(out), "--to", "kins"]) == 0
    kins = formats.load(out)
    assert kins.format == "kins2020"
    same_masks = [np.array_equal(a.amodal, b.amodal) for a, b in zip(toy.scenes[0].instances, kins.scenes[0].instances)]
    assert same_masks == [True, True] and kins.scenes[0].ranks() == toy.scenes[0].ranks()
    assert [a["oco_id"] for a in json.loads(out.read_text())["annotations"]] == [1, 1]


# ----- writers -----------------------------------------------------------------------------------------
def test_cocoa_writer_fields_for_edited_masks():
    scene = formats.load(DATA / "cocoa_toy.json").scenes[0]
    scene.instances[1].set_amodal(BOARD & ~rect(8, 10, 3, 3, 5, 5))  # the board becomes an L, no overlap
    region = formats.to_cocoa(AnnotationSet([scene]))["annotations"][0]["regions"][1]
    # traced along pixel edges, exact: no amodal_mask, no visible/invisible masks when unoccluded
    assert region == {
        "order": 2,
        "name": "board",
        "isStuff": 0,
        "area": 20,
        "occlude_rate": 0,
        "segmentation": [5.0, 3.0, 5.0, 5.0, 3.0, 5.0, 3.0, 7.0, 9.0, 7.0, 9.0, 3.0],
    }
    assert formats.to_cocoa(AnnotationSet([scene]))["annotations"][0]["depth_constraint"] == ""


def test_multi_part_region_survives_every_round_trip():
    h, w = 12, 14
    parts = rect(h, w, 1, 1, 4, 4) | rect(h, w, 6, 2, 12, 9)
    parts[4:6, 8:10] = False  # a hole in the larger part
    scene = AmodalScene(
        {"id": 3, "height": h, "width": w, "file_name": "p.png"},
        [Instance(1, parts, rank=2, name="pair"), Instance(2, rect(h, w, 0, 0, 3, 3), rank=1)],
    )
    annset = AnnotationSet([scene])
    cocoa = formats.to_cocoa(annset)
    region = cocoa["annotations"][0]["regions"][1]
    # public loaders get a valid flat polygon (the larger part's outline); the exact mask rides along
    assert region["segmentation"] == [6.0, 2.0, 6.0, 9.0, 12.0, 9.0, 12.0, 2.0]
    exact = {"size": [h, w], "counts": region["amodal_mask"]["counts"].encode()}
    assert np.array_equal(mask_utils.decode(exact).astype(bool), parts)
    assert region["area"] == 47 and region["occlude_rate"] == 4 / 47
    assert formats.validate(cocoa) == []
    for obj in (
        cocoa,
        formats.to_coco(annset),
        formats.to_coco(formats.from_dict(cocoa)),
        formats.to_cocoa(formats.from_dict(formats.to_coco(annset))),
    ):
        assert_same_scenes(annset, formats.from_dict(json.loads(json.dumps(obj))))
    assert formats.to_cocoa(formats.from_dict(cocoa)) == cocoa


def test_polygon_source_kept_in_coco_rle_after_edit():
    annset = formats.from_dict(fixture("cocoa_toy"))
    coco = formats.to_coco(annset)
    assert coco["annotations"][1]["segmentation"] == [[3.0, 3.0, 9.0, 3.0, 9.0, 7.0, 3.0, 7.0]]
    annset.scenes[0].instances[1].set_amodal(BOARD | rect(8, 10, 0, 7, 2, 8))
    seg = formats.to_coco(annset)["annotations"][1]["segmentation"]
    assert seg == encode_rle(BOARD | rect(8, 10, 0, 7, 2, 8))


def test_external_occlusion_and_predictions_round_trip():
    annset = formats.from_dict(fixture("cocoa_toy"))
    scene = annset.scenes[0]
    corner = rect(8, 10, 7, 5, 9, 7)  # bottom-right of the board hidden by something unannotated
    scene.set_visible([BOX, BOARD_VISIBLE & ~corner])
    scene.instances[0].score = 0.9
    cocoa = formats.to_cocoa(annset)
    assert cocoa["annotations"][0]["regions"][0]["score"] == 0.9
    assert cocoa["annotations"][0]["regions"][1]["occlude_rate"] == 8 / 24
    for obj in (cocoa, formats.to_coco(annset)):
        back = formats.from_dict(obj)
        assert_same_scenes(annset, back)
        assert back.scenes[0].instances[0].score == 0.9
    # hidden pixels no region in front covers are external occlusion: valid, and noted
    for obj, path in ((cocoa, "annotations[0].regions[1]"), (formats.to_coco(annset), "annotations[1]")):
        report = formats.validation_report(obj)
        assert report.violations == [] and report.valid
        assert report.external == [(path, 4)]
        assert report.notes == [
            f"1 region with external occlusion (hidden by unannotated objects, 4 px in all): {path} (4 px)"
        ]


def test_results_writer_and_class_agnostic_categories():
    annset = formats.from_dict(fixture("cocoa_toy"))
    results = formats.to_results(annset)
    assert [(r["category_id"], r["score"], r["order"], r["area"], r["occlude_rate"]) for r in results] == [
        (1, 1.0, 1, 1.0, 0.0),
        (1, 1.0, 2, 20 / 24, 4 / 24),
    ]
    assert results[1]["visible_mask"] == {"size": [8, 10], "counts": "m0260N20000005"}
    # instances without category next to categorised ones get a fresh "object" category
    mixed = formats.from_dict(fixture("coco_toy"))
    mixed.scenes[0].instances[0].category = None
    coco = formats.to_coco(mixed)
    assert coco["categories"][-1] == {"id": 3, "name": "object"} and coco["annotations"][0]["category_id"] == 3


def test_pycocotools_reads_coco_output_and_scores_it_at_ap_1():
    annset = formats.from_dict(fixture("bsds_toy"))
    annset.scenes.extend(formats.from_dict(fixture("cocoa_toy")).scenes)
    # one scene per image for COCO evaluation
    annset.scenes = [annset.scenes[0], annset.scenes[2]]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = formats.to_coco(annset)
        gt.createIndex()
        dt = gt.loadRes(formats.to_results(annset))
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(gt.getAnnIds()) == 5 and sorted(gt.getImgIds()) == [7, 100, 101]
    assert ev.stats[0] == pytest.approx(1.0)


def test_save_and_load(tmp_path):
    annset = formats.load(DATA / "bsds_toy.json")
    for fmt in ("cocoa", "coco", "results"):
        formats.save(annset, tmp_path / f"out_{fmt}.json", format=fmt)
        assert formats.load(tmp_path / f"out_{fmt}.json").format == fmt
    assert json.loads((tmp_path / "out_cocoa.json").read_text()) == fixture("bsds_toy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_coco.json", "out_cocoa.json", "out_results.json"]
    with pytest.raises(ConfigError, match="format must be one of cocoa, coco, kins, results, got 'kins2020'"):
        formats.save(annset, tmp_path / "x.json", format="kins2020")
    # BSDS has several annotators per image, which KINS cannot hold: refused, and nothing is written.
    with pytest.raises(ConfigError, match="KINS holds one annotation per image"):
        formats.save(annset, tmp_path / "x.json", format="kins")
    assert not (tmp_path / "x.json").exists()


def test_image_ids_limits_what_is_decoded():
    obj = fixture("bsds_toy")
    obj["annotations"][1]["image_id"] = 101
    obj["annotations"][1]["regions"][0]["segmentation"] = [1, 2, 3]  # broken, but not selected
    annset = formats.from_dict(obj, image_ids=[100])
    assert [s.image_id for s in annset.scenes] == [100] and annset.images == []
    with pytest.raises(FormatError, match=r"annotations\[1\]\.regions\[0\]\.segmentation"):
        formats.from_dict(obj, image_ids=[101])


# ----- masks -------------------------------------------------------------------------------------------
def test_mask_helpers():
    assert rle_counts("k0260U1").tolist() == [27, 2, 6, 2, 43] and rle_counts("k026").tolist() == [27, 2, 6]
    assert rle_counts("k0260U") is None  # cut off inside a number
    assert rle_counts("o") is None and rle_counts("~") is None and rle_counts("1?").tolist() == [1, 15]
    assert mask_to_polygon(np.zeros((3, 3), bool)) is None
    assert mask_to_polygon(BOX) == [1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 1.0]
    assert np.array_equal(polygons_to_mask([mask_to_polygon(BOX)], 8, 10), BOX)
    rng = np.random.default_rng(0)
    for _ in range(50):  # a random blob without holes or diagonal-only contacts traces exactly
        m = np.zeros((9, 11), bool)
        for _ in range(3):
            x, y = rng.integers(0, 9), rng.integers(0, 7)
            m[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
        from scipy import ndimage

        labels, n = ndimage.label(m)
        part = labels == 1 + np.argmax(ndimage.sum(m, labels, range(1, n + 1)))
        part = ndimage.binary_fill_holes(part)
        assert np.array_equal(polygons_to_mask([mask_to_polygon(part)], 9, 11), part)


# ----- bad input ---------------------------------------------------------------------------------------
def test_unreadable_files(tmp_path):
    cases = {
        "empty.json": ("", "a JSON document, got an empty file"),
        "blank.json": ("  \n", "a JSON document, got an empty file"),
        "cut.json": (
            '{"images": [{"id": 7,\n "height": 8',
            "complete, valid JSON; Expecting ',' delimiter at line 2, column 13",
        ),
        "text.json": ("hello", "complete, valid JSON; Expecting value at line 1, column 1"),
        "number.json": ("42", "a JSON object with images and annotations, or a list of results; got the number 42"),
        "latin1.json": (b'{"a": "\xe9"}', "UTF-8 encoded JSON (invalid continuation byte at byte 7)"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        for reader in (formats.load, formats.validate):
            with pytest.raises(FormatError) as info:
                reader(path)
            assert str(info.value) == f"{path}: {expected}"
    with pytest.raises(FormatError, match=r"missing.json: a readable file \(No such file or directory\)"):
        formats.load(tmp_path / "missing.json")


def bad_cocoa(edit):
    obj = fixture("cocoa_toy")
    edit(obj)
    return obj


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda o: o["annotations"][0]["regions"][1].update(
                visible_mask={"size": [10, 8], "counts": "m0260N20000005"}
            ),
            "annotations[0].regions[1].visible_mask.size: [8, 10] (the image's height and width), got [10, 8]",
        ),
        (
            lambda o: o["annotations"][0]["regions"][1]["segmentation"].append(4.0),
            "annotations[0].regions[1].segmentation: a flat list of an even number (>= 6) of numbers, got a list of 9 numbers",
        ),
        (
            lambda o: o["annotations"][0]["regions"][0].update(segmentation=[[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]),
            "annotations[0].regions[0].segmentation: a flat list of an even number (>= 6) of numbers, got a list of 1 items",
        ),
        (
            lambda o: o["annotations"][0]["regions"][0].update(order=0),
            "annotations[0].regions[0].order: an integer >= 1 (the depth rank, 1 = front-most), got the number 0",
        ),
        (
            lambda o: o["annotations"][0]["regions"][0].pop("order"),
            "annotations[0].regions[0].order: an integer >= 1 (the depth rank, 1 = front-most) (the key is missing)",
        ),
        (lambda o: o["images"].append(dict(o["images"][0])), "images[1].id: a unique image id; images[0] has id 7 too"),
        (
            lambda o: o["annotations"].append(copy.deepcopy(o["annotations"][0])),
            "annotations[1].id: a unique id; annotations[0] has id 1 too",
        ),
        (
            lambda o: o["annotations"][0].update(image_id=9),
            "annotations[0].image_id: the id of an entry in images; there is no image with id 9",
        ),
        (
            lambda o: o["annotations"][0]["regions"][1]["invisible_mask"].update(counts="k026"),
            "annotations[0].regions[1].invisible_mask.counts: runs that add up to 8 x 10 = 80 pixels, got 35",
        ),
        (
            lambda o: o["annotations"][0]["regions"][1]["invisible_mask"].update(counts="k0260U~"),
            "annotations[0].regions[1].invisible_mask.counts: a COCO compressed RLE string",
        ),
        (
            lambda o: o["annotations"][0]["regions"][0]["segmentation"].__setitem__(0, 1e9),
            "annotations[0].regions[0].segmentation: polygon points with x in [-10, 20] and y in [-8, 16] "
            "(the 8 x 10 image and one image size around it)",
        ),
        (
            lambda o: o["annotations"][0]["regions"][0]["segmentation"].__setitem__(1, 10**400),
            "annotations[0].regions[0].segmentation: polygon points with x in [-10, 20] and y in [-8, 16] "
            "(the 8 x 10 image and one image size around it)",
        ),
        (
            lambda o: o["annotations"][0]["regions"][1]["visible_mask"].update(counts=[10**400]),
            "annotations[0].regions[1].visible_mask.counts: a COCO RLE string or a list of run lengths (integers from 0 "
            "to 80), got a list of 1 items",
        ),
        (
            lambda o: o["images"][0].update(height="8"),
            "images[0].height: an integer from 1 to 65535, got the string '8'",
        ),
        (lambda o: o.pop("images"), "images: a list of objects (the key is missing)"),
        (
            lambda o: o["annotations"][0]["regions"].__setitem__(0, "box"),
            "annotations[0].regions[0]: an object, got the string 'box'",
        ),
    ],
)
def test_bad_cocoa_input_has_a_precise_error(edit, expected):
    obj = bad_cocoa(edit)
    assert error_of(obj) == f"bad.json: {expected}"
    assert messages(obj) == [expected]  # validate reports the same, as one violation


@pytest.mark.parametrize(
    "name, edit, expected",
    [
        (
            "coco_toy",
            lambda o: o["annotations"][0].update(category_id=5),
            "annotations[0].category_id: the id of an entry in categories; there is no category with id 5",
        ),
        (
            "coco_toy",
            lambda o: o["annotations"][1].update(visible_mask=[3.0, 3.0, 9.0]),
            "annotations[1].visible_mask: a flat list of an even number (>= 6) of numbers, got a list of 3 numbers",
        ),
        (
            "coco_toy",
            lambda o: o["annotations"][1].update(segmentation={"size": [8, 10], "counts": [27, 2, 6]}),
            "annotations[1].segmentation.counts: runs that add up to 8 x 10 = 80 pixels, got 35",
        ),
        (
            "coco_toy",
            lambda o: o["annotations"][1]["amodal_region"].update(order=0),
            "annotations[1].amodal_region.order: an integer >= 1 (the depth rank, 1 = front-most), got the number 0",
        ),
        (
            "coco_toy",
            lambda o: o["annotations"][1].update(iscrowd=2),
            "annotations[1].iscrowd: 0 or 1 (or a boolean), got the number 2",
        ),
        (
            "kins2019_toy",
            lambda o: o["annotations"][1].pop("inmodal_seg"),
            "annotations[1].inmodal_seg: a COCO RLE {size, counts} or a list of polygons (the key is missing)",
        ),
        (
            "kins2020_toy",
            lambda o: o["annotations"][1].update(oco_id=-1),
            "annotations[1].oco_id: an integer >= 0 (0 = overlaps nothing), got the number -1",
        ),
        (
            "kins2020_toy",
            lambda o: o["annotations"][1].update(a_segm=[]),
            "annotations[1].a_segm: a COCO RLE {size, counts} or a non-empty list of polygons (a flat list of an even "
            "number (>= 6) of numbers each), got a list of 0 items",
        ),
        (
            "results_toy",
            lambda o: o[1].update(segmentation=[[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]),
            "[1].segmentation: a COCO RLE {size, counts} (a results list has no image sizes, so masks must be RLE), "
            "got a list of 1 items",
        ),
        (
            "results_toy",
            lambda o: o[1]["segmentation"].update(size=[8, 11]),
            "[1].segmentation.size: [8, 10] (the image's height and width), got [8, 11]",
        ),
        ("results_toy", lambda o: o[0].pop("score"), "[0].score: a number (the detection score) (the key is missing)"),
    ],
)
def test_bad_input_in_other_formats(name, edit, expected):
    obj = fixture(name)
    edit(obj)
    assert error_of(obj) == f"bad.json: {expected}"
    assert messages(obj) == [expected]


def test_kins_and_coco_duplicates_and_missing_images():
    obj = fixture("kins2020_toy")
    obj["annotations"][1]["id"] = 1
    obj["annotations"][0]["image_id"] = 8
    assert messages(obj) == [
        "annotations[1].id: a unique id; annotations[0] has id 1 too",
        "annotations[0].image_id: the id of an entry in images; there is no image with id 8",
    ]
    assert error_of(obj) == "bad.json: annotations[1].id: a unique id; annotations[0] has id 1 too"


# ----- validate: consistency ---------------------------------------------------------------------------
def test_validate_reports_every_invariant():
    obj = fixture("bsds_toy")
    first, second = obj["annotations"]
    first["regions"][1]["occlude_rate"] = 0.3  # occlude_rate off
    first["regions"][2]["visible_mask"] = encode_rle(rect(12, 14, 4, 5, 12, 11))  # overlaps the invisible part
    second["regions"][1]["order"] = 1  # duplicate order
    second["depth_constraint"] = "1-2,2-3,3-1,2-1"
    assert messages(obj) == [
        "annotations[0].regions[1].occlude_rate: 0.25 (invisible 8 px / amodal 32 px), got 0.3",
        "annotations[0].regions[2]: visible_mask and invisible_mask that partition the amodal mask; 10 px in both",
        "annotations[0].regions[2].visible_mask: no visible pixel under the amodal mask of a region in front "
        "(painter's rule); 10 px visible under annotations[0].regions[1] (order 2)",
        "annotations[1].regions[1].order: an order unique within the annotation; annotations[1].regions[0] has "
        "order 1 too",
        "annotations[1].depth_constraint: pairs of existing region orders; 1-2 names order 2, which no region has",
        "annotations[1].depth_constraint: pairs of existing region orders; 2-3 names order 2, which no region has",
        "annotations[1].depth_constraint: pairs of existing region orders; 3-1 names order 3, which no region has",
        "annotations[1].depth_constraint: pairs of existing region orders; 2-1 names order 2, which no region has",
        "annotations[1].depth_constraint: pairs without a cycle; 1-2, 2-1 form a cycle",
    ]
    # with equal orders nothing is in front of the tree: the 10 px its file hides are external occlusion
    assert formats.validation_report(obj).external == [("annotations[1].regions[1]", 10)]
    # the reader still loads it: orders are renumbered, the constraint kept verbatim
    annset = formats.from_dict(obj)
    assert annset.scenes[1].ranks() == [1, 2] and annset.scenes[1].annotation["depth_constraint"] == "1-2,2-3,3-1,2-1"


def test_validate_depth_constraint_contradiction_and_syntax():
    obj = fixture("cocoa_toy")
    obj["annotations"][0]["depth_constraint"] = "2-1"
    assert messages(obj) == [
        "annotations[0].depth_constraint: pairs that agree with the regions' orders; 2-1 puts order 2 in front of order 1"
    ]
    obj["annotations"][0]["depth_constraint"] = "1-2,2-1"
    assert messages(obj)[-1] == "annotations[0].depth_constraint: pairs without a cycle; 1-2, 2-1 form a cycle"
    obj["annotations"][0]["depth_constraint"] = "1>2"
    assert messages(obj) == [
        "annotations[0].depth_constraint: comma-separated pairs 'A-B' of region orders; depth "
        "constraint '1>2' is not of the form 'A-B' with integers A and B"
    ]


def test_validate_collects_schema_problems_across_records():
    obj = fixture("bsds_toy")
    obj["annotations"][0]["regions"][0]["segmentation"] = [1, 2, 3, 4, 5]
    obj["annotations"][0]["regions"][2]["isStuff"] = "no"
    obj["annotations"][1]["image_id"] = 55
    obj["images"][1]["width"] = 0
    assert [str(v) for v in formats.validate(obj)] == [
        "images[1].width: an integer from 1 to 65535, got the number 0",
        "annotations[0].regions[0].segmentation: a flat list of an even number (>= 6) of numbers, got a list of 5 numbers",
        "annotations[0].regions[2].isStuff: 0 or 1, got the string 'no'",
        "annotations[1].image_id: the id of an entry in images; there is no image with id 55",
    ]
    v = formats.validate(obj)[0]
    assert v == Violation("images[1].width", "an integer from 1 to 65535, got the number 0")


def test_validate_coco_style_invariants():
    obj = fixture("coco_toy")
    obj["annotations"][0]["amodal_region"] = {"name": "box", "order": 1}
    obj["annotations"][1]["visible_mask"] = encode_rle(BOARD)
    obj["annotations"][1].pop("invisible_mask")
    assert messages(obj) == [
        "annotations[1].occlude_rate: 0.0 (invisible 0 px / amodal 24 px), got 0.16666666666666666",
        "annotations[1].visible_mask: no visible pixel under the amodal mask of a region in front (painter's rule); "
        "4 px visible under annotations[0] (order 1)",
    ]
    obj["annotations"][1]["visible_mask"] = encode_rle(BOARD_VISIBLE | rect(8, 10, 0, 0, 1, 1))
    assert messages(obj)[0] == "annotations[1].visible_mask: a mask inside the amodal mask; 1 px outside"


CORNER = rect(8, 10, 7, 5, 9, 7)  # bottom-right of the board, hidden by something unannotated


def with_board_masks(obj, visible, invisible=..., rate=..., where=lambda obj: obj["annotations"][0]["regions"][1]):
    """The toy file with the board's visible mask (and invisible mask, occlude_rate: by default consistent
    with it; None drops the key) replaced."""
    obj = copy.deepcopy(obj)
    board = where(obj)
    invisible = BOARD & ~visible if invisible is ... else invisible
    rate = int((BOARD & ~visible).sum()) / 24 if rate is ... else rate
    for key, value in (("visible_mask", visible), ("invisible_mask", invisible), ("occlude_rate", rate)):
        board.pop(key, None)
        if value is not None:
            board[key] = encode_rle(value) if isinstance(value, np.ndarray) else value
    return obj


def test_validate_accepts_external_occlusion_in_cocoa_and_coco_style_files():
    coco_board = lambda obj: obj["annotations"][1]  # noqa: E731
    coco = fixture("coco_toy")
    coco["annotations"][0]["amodal_region"] = {"name": "box", "order": 1}  # authoritative orders: rule checked
    for obj, where, path in (
        (fixture("cocoa_toy"), None, "annotations[0].regions[1]"),
        (coco, coco_board, "annotations[1]"),
    ):
        kw = {} if where is None else {"where": where}
        ext = with_board_masks(obj, BOARD_VISIBLE & ~CORNER, **kw)
        report = formats.validation_report(ext)
        assert report.violations == [] and report.external == [(path, 4)]
        scene = formats.from_dict(ext).scenes[0]
        np.testing.assert_array_equal(scene.instances[1].external, CORNER)
        np.testing.assert_array_equal(scene.visible(2), BOARD_VISIBLE & ~CORNER)
        # occlude_rate and invisible_mask still have to agree with the visible mask, external pixels included
        assert messages(with_board_masks(obj, BOARD_VISIBLE & ~CORNER, rate=4 / 24, **kw)) == [
            f"{path}.occlude_rate: 0.3333333333333333 (invisible 8 px / amodal 24 px), got 0.16666666666666666"
        ]
        assert messages(with_board_masks(obj, BOARD_VISIBLE & ~CORNER, invisible=BOARD & BOX, **kw)) == [
            f"{path}: visible_mask and invisible_mask that partition the amodal mask; 4 px of the amodal mask in "
            "neither",
            f"{path}.occlude_rate: 0.16666666666666666 (invisible 4 px / amodal 24 px), got 0.3333333333333333",
        ]
    backwards = with_board_masks(coco, BOARD_VISIBLE & ~CORNER, where=coco_board)
    backwards["annotations"].reverse()  # record order is not depth order
    assert formats.validation_report(backwards).external == [("annotations[0]", 4)]
    backwards["annotations"][0]["visible_mask"] = encode_rle(BOARD)
    assert messages(backwards)[-1] == (
        "annotations[0].visible_mask: no visible pixel under the amodal mask of a "
        "region in front (painter's rule); 4 px visible under annotations[1] (order 1)"
    )
    # orders inferred from the masks (no amodal_region.order): the rule is not checked, nothing is noted
    assert (
        formats.validation_report(
            with_board_masks(fixture("coco_toy"), BOARD_VISIBLE & ~CORNER, where=coco_board)
        ).external
        == []
    )


def test_validate_reports_visible_pixels_under_a_region_in_front():
    toy = fixture("cocoa_toy")
    # the board's visible mask claims the 4 px the box in front covers
    assert messages(with_board_masks(toy, BOARD, invisible=None, rate=0)) == [
        "annotations[0].regions[1].visible_mask: no visible pixel under the amodal mask of a region in front "
        "(painter's rule); 4 px visible under annotations[0].regions[0] (order 1)"
    ]
    # ... stated by an invisible mask alone (only the corner), or by no mask at all (fully visible)
    assert messages(with_board_masks(toy, None, invisible=CORNER, rate=4 / 24)) == [
        "annotations[0].regions[1].invisible_mask: every pixel of the amodal mask that a region in front covers "
        "(painter's rule); 4 px missing, under annotations[0].regions[0] (order 1)"
    ]
    assert messages(with_board_masks(toy, None, invisible=None, rate=0)) == [
        "annotations[0].regions[1]: a visible_mask or invisible_mask (painter's rule); without either the region is "
        "fully visible, but 4 px of its amodal mask lie under annotations[0].regions[0] (order 1)"
    ]
    # under two regions in front: each is named with its share
    strip = rect(8, 10, 0, 3, 10, 5)
    scene = AmodalScene(
        {"id": 7, "height": 8, "width": 10, "file_name": "toy.jpg"},
        [Instance(1, BOX, rank=1), Instance(2, BOARD, rank=2), Instance(3, strip, rank=3)],
    )
    obj = formats.to_cocoa(AnnotationSet([scene]))
    assert formats.validate(obj) == []
    obj["annotations"][0]["regions"][2]["visible_mask"] = encode_rle(strip)
    assert messages(obj)[-1] == (
        "annotations[0].regions[2].visible_mask: no visible pixel under the amodal mask of a region in front "
        "(painter's rule); 16 px visible under annotations[0].regions[0] (order 1, 8 px), annotations[0].regions[1] "
        "(order 2, 12 px)"
    )


def test_external_occlusion_note_names_the_first_regions_and_counts_the_rest():
    report = formats.ValidationReport(external=[(f"annotations[{i}].regions[1]", i + 1) for i in range(7)])
    assert report.valid and report.notes == [
        "7 regions with external occlusion (hidden by unannotated objects, 28 px in all): annotations[0].regions[1] "
        "(1 px), annotations[1].regions[1] (2 px), annotations[2].regions[1] (3 px), annotations[3].regions[1] (4 px), "
        "annotations[4].regions[1] (5 px) and 2 more"
    ]
    assert formats.ValidationReport().notes == []


def test_degenerate_polygons_inside_a_list_are_kept_but_not_rasterised():
    # Real COCO-style files contain 1- and 2-point polygons next to real ones; pycocotools would read a
    # 4-number polygon as a box, detectron2 drops them. We skip them for the mask and keep them for writing.
    obj = fixture("coco_toy")
    obj["annotations"][1]["segmentation"] = [[3.0, 3.0, 9.0, 3.0, 9.0, 7.0, 3.0, 7.0], [0.0, 0.0, 2.0, 2.0]]
    scene = formats.from_dict(obj, "d2sa.json").scenes[0]
    board = scene.instances[1]
    assert np.array_equal(board.amodal, BOARD)
    assert board.polygons[1] == [0.0, 0.0, 2.0, 2.0]
    assert (
        formats.to_coco(formats.from_dict(obj))["annotations"][1]["segmentation"]
        == obj["annotations"][1]["segmentation"]
    )
    obj["annotations"][1]["segmentation"] = [[0.0, 0.0, 2.0, 2.0]]
    assert error_of(obj) == (
        "bad.json: annotations[1].segmentation: at least one polygon of 3 or more points "
        "(a flat list of an even number (>= 6) of numbers)"
    )


# ----- compact loading (whole datasets) ----------------------------------------------------------
def assert_identical_scenes(dense, compact):
    assert len(compact) == len(dense)
    for a, b in zip(dense, compact):
        assert (a.image, a.annotation) == (b.image, b.annotation)
        for ia, ib in zip(a.instances, b.instances, strict=True):
            for key in ("id", "rank", "name", "category", "is_stuff", "score", "polygons", "extra"):
                assert getattr(ia, key) == getattr(ib, key), key
            assert np.array_equal(ia.amodal, ib.amodal)
            assert (ia.external is None and ib.external is None) or np.array_equal(ia.external, ib.external)
        for va, vb in zip(a.visible_masks(), b.visible_masks(), strict=True):
            assert np.array_equal(va, vb)


@pytest.mark.parametrize(
    "name", ["cocoa_toy", "bsds_toy", "coco_toy", "d2sa_toy", "kins2019_toy", "kins2020_toy", "results_toy"]
)
def test_compact_load_decodes_the_scenes_load_gives(name):
    dense, compact = formats.load(DATA / f"{name}.json"), formats.load(DATA / f"{name}.json", compact=True)
    assert isinstance(compact.scenes, formats.CompactScenes)
    assert (compact.format, compact.categories, compact.extra, compact.images) == (
        dense.format,
        dense.categories,
        dense.extra,
        dense.images,
    )
    assert_identical_scenes(dense.scenes, compact.scenes)
    assert compact.scene_images() == dense.scene_images() == [s.image for s in dense.scenes]
    assert compact.image_records() == dense.image_records()
    assert compact.num_instances() == dense.num_instances() == sum(len(s) for s in dense.scenes)
    has_categories = any(i.category is not None for s in dense.scenes for i in s.instances)
    assert compact.has_instance_categories() == dense.has_instance_categories() == has_categories
    # Writing a compactly loaded set gives the same file.
    assert formats.to_cocoa(compact) == formats.to_cocoa(dense)


def test_whether_a_compact_set_has_categories_is_known_without_decoding_it(monkeypatch):
    from semlayer.formats import compact as compact_module

    plain = formats.load(DATA / "cocoa_toy.json", compact=True)  # COCOA: no categories anywhere
    with_categories = formats.load(DATA / "coco_toy.json", compact=True)
    decoded = []
    monkeypatch.setattr(compact_module, "_scene", lambda data: decoded.append(data))
    assert not plain.has_instance_categories() and with_categories.has_instance_categories()
    assert decoded == []


def test_compact_scenes_index_like_a_list_and_hand_out_fresh_scenes():
    dense = formats.load(DATA / "bsds_toy.json").scenes
    scenes = formats.CompactScenes(dense)
    assert_identical_scenes(dense[::-1], scenes[::-1])
    assert_identical_scenes(dense[-1:], [scenes[-1]])
    with pytest.raises(IndexError, match="scene index 2 out of range for 2 scenes"):
        scenes[2]
    first = scenes[0]
    first.instances[0].amodal[:] = False  # the caller's copy: the stored scene is unchanged
    assert np.array_equal(scenes[0].instances[0].amodal, dense[0].instances[0].amodal)
    assert len(formats.CompactScenes([])) == 0


def test_compact_scenes_hold_a_fraction_of_the_dense_masks_and_pickle_small():
    import pickle

    from semlayer.synth import generate

    dense = [scene for _, scene in generate(20, seed=3, size=256)]
    compact = formats.CompactScenes(dense)
    masks = sum(2 * inst.amodal.nbytes for s in dense for inst in s.instances)  # amodal + external/visible
    assert compact.nbytes < masks / 20
    # A DataLoader worker gets the buffer and the small image records, annotation headers and instance
    # ids and names, not mask objects.
    assert len(pickle.dumps(compact)) < compact.nbytes + 200 * len(compact)
    assert_identical_scenes(dense, pickle.loads(pickle.dumps(compact)))


def test_compact_load_still_reports_a_bad_record_with_its_path(tmp_path):
    obj = fixture("cocoa_toy")
    obj["annotations"][-1]["regions"][0]["segmentation"] = [1, 2, 3]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    n = len(obj["annotations"]) - 1
    with pytest.raises(FormatError, match=rf"^{path}: annotations\[{n}\]\.regions\[0\]\.segmentation"):
        formats.load(path, compact=True)


# ----- what COCOA's own tools expect ------------------------------------------------------------
def test_results_read_cocoa_evaluators_camel_case_masks():
    amodal = encode_rle(BOARD)
    item = {
        "image_id": 7,
        "segmentation": {"size": [8, 10], "counts": "k0440000000005"},
        "score": 0.8,
        "amodalMask": amodal,
        "invisibleMask": encode_rle(BOARD & BOX),
    }
    scene = formats.from_dict([item], "r.json").scenes[0]
    inst = scene.instances[0]
    assert np.array_equal(inst.amodal, BOARD)  # amodalMask wins over segmentation
    assert np.array_equal(scene.visible_masks()[0], BOARD_VISIBLE) and inst.extra == {}
    with pytest.raises(FormatError, match=r"^r.json: \[0\]\.invisibleMask\.size: \[8, 10\]"):
        formats.from_dict([{**item, "invisibleMask": encode_rle(np.zeros((4, 4), bool))}], "r.json")


def test_results_give_every_image_a_result_and_read_placeholders_as_empty_scenes():
    found = AmodalScene({"id": 7, "height": 8, "width": 10}, [Instance(1, BOX, score=0.5)])
    nothing = AmodalScene({"id": 8, "height": 8, "width": 10}, [])
    annset = AnnotationSet([found, nothing], images=[{"id": 9, "height": 6, "width": 4, "file_name": "x.png"}])
    items = formats.to_results(annset)
    assert [(r["image_id"], r["score"]) for r in items] == [(7, 0.5), (8, 0.0), (9, 0.0)]
    assert mask_utils.area(items[2]["segmentation"]) == 0 and items[2]["segmentation"]["size"] == [6, 4]
    again = formats.from_dict(items, "r.json")
    assert [(s.image_id, s.shape, len(s)) for s in again.scenes] == [(7, (8, 10), 1), (8, (8, 10), 0), (9, (6, 4), 0)]
    assert formats.to_results(again) == items


def test_cocoa_writes_an_empty_mask_as_a_zero_area_flat_polygon():
    scene = AmodalScene(
        {"id": 7, "height": 8, "width": 10}, [Instance(1, BOX), Instance(2, np.zeros((8, 10), bool), rank=2)]
    )
    region = formats.to_cocoa(AnnotationSet([scene]))["annotations"][0]["regions"][1]
    assert region["segmentation"] == [0.0] * 6 and region["area"] == 0 and "amodal_mask" not in region
    assert mask_utils.area(mask_utils.frPyObjects([region["segmentation"]], 8, 10)).tolist() == [0]  # public loaders
    again = formats.from_dict(formats.to_cocoa(AnnotationSet([scene])), "c.json").scenes[0]
    assert not again.instances[1].amodal.any()


def test_kins_visible_pixels_under_an_instance_in_front_are_noted_not_lost_silently():
    obj = fixture("kins2020_toy")
    assert formats.validation_report(obj).notes == []
    obj["annotations"][1]["i_segm"] = [[4, 3, 9, 3, 9, 7, 3, 7, 3, 5, 4, 5]]  # 2 px more, under the box in front
    report = formats.validation_report(obj)
    assert report.valid and report.clipped == [("annotations[1]", 2)]
    assert report.notes == [
        "1 region whose visible mask reaches under an instance in front (2 px in all; read as "
        "hidden, by the painter's rule under the order inferred from the masks): annotations[1] "
        "(2 px)"
    ]
    assert int(formats.from_dict(obj).scenes[0].visible_masks()[1].sum()) == 20


def test_tied_occl_depth_is_ordered_by_the_masks_so_stated_visible_masks_survive():
    # D2SA-style: both objects at occl_depth 0, the board listed first. Record order would put the board in
    # front and clip the 4 px of the box's stated visible mask that lie on it; the masks say the box is in front.
    obj = fixture("coco_toy")
    for ann in obj["annotations"]:
        ann.pop("amodal_region", None)
        ann["occl_depth"] = 0
    obj["annotations"].reverse()
    scene = formats.from_dict(obj, "d2sa.json").scenes[0]
    assert [i.id for i in scene.instances] == [2, 1] and scene.ranks() == [2, 1]
    stated = formats.from_dict(fixture("coco_toy")).scenes[0]
    assert np.array_equal(scene.visible(1), stated.visible(1)) and np.array_equal(scene.visible(2), stated.visible(2))
    # occl_depth never outweighs the masks' evidence (its direction is not documented): the board at -1 stays
    # behind the box, as its stated visible mask says.
    obj["annotations"][0]["occl_depth"] = -1
    assert formats.from_dict(obj, "d2sa.json").scenes[0].ranks() == [2, 1]


# ----- the datasets as their authors wrote them (tests/data/README.md: where each layout comes from) ----------
def coco_eval(gt_path, dt_path):
    """pycocotools as users run it: ``COCO(file)``, ``loadRes(file)``, ``COCOeval(..., 'segm')``."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("fmt", ["coco", "kins"])
@pytest.mark.parametrize("name", ["cocoa_toy", "coco_toy", "kins2019_toy", "kins2020_toy", "d2sa_toy"])
def test_every_coco_family_file_we_write_evaluates_in_pycocotools(tmp_path, name, fmt):
    annset = formats.load(DATA / f"{name}.json")
    gt, dt = tmp_path / f"gt.{fmt}.json", tmp_path / "dt.results.json"
    formats.save(annset, gt, format=fmt)
    formats.save(annset, dt, format="results")
    for ann in json.loads(gt.read_text())["annotations"]:
        assert ann["iscrowd"] == 0 and ann["area"] > 0 and len(ann["bbox"]) == 4
    stats = coco_eval(gt, dt)
    assert stats[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])  # the ground truth against itself: AP, AP50, AP75


def test_convert_to_kins_evaluates_in_pycocotools(tmp_path):
    from semlayer.cli import main

    out, dt = tmp_path / "d2sa.kins.json", tmp_path / "dt.json"
    assert main(["convert", str(DATA / "d2sa_toy.json"), str(out), "--to", "kins"]) == 0
    formats.save(formats.load(out), dt, format="results")
    assert coco_eval(out, dt)[0] == pytest.approx(1.0)


STRIP = rect(8, 10, 0, 7, 3, 8)  # 3 px on the bottom row, outside every amodal mask of the toy scene


def pad_to(mask, h, w):
    out = np.zeros((h, w), bool)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


@pytest.mark.parametrize(
    "name, where, key, value, expected",
    [
        (
            "cocoa_toy",
            "annotations[0].regions[1]",
            "visible_mask",
            encode_rle(BOARD_VISIBLE | STRIP),
            "annotations[0].regions[1]: visible_mask and invisible_mask that partition the amodal mask; 3 px outside the "
            "amodal mask",
        ),
        (
            "coco_toy",
            "annotations[1]",
            "visible_mask",
            encode_rle(BOARD_VISIBLE | STRIP),
            "annotations[1]: visible_mask and invisible_mask that partition the amodal mask; 3 px outside the amodal mask",
        ),
        (
            "d2sa_toy",
            "annotations[0]",
            "visible_mask",
            encode_rle(pad_to(BOARD_VISIBLE | STRIP, 10, 11)),
            "annotations[0]: visible_mask and invisible_mask that partition the amodal mask; 3 px outside the amodal mask",
        ),
        (
            "kins2019_toy",
            "annotations[1]",
            "inmodal_seg",
            encode_rle(BOARD_VISIBLE | STRIP),
            "annotations[1].inmodal_seg: a mask inside the amodal mask; 3 px outside",
        ),
        (
            "kins2020_toy",
            "annotations[1]",
            "i_segm",
            [[5.0, 3.0, 9.0, 3.0, 9.0, 7.0, 3.0, 7.0, 3.0, 5.0, 5.0, 5.0], [0.0, 7.0, 3.0, 7.0, 3.0, 8.0, 0.0, 8.0]],
            "annotations[1].i_segm: a mask inside the amodal mask; 3 px outside",
        ),
        (
            "results_toy",
            "[0]",
            "visible_mask",
            encode_rle(BOARD_VISIBLE | STRIP),
            "[0].visible_mask: a mask inside the amodal mask; 3 px outside",
        ),
    ],
)
def test_visible_pixels_outside_the_amodal_mask_are_reported_in_every_format_and_on_loading(
    caplog, name, where, key, value, expected
):
    obj = fixture(name)
    index = int(where.split("[")[-1].rstrip("]"))
    record = (
        obj["annotations"][0]["regions"][index]
        if name == "cocoa_toy"
        else (obj[index] if name == "results_toy" else obj["annotations"][index])
    )
    record[key] = value
    assert messages(obj) == [expected]
    caplog.set_level(logging.WARNING, logger="semlayer.formats.api")
    scene = formats.from_dict(obj, "x.json").scenes[0]
    dropped = (
        "x.json: 1 region whose visible mask reaches outside its amodal mask (3 px in all, dropped: a visible "
        f"pixel is part of the amodal mask): {where}.{key} (3 px)"
    )
    assert dropped in caplog.messages
    board = next(i for i in scene.instances if i.area == 24)
    assert np.array_equal(scene.visible(board.id), BOARD_VISIBLE)  # the scene holds what lies inside


def test_conversion_says_how_many_visible_pixels_it_dropped(tmp_path, caplog):
    from semlayer.cli import main

    obj = fixture("kins2020_toy")
    obj["annotations"][1]["i_segm"].append([0.0, 7.0, 3.0, 7.0, 3.0, 8.0, 0.0, 8.0])  # STRIP
    obj["annotations"][1]["i_segm"][0] = [4, 3, 9, 3, 9, 7, 3, 7, 3, 5, 4, 5]  # 2 px more, under the box in front
    src = tmp_path / "kins.json"
    src.write_text(json.dumps(obj))
    with caplog.at_level(logging.WARNING, logger="semlayer.formats.api"):
        assert main(["convert", str(src), str(tmp_path / "out.json"), "--to", "coco"]) == 0
    assert caplog.messages == [
        f"{src}: 1 region whose visible mask reaches outside its amodal mask (3 px in all, dropped: a visible pixel is "
        "part of the amodal mask): annotations[1].i_segm (3 px)",
        f"{src}: 1 region whose visible mask reaches under an instance in front (2 px in all; read as hidden, by the "
        "painter's rule): annotations[1] (2 px)",
    ]


def unpadded(obj):
    """The D2SA fixture with every mask cut to its image (as the readers read it)."""
    obj = copy.deepcopy(obj)
    for ann in obj["annotations"]:
        for key in ("segmentation", "visible_mask", "invisible_mask"):
            if key in ann:
                ann[key] = encode_rle(
                    mask_utils.decode({"size": ann[key]["size"], "counts": ann[key]["counts"].encode()})[:8, :10]
                )
    return obj


def test_d2sa_order_ties_are_valid_and_the_masks_order_the_tied_objects():
    # D2SA: each object is a one-region COCOA record (amodal_base.size 1), so every amodal_region.order is 1.
    obj = unpadded(fixture("d2sa_toy"))
    assert {a["amodal_region"]["order"] for a in obj["annotations"]} == {1}
    report = formats.validation_report(obj)
    assert (report.violations, report.external, report.notes) == ([], [], [])
    scene = formats.from_dict(obj).scenes[0]
    assert [i.id for i in scene.instances] == [2, 1] and scene.ranks() == [2, 1]  # the board (listed first) behind
    assert np.array_equal(scene.visible(2), BOARD_VISIBLE) and np.array_equal(scene.visible(1), BOX)
    # Hidden pixels no object in front covers are external occlusion, under the order the masks give.
    board = lambda o: o["annotations"][0]  # noqa: E731
    corner = with_board_masks(obj, BOARD_VISIBLE & ~CORNER, where=board)
    assert formats.validation_report(corner).external == [("annotations[0]", 4)]
    assert messages(corner) == []
    # Visible masks that contradict every order: the board's claims 1 px of the overlap the box's shows.
    both = with_board_masks(obj, BOARD_VISIBLE | rect(8, 10, 3, 3, 4, 4), where=board)
    assert messages(both) == [
        "annotations[0].visible_mask: no visible pixel under the amodal mask of a region in front (painter's rule); "
        "1 px visible under annotations[1] (order 1, in front by the masks)"
    ]


PADDED_NOTE = (
    "5 masks larger than their image (padded, as D2SA pads objects that overflow the frame), read cropped to the "
    "image; 0 mask px beyond the image dropped: annotations[0].segmentation (10 x 11, 0 px beyond), "
    "annotations[0].visible_mask (10 x 11, 0 px beyond), annotations[0].invisible_mask (10 x 11, 0 px beyond), "
    "annotations[1].segmentation (9 x 10, 0 px beyond), annotations[1].visible_mask (9 x 10, 0 px beyond)"
)


def test_d2sa_padded_masks_are_cropped_to_the_image_and_the_repair_reported(caplog):
    path = DATA / "d2sa_toy.json"
    with caplog.at_level(logging.WARNING, logger="semlayer.formats.api"):
        annset = formats.load(path)
    assert caplog.messages == [f"{path}: {PADDED_NOTE}"]
    scene = annset.scenes[0]
    assert scene.shape == (8, 10) and [i.id for i in scene.instances] == [2, 1]
    assert np.array_equal(scene.instances[0].amodal, BOARD) and np.array_equal(scene.instances[1].amodal, BOX)
    assert np.array_equal(scene.visible(2), BOARD_VISIBLE) and np.array_equal(scene.visible(1), BOX)
    report = formats.validation_report(path)
    assert report.violations == [] and report.notes == [PADDED_NOTE]
    # Written back at the image's size.
    assert {tuple(a["segmentation"]["size"]) for a in formats.to_coco(annset)["annotations"]} == {(8, 10)}
    # An object that overflows the frame: the board continues 2 rows below the image (12 px are cut).
    obj = fixture("d2sa_toy")
    obj["annotations"][0]["segmentation"] = encode_rle(rect(10, 11, 3, 3, 9, 10))
    obj["annotations"][0]["visible_mask"] = encode_rle(pad_to(rect(8, 10, 3, 3, 9, 8) & ~BOX, 10, 11))
    obj["annotations"][0]["occlude_rate"] = 4 / 30
    report = formats.validation_report(obj)
    cut = report.repairs[0]
    assert report.violations == [] and (cut.kind, cut.json_path, cut.px, cut.detail) == (
        "padded",
        "annotations[0].segmentation",
        12,
        "10 x 11",
    )
    assert np.array_equal(formats.from_dict(obj).scenes[0].instances[0].amodal, rect(8, 10, 3, 3, 9, 8))
    # Padding is read up to twice the image's size; a mask smaller than its image is refused as before.
    obj["annotations"][0]["segmentation"]["size"] = [17, 10]
    assert error_of(obj) == (
        "bad.json: annotations[0].segmentation.size: [8, 10] (the image's height and width), "
        "or a mask padded to at most [16, 20], got [17, 10]"
    )
    obj["annotations"][0]["segmentation"]["size"] = [7, 10]
    assert error_of(obj) == (
        "bad.json: annotations[0].segmentation.size: [8, 10] (the image's height and width), got [7, 10]"
    )


def test_occl_depth_never_overrides_the_masks_and_disagreements_are_noted():
    obj = unpadded(fixture("d2sa_toy"))
    for ann in obj["annotations"]:
        ann.pop("amodal_region")  # occl_depth alone: the board 0 (listed first), the box 1
    scene = formats.from_dict(obj).scenes[0]
    assert scene.ranks() == [2, 1]  # the box in front, as the masks say
    assert np.array_equal(scene.visible(2), BOARD_VISIBLE) and np.array_equal(scene.visible(1), BOX)
    assert formats.validation_report(obj).notes == []
    # occl_depth against the masks: the masks still decide, every stated pixel survives, the pair is noted.
    obj["annotations"][0]["occl_depth"], obj["annotations"][1]["occl_depth"] = 1, 0
    for tied in (obj, fixture("d2sa_toy")):
        if tied is not obj:
            tied["annotations"][0]["occl_depth"], tied["annotations"][1]["occl_depth"] = 1, 0
        scene = formats.from_dict(tied).scenes[0]
        assert scene.ranks() == [2, 1] and np.array_equal(scene.visible(2), BOARD_VISIBLE)
        report = formats.validation_report(tied)
        assert report.violations == [] and report.occl_depth == [("annotations[1]", "annotations[0]", 0, 1)]
        assert report.notes[-1] == (
            "1 overlapping pair where the object in front has the smaller occl_depth (kept as the masks, or "
            "amodal_region.order, put them; occl_depth, whose direction D2SA does not document, is read as larger "
            "= nearer the front and only breaks ties): annotations[1] over annotations[0] (occl_depth 0 over 1)"
        )
    # Where the masks say nothing (no visible masks), the larger occl_depth goes in front.
    for ann in obj["annotations"]:
        ann.pop("visible_mask")
        ann.pop("invisible_mask", None)
    assert formats.from_dict(obj).scenes[0].ranks() == [1, 2]
    obj["annotations"][0]["occl_depth"] = -1
    assert formats.from_dict(obj).scenes[0].ranks() == [2, 1]


def test_kins_lone_instances_are_0_0_read_written_and_derived():
    obj = fixture("kins2020_toy")
    lone = copy.deepcopy(obj["annotations"][0])  # a car that overlaps nothing, as KINS 2020 states one
    square = [[0.0, 6.0, 2.0, 6.0, 2.0, 8.0, 0.0, 8.0]]
    lone.update(
        id=3,
        a_segm=square,
        i_segm=square,
        a_bbox=[0.0, 6.0, 2.0, 2.0],
        i_bbox=[0.0, 6.0, 2.0, 2.0],
        a_area=4,
        i_area=4,
        oco_id=0,
        ico_id=0,
    )
    obj["annotations"].append(lone)
    annset = formats.from_dict(obj)
    scene = annset.scenes[0]
    assert [i.cluster for i in scene.instances] == [(1, 1), (1, 2), (0, 0)]
    assert formats.kins_clusters(scene) == [(1, 1), (1, 2), (0, 0)]
    clusters = lambda out: [(a["oco_id"], a["ico_id"]) for a in out["annotations"]]  # noqa: E731
    assert clusters(formats.to_kins(annset)) == [(1, 1), (1, 2), (0, 0)]
    scene.instances[0].rank, scene.instances[1].rank = 2, 1  # reordered: derived from the scene
    assert clusters(formats.to_kins(annset)) == [(1, 2), (1, 1), (0, 0)]
    assert formats.to_kins(formats.from_dict(formats.to_kins(annset))) == formats.to_kins(annset)


@pytest.mark.parametrize(
    "name", ["cocoa_toy.json", "bsds_toy.json", "coco_toy.json", "d2sa_toy.json", "kins2019_toy.json"]
)
def test_stated_occlusion_on_rle_counts_what_the_decoded_masks_give(name):
    """`stated_occlusion` (pycocotools merge/area on the stated RLEs) against the same counts on decoded frames."""
    obj = read_json(DATA / name)
    counted = []
    for group in parse(Context(name), obj, detect(obj)).groups:
        n = len(group.regions)
        for keys in ([float(k) for k in range(n)], [float(n - k) for k in range(n)]):  # either depth order
            for r, key, (under, hidden) in zip(group.regions, keys, stated_occlusion(group.regions, keys)):
                front = np.zeros(r.amodal.shape, bool)
                for o, other in zip(group.regions, keys):
                    if other < key:
                        front |= o.amodal
                visible = r.amodal & r.visible_or_amodal()
                assert under == int(np.count_nonzero(visible & front))
                assert hidden == int(np.count_nonzero(r.amodal & ~visible & ~front))
                counted += [under, hidden]
    assert counted
