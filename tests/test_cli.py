"""The `python -m semlayer` contracts of the foundation: synth, convert, validate, encode, render, figures."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semlayer import formats, semdist
from semlayer.formats.masks import encode_rle
from semlayer.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(out), "--num-images", "3", "--seed", "5", "--size", "96", "--max-instances", "4"]) == 0
    return out


def test_synth_writes_images_and_valid_cocoa(synth_dir, capsys):
    assert sorted(p.name for p in (synth_dir / "images").iterdir()) == [
        "synth_000001.png",
        "synth_000002.png",
        "synth_000003.png",
    ]
    annset = formats.load(synth_dir / "annotations.json")
    assert annset.format == "cocoa" and len(annset) == 3
    assert all(s.shape == (96, 96) and 1 <= len(s) <= 4 for s in annset)
    assert main(["validate", str(synth_dir / "annotations.json")]) == 0
    assert capsys.readouterr().out.strip().endswith("annotations.json: valid")


def test_convert_both_ways_keeps_masks_and_order(synth_dir, tmp_path):
    src = synth_dir / "annotations.json"
    assert main(["convert", str(src), str(tmp_path / "coco.json"), "--to", "coco"]) == 0
    assert main(["convert", str(tmp_path / "coco.json"), str(tmp_path / "back.json"), "--to", "cocoa"]) == 0
    a, b = formats.load(src), formats.load(tmp_path / "back.json")
    for sa, sb in zip(a, b):
        assert sa.ranks() == sb.ranks()
        for x, y in zip(sa.visible_masks(), sb.visible_masks()):
            assert np.array_equal(x, y)
        assert [i.name for i in sa.instances] == [i.name for i in sb.instances]
    assert json.loads((tmp_path / "coco.json").read_text())["categories"][0]["name"] == "disc"


def test_validate_exit_codes(tmp_path, capsys):
    bad = json.loads((DATA / "cocoa_toy.json").read_text())
    bad["annotations"][0]["regions"][1]["occlude_rate"] = 0.5
    (tmp_path / "inconsistent.json").write_text(json.dumps(bad))
    assert main(["validate", str(tmp_path / "inconsistent.json")]) == 1
    out = capsys.readouterr().out
    assert "annotations[0].regions[1].occlude_rate" in out
    (tmp_path / "cut.json").write_text('{"images": [')
    assert main(["validate", str(tmp_path / "cut.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'cut.json'}") and "Traceback" not in err
    assert main(["validate", str(tmp_path / "missing.json")]) == 2


def test_validate_accepts_external_occlusion_and_names_visible_pixels_under_a_front_region(tmp_path, capsys):
    # The toy board (docs/formats.md) with its bottom-right 2x2 corner hidden by something unannotated.
    annset = formats.load(DATA / "cocoa_toy.json")
    scene = annset.scenes[0]
    corner = np.zeros(scene.shape, bool)
    corner[5:7, 7:9] = True
    scene.instances[1].external = corner
    for fmt, path in (("cocoa", "annotations[0].regions[1]"), ("coco", "annotations[1]")):
        out = tmp_path / f"external.{fmt}.json"
        formats.save(annset, out, format=fmt)
        assert main(["validate", str(out)]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"{out}: note: 1 region with external occlusion (hidden by unannotated objects, 4 px in all): {path} (4 px)",
            f"{out}: valid",
        ]
    # A visible pixel under the box in front is a contradiction.
    bad = json.loads((tmp_path / "external.cocoa.json").read_text())
    board = bad["annotations"][0]["regions"][1]
    board["visible_mask"] = encode_rle(formats.load(DATA / "cocoa_toy.json").scenes[0].instances[1].amodal & ~corner)
    (tmp_path / "under.json").write_text(json.dumps(bad))
    assert main(["validate", str(tmp_path / "under.json")]) == 1
    captured = capsys.readouterr()
    assert (
        f"{tmp_path / 'under.json'}: annotations[0].regions[1].visible_mask: no visible pixel under the amodal mask "
        "of a region in front (painter's rule); 4 px visible under annotations[0].regions[0] (order 1)" in captured.out
    )
    assert captured.err.strip().endswith("violation(s)")


def test_encode_arrays(tmp_path):
    out = tmp_path / "toy.npz"
    assert (
        main(["encode", str(DATA / "cocoa_toy.json"), "--image-id", "7", "--out", str(out), "--K", "3", "--tau", "6"])
        == 0
    )
    z = np.load(out)
    assert z["semdist"].shape == (2, 8, 10) and z["semdist"].dtype == np.float32
    assert z["layers"].dtype == np.int8 and z["layers"][0, 0, 0] == -1 and z["layers"][1, 3, 3] == 1
    assert z["global_layers"].dtype == np.uint8 and z["global_layers"][3, 3] == 2
    assert z["ranks"].tolist() == [1, 2]
    scene = formats.load(DATA / "cocoa_toy.json").scenes[0]
    np.testing.assert_array_equal(z["semdist"][1], semdist.encode_scene(scene)[1].full())
    assert main(["encode", str(DATA / "cocoa_toy.json"), "--image-id", "99", "--out", str(out)]) == 2


def test_render_and_figures(synth_dir, tmp_path):
    out = tmp_path / "levels.png"
    assert (
        main(
            [
                "render",
                str(synth_dir / "annotations.json"),
                "--image-id",
                "2",
                "--images",
                str(synth_dir / "images"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(
            [
                "figures",
                "--out",
                str(tmp_path / "figs"),
                "--data",
                str(synth_dir / "annotations.json"),
                "--image-id",
                "1",
            ]
        )
        == 0
    )
    assert {p.name for p in (tmp_path / "figs").iterdir()} == {
        "level_sets.png",
        "semdist_surface.png",
        "semdist_heatmap.png",
        "global_layers.png",
        "overlay.png",
    }


def test_bad_input_exits_2_without_traceback(tmp_path):
    (tmp_path / "empty.json").write_text("")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "semlayer",
            "convert",
            str(tmp_path / "empty.json"),
            str(tmp_path / "o.json"),
            "--to",
            "coco",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(tmp_path / "empty.json") in proc.stderr
    assert not (tmp_path / "o.json").exists()
