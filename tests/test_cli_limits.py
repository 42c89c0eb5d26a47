"""Hostile or malformed command-line input: one line on stderr and exit 2, never a traceback; the size caps;
validate's cost on thousands of overlapping regions; output file modes."""

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semlayer import formats
from semlayer.cli import main
from semlayer.formats._base import MAX_INSTANCES
from semlayer.images import MAX_PIXELS, ImageReadError, image_file
from semlayer.io_utils import atomic_write_text

DATA = Path(__file__).parent / "data"


def toy(tmp_path, change=None, name="ann.json"):
    obj = json.loads((DATA / "cocoa_toy.json").read_text())
    if change:
        change(obj)
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def one_line_exit_2(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and expected in err, err


def test_a_5000_digit_integer_is_one_line(tmp_path, capsys):
    path = tmp_path / "big.json"
    path.write_text(toy(tmp_path).read_text().replace('"id": 7', '"id": ' + "9" * 5000))
    for argv in (["validate", str(path)], ["convert", str(path), str(tmp_path / "o.json"), "--to", "coco"]):
        one_line_exit_2(capsys, argv, f"{path}: JSON whose numbers Python can read; Exceeds the limit")


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--K", "0", "--K must be a positive number of depth levels, got 0"),
        ("--tau", "0", "--tau must be a positive number of pixels, got 0.0"),
        ("--tau", "nan", "--tau must be a positive number of pixels, got nan"),
        ("--tau", "-inf", "--tau must be a positive number of pixels, got -inf"),
    ],
)
def test_encode_and_render_levels_are_checked(tmp_path, capsys, option, value, expected):
    ann = toy(tmp_path)
    one_line_exit_2(
        capsys, ["encode", str(ann), "--image-id", "7", "--out", str(tmp_path / "o.npz"), f"{option}={value}"], expected
    )
    one_line_exit_2(
        capsys,
        [
            "render",
            str(ann),
            "--image-id",
            "7",
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "o.png"),
            f"{option}={value}",
        ],
        expected,
    )


def test_render_an_image_smaller_than_its_annotation(tmp_path, capsys):
    ann = toy(tmp_path)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "toy_000007.jpg", format="PNG")
    one_line_exit_2(
        capsys,
        ["render", str(ann), "--image-id", "7", "--images", str(tmp_path), "--out", str(tmp_path / "o.png")],
        "an image of height x width 8 x 10 as the annotation says, got 4 x 5",
    )


def test_render_refuses_an_image_name_outside_its_folder(tmp_path, capsys):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(secret)
    ann = toy(tmp_path, lambda o: o["images"][0].update(file_name="../secret.png"))
    (tmp_path / "images").mkdir()
    one_line_exit_2(
        capsys,
        ["render", str(ann), "--image-id", "7", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "o.png")],
        "without '..' or hidden (dot) parts, got '../secret.png'",
    )
    assert not (tmp_path / "o.png").exists()


def test_declared_sizes_are_capped_at_the_image_readers_pixel_cap(tmp_path, capsys):
    side = int(MAX_PIXELS**0.5) + 1
    big = toy(tmp_path, lambda o: o["images"][0].update(height=side, width=side))
    # 4 GiB per mask was asked for; now a violation, found without allocating anything like it.
    assert main(["validate", str(big)]) == 1
    out = capsys.readouterr().out
    assert (
        f"images[0]: an image of at most {MAX_PIXELS} pixels (height x width), the image reader's limit; "
        f"got {side} x {side}" in out
    )
    one_line_exit_2(capsys, ["convert", str(big), str(tmp_path / "o.json"), "--to", "coco"], "the image reader's limit")
    ok = toy(tmp_path, lambda o: o["images"][0].update(height=8, width=10), name="ok.json")
    assert main(["validate", str(ok)]) == 0


def test_instances_per_image_are_capped(tmp_path):
    def many(o):
        region = o["annotations"][0]["regions"][0]
        o["annotations"][0]["regions"] = [dict(region, order=k + 1) for k in range(MAX_INSTANCES + 1)]
        o["annotations"][0]["depth_constraint"] = ""

    path = toy(tmp_path, many)
    assert [str(v) for v in formats.validate(path)] == [
        f"annotations[0].regions: at most {MAX_INSTANCES} instances per image, got {MAX_INSTANCES + 1}"
    ]


def test_image_names_outside_the_folder_are_violations(tmp_path):
    def names(o):
        o["images"] = [
            dict(o["images"][0], id=7 + k, file_name=n)
            for k, n in enumerate(["/etc/passwd", "../../x.png", "ok/a.png", ".git/config"])
        ]

    found = [str(v) for v in formats.validate(toy(tmp_path, names))]
    assert found == [
        "images[0].file_name: a file name relative to the images folder, got the absolute path '/etc/passwd'",
        "images[1].file_name: a file name inside the images folder without '..' or hidden (dot) parts, got '../../x.png'",
        "images[3].file_name: a file name inside the images folder without '..' or hidden (dot) parts, got '.git/config'",
    ]
    with pytest.raises(ImageReadError, match="absolute path"):
        image_file(tmp_path, "/etc/passwd")
    assert image_file(tmp_path, "ok/a.png") == tmp_path / "ok" / "a.png"


def test_validate_3000_overlapping_regions_takes_seconds(tmp_path):
    """Every region is fully visible but lies partly under its neighbours in front: 3000 painter's-rule
    violations, each naming who covers it (the pairs are found by bounding boxes)."""
    side, step, cell = 60, 10, 14
    regions = []
    for k in range(3000):
        y, x = divmod(k, side)
        x0, y0 = x * step, y * step
        regions.append(
            {
                "order": k + 1,
                "name": f"r{k}",
                "isStuff": 0,
                "segmentation": [x0, y0, x0 + cell, y0, x0 + cell, y0 + cell, x0, y0 + cell],
            }
        )
    obj = {
        "images": [{"id": 1, "file_name": "a.png", "height": side * step + cell, "width": side * step + cell}],
        "annotations": [{"id": 1, "image_id": 1, "depth_constraint": "", "regions": regions}],
    }
    path = tmp_path / "many.json"
    path.write_text(json.dumps(obj))
    start = time.perf_counter()
    violations = formats.validate(path)
    took = time.perf_counter() - start
    assert len(violations) == 2999  # every region but the front-most one
    assert str(violations[0]).startswith(
        "annotations[0].regions[1]: a visible_mask or invisible_mask (painter's "
        "rule); without either the region is fully visible, but "
    )
    assert "under annotations[0].regions[0] (order 1)" in str(violations[0])
    assert took < 30, f"validate took {took:.1f} s"


def test_output_files_take_the_umask_or_the_replaced_files_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.umask(0o022)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "other.json", "{}").stat().st_mode) == 0o644
        path.chmod(0o600)
        assert stat.S_IMODE(atomic_write_text(path, "[]").stat().st_mode) == 0o600  # replacing keeps its mode
    finally:
        os.umask(old)
