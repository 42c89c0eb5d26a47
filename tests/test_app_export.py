"""Export from the app: COCOA merged into the original file, COCO-style amodal, re-import equals the session."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from semlayer.workspace import EditSession
from semlayer import formats, synth
from semlayer.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three synthetic COCOA images, plus fields the app does not know about (they must survive)."""
    root = tmp_path_factory.mktemp("data")
    path = synth.write_dataset(root, 3, seed=3, size=96, max_instances=4, min_instances=3, progress=False)
    obj = json.loads(path.read_text())
    obj["info"] = {"description": "kept as is"}
    obj["annotations"][1]["regions"][0]["note"] = "untouched"
    obj["annotations"][0]["reviewer"] = "kept too"
    path.write_text(json.dumps(obj))
    return path, root / "images", obj


def by_rank(scene):
    vis = scene.visible_masks()
    return [
        (inst.rank, inst.name, inst.amodal, vis[i])
        for i, inst in sorted(enumerate(scene.instances), key=lambda p: p[1].rank)
    ]


def assert_same_scene(a, b, names=True):
    """Same ranks, masks and (unless ``names`` is False: KINS has no instance names) names."""
    ra, rb = by_rank(a), by_rank(b)
    assert len(ra) == len(rb)
    for (rank_a, name_a, amodal_a, vis_a), (rank_b, name_b, amodal_b, vis_b) in zip(ra, rb):
        assert (rank_a, name_a if names else "") == (rank_b, name_b if names else "")
        assert np.array_equal(amodal_a, amodal_b) and np.array_equal(vis_a, vis_b)


def test_cocoa_export_is_merged_into_the_original_file(tmp_path, dataset):
    path, images, original = dataset
    s = EditSession.open(tmp_path / "ws", path, images)
    front = s.scene.order_ids()[0]
    s.move(front, "back")
    painted = np.zeros(s.scene.shape, bool)
    painted[10:30, 5:40] = True
    painted[12:14, 50:52] = True  # a second part: no single polygon holds it, so the RLE must carry it
    s.set_amodal(s.scene.order_ids()[0], painted)
    s.go_to(2)
    s.rename(s.scene.order_ids()[0], "renamed")
    s.undo()  # back to the file's state: not an edit any more
    assert s.edited_indices() == [0]

    out = s.export("cocoa")
    assert out == s.folder / "exports" / f"{path.stem}.corrected.cocoa.json"
    merged = json.loads(out.read_text())
    assert merged["info"] == {"description": "kept as is"}
    assert merged["images"] == original["images"]
    assert merged["annotations"][1:] == original["annotations"][1:]  # untouched records, byte for byte
    assert merged["annotations"][0]["reviewer"] == "kept too"
    assert merged["annotations"][0]["id"] == original["annotations"][0]["id"]
    assert formats.validate(out) == []

    again = formats.load(out)
    assert len(again) == 3
    assert_same_scene(again.scenes[0], s.scene_at(0))
    for k in (1, 2):
        assert_same_scene(again.scenes[k], s.scene_at(k))


def test_coco_export_loads_in_pycocotools_and_matches_the_session(tmp_path, dataset):
    path, images, _ = dataset
    s = EditSession.open(tmp_path / "ws", path, images)
    s.go_to(1)
    s.put_in_front(s.scene.order_ids()[-1], s.scene.order_ids()[0])
    out = s.export("coco")
    assert formats.validate(out) == []
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 3
    again = formats.load(out)
    for k in range(3):
        assert_same_scene(again.scenes[k], s.scene_at(k))
    with pytest.raises(ValueError, match="export format must be one of cocoa, coco, kins, got 'kins2019'"):
        s.export("kins2019")


def test_kins_export_keeps_masks_and_the_corrected_order_of_overlapping_objects(tmp_path, dataset):
    from semlayer.order import overlapping_pairs

    path, images, _ = dataset
    s = EditSession.open(tmp_path / "ws", path, images)
    s.go_to(1)
    s.put_in_front(s.scene.order_ids()[-1], s.scene.order_ids()[0])
    out = s.export("kins")
    assert out.name.endswith(".corrected.kins.json") and formats.validate(out) == []
    again = formats.load(out)
    assert again.format == "kins2020" and len(again) == 3
    for k in range(3):
        mine, back = s.scene_at(k), again.scenes[k]
        assert len(back) == len(mine)  # ids renumbered: COCOA numbers regions per image, KINS per file
        for a, b, va, vb in zip(mine.instances, back.instances, mine.visible_masks(), back.visible_masks()):
            assert np.array_equal(a.amodal, b.amodal) and np.array_equal(va, vb)
        pairs = [sorted(overlapping_pairs(x.ranks(), [i.amodal for i in x.instances])) for x in (mine, back)]
        assert pairs[0] == pairs[1] and (k != 1 or pairs[0])


def test_a_kins_file_edited_in_the_app_keeps_its_clusters_until_the_order_contradicts_them(tmp_path):
    obj = json.loads((Path(__file__).parent / "data" / "kins2020_toy.json").read_text())
    obj["annotations"][0]["oco_id"] = obj["annotations"][1]["oco_id"] = 5  # not what would be derived
    obj["annotations"][1]["ico_id"] = 3
    src = tmp_path / "kins.json"
    src.write_text(json.dumps(obj))
    s = EditSession.open(tmp_path / "ws", src, tmp_path)
    box, board = s.scene.order_ids()
    painted = s.scene.get(board).amodal.copy()
    painted[0, 9] = True
    s.set_amodal(board, painted)  # a mask edit: the order still agrees with the file's clusters
    clusters = lambda: [(a["oco_id"], a["ico_id"]) for a in s.export_dict("kins")["annotations"]]  # noqa: E731
    assert clusters() == [(5, 1), (5, 3)]
    s.move(board, "front")  # now it contradicts them: derived from the scene
    assert clusters() == [(1, 2), (1, 1)]
    s.undo()
    assert clusters() == [(5, 1), (5, 3)]


def test_uploaded_scenes_are_exported_on_their_own(tmp_path, dataset):
    path, images, _ = dataset
    annset = formats.load(path)
    uploads = EditSession.open_uploads(tmp_path / "ws")
    uploads.add_scene(annset.scenes[0].copy(), (images / annset.scenes[0].file_name).read_bytes())
    uploads.delete_instance(uploads.scene.order_ids()[0])
    out = uploads.export("cocoa")
    assert out.name == "uploads.corrected.cocoa.json"
    assert formats.validate(out) == []
    again = formats.load(out)
    assert len(again) == 1
    assert_same_scene(again.scenes[0], uploads.scene)


def hide_by_nothing(scene, n=6):
    """Hide ``n`` visible pixels of the scene's most visible instance behind something unannotated (external
    occlusion, as a prediction has it); returns that instance's id."""
    visible = scene.visible_masks()
    k = max(range(len(scene)), key=lambda i: int(visible[i].sum()))
    hidden = np.zeros(scene.shape, bool)
    hidden.flat[np.flatnonzero(visible[k])[:n]] = True
    scene.instances[k].external = hidden
    return scene.instances[k].id


def test_exports_with_external_occlusion_validate(tmp_path, dataset):
    """Scenes with external occlusion (an uploaded prediction, a file that has it) export to files that
    validate, the occlusion noted rather than a violation, and read back as the session's scenes."""
    path, images, _ = dataset
    annset = formats.load(path)
    scene = annset.scenes[0].copy()
    hidden_id = hide_by_nothing(scene)
    uploads = EditSession.open_uploads(tmp_path / "ws")
    uploads.add_scene(scene, (images / scene.file_name).read_bytes())
    uploads.rename(next(i for i in uploads.scene.order_ids() if i != hidden_id), "renamed")
    assert uploads.scene.get(hidden_id).external.sum() == 6
    rank = uploads.scene.get(hidden_id).rank
    position = uploads.scene.index_of(hidden_id)
    # KINS files are not held to the painter's rule (separate amodal and visible passes), so their report
    # has no external-occlusion note; the stated visible mask still carries the occlusion back.
    for fmt, where in (
        ("cocoa", f"annotations[0].regions[{rank - 1}]"),
        ("coco", f"annotations[{position}]"),
        ("kins", None),
    ):
        out = uploads.export(fmt)
        report = formats.validation_report(out)
        assert report.violations == [] and report.external == ([(where, 6)] if where else [])
        assert_same_scene(formats.load(out).scenes[0], uploads.scene, names=fmt != "kins")

    # A COCOA file with external occlusion, edited and exported merged into itself (CLI validate: exit 0).
    hidden_id = hide_by_nothing(annset.scenes[1])
    src = tmp_path / "external.json"
    formats.save(annset, src)
    s = EditSession.open(tmp_path / "ws", src, images)
    s.go_to(1)
    assert s.scene.get(hidden_id).external.sum() == 6
    s.rename(next(i for i in s.scene.order_ids() if i != hidden_id), "renamed")
    assert s.edited_indices() == [1]
    for fmt in ("cocoa", "coco", "kins"):
        out = s.export(fmt)
        report = formats.validation_report(out)
        assert report.violations == [] and [px for _, px in report.external] == ([] if fmt == "kins" else [6])
        assert main(["validate", str(out)]) == 0
        again = formats.load(out)
        for k in range(3):
            assert_same_scene(again.scenes[k], s.scene_at(k), names=fmt != "kins")


def test_a_file_session_holds_scenes_index_first_and_exports_every_one(tmp_path, dataset, monkeypatch):
    import semlayer.workspace as session_module
    from semlayer.formats.indexed import IndexedScenes

    path, images, _ = dataset
    monkeypatch.setattr(session_module, "DECODED_SCENES", 1)  # every other scene is decoded again on use
    s = EditSession.open(tmp_path / "ws", path, images)
    assert isinstance(s.annset.scenes, IndexedScenes)
    s.go_to(2)
    s.move(s.scene.order_ids()[0], "back")
    for k in (0, 1, 2, 0):  # scene 2's edit stays while the others come and go from the cache
        s.go_to(k)
        assert s.image_path().name == s.scene.file_name
    s.go_to(2)
    s.undo()
    s.redo()
    assert s.edited_indices() == [2]
    exported = formats.from_dict(s.export_dict("coco"))
    plain = formats.load(path)
    for k in range(3):
        assert_same_scene(exported.scenes[k], s.scene_at(k))
    assert_same_scene(exported.scenes[1], plain.scenes[1])
    assert exported.scenes[2].order_ids() != plain.scenes[2].order_ids()


def test_a_cocoa_export_says_how_many_pixels_its_polygons_lose(dataset, tmp_path):
    """COCOA's `segmentation` is one flat polygon: a mask in two pieces keeps only the larger one there."""
    from app import handlers as h
    from semlayer.formats.cocoa import polygon_losses

    path, images, _ = dataset
    session = EditSession.open(tmp_path / "ws", path, images)
    tab = h.Tab(session=session, cfg=h.AppConfig(workspace=tmp_path / "ws"))
    exported = h.export(tab, "cocoa")
    assert (
        h.export_notice(exported)
        == "exported `annotations.corrected.cocoa.json` · every mask is exactly its COCOA polygon"
    )
    target = session.scene.order_ids()[0]
    height, width = session.scene.shape
    piece = np.zeros((height, width), bool)
    piece[height - 6 : height - 1, width - 6 : width - 1] = True  # 25 px apart from the rest
    session.set_amodal(target, session.scene.get(target).amodal | piece)
    mask = session.scene.get(target).amodal
    exported = h.export(tab, "cocoa")
    losses = polygon_losses(json.loads(exported.read_text()))
    assert [(loss.area, loss.missed, loss.extra) for loss in losses] == [(int(mask.sum()), 25, 0)]
    assert h.export_notice(exported) == (
        "exported `annotations.corrected.cocoa.json` · **1 mask(s) in 1 image(s) are in several pieces or have "
        f"holes**: COCOA's one `segmentation` polygon misses 25 of their {int(mask.sum()):,} pixels (and adds 0). "
        "The exact masks are in each region's `amodal_mask` (semlayer reads it; tools that read only "
        "`segmentation` get the polygon)."
    )
    assert (
        h.export_notice(h.export(tab, "coco")) == "exported `annotations.corrected.coco.json`"
    )  # polygons or RLE: exact
