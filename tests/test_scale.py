"""Whole datasets: files written scene by scene in the bytes they always had, the fast parser's fallback,
and `predict_files` with memory that does not grow with the images, sharded over torchrun processes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from semlayer import formats
from semlayer.errors import FormatError
from semlayer.formats import CompactScenes
from semlayer.formats import stream
from semlayer.formats.stream import Streamed, materialize, write_json
from semlayer.predict import predict_files
from semlayer.scene import AnnotationSet
from semlayer.synth import CATEGORIES, generate
from tests.helpers import torchrun_2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DEMO = ROOT / "assets" / "demo"
FILES = sorted(DATA.glob("*.json")) + [DEMO / "annotations.json"]
WRITERS = {"cocoa": formats.to_cocoa, "coco": formats.to_coco, "kins": formats.to_kins, "results": formats.to_results}

# sha256 (first 16 hex digits) of `semlayer convert`'s output before files were streamed (main at da230f1).
BEFORE_STREAMING = {
    ("annotations", "cocoa"): "d01c86c550db7bff",
    ("annotations", "coco"): "7fa5efd5676a5245",
    ("annotations", "kins"): "9e1e479b825ebcc1",
    ("cocoa_toy", "cocoa"): "1bf015585d6e2eb1",
    ("cocoa_toy", "coco"): "7a5dc11322e2cfc9",
    ("cocoa_toy", "kins"): "4bb2ad12da369289",
    ("bsds_toy", "cocoa"): "46799cd21f8e6de8",
    ("bsds_toy", "coco"): "372c6e6a2bf044c8",
}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_save_streams_the_bytes_json_dumps_gives_the_whole_document(tmp_path, path, fmt):
    dense = formats.load(path)
    if fmt == "kins" and path.stem == "bsds_toy":
        pytest.skip("several annotators per image: not writable as KINS")
    expected = json.dumps(WRITERS[fmt](dense), ensure_ascii=False).encode("utf-8")
    for scenes in (dense, formats.load(path, compact=True)):
        formats.save(scenes, tmp_path / "out.json", format=fmt)
        assert (tmp_path / "out.json").read_bytes() == expected


@pytest.mark.parametrize("name, fmt", sorted(BEFORE_STREAMING))
def test_convert_writes_what_it_wrote_before_streaming(tmp_path, name, fmt):
    source = DEMO / "annotations.json" if name == "annotations" else DATA / f"{name}.json"
    out = tmp_path / "out.json"
    assert (
        subprocess.run(
            [sys.executable, "-m", "semlayer", "convert", str(source), str(out), "--to", fmt],
            cwd=ROOT,
            capture_output=True,
        ).returncode
        == 0
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest()[:16] == BEFORE_STREAMING[name, fmt]


def test_stream_writer_joins_records_as_json_dumps_does(tmp_path):
    doc = {"a": [1, "é"], "items": Streamed(iter([{"x": 1.5, "y": None}, [], "z"])), "n": {"k": [0.1]}}
    write_json(tmp_path / "d.json", doc)
    plain = {"a": [1, "é"], "items": [{"x": 1.5, "y": None}, [], "z"], "n": {"k": [0.1]}}
    assert (tmp_path / "d.json").read_bytes() == json.dumps(plain, ensure_ascii=False).encode("utf-8")
    write_json(tmp_path / "e.json", Streamed(iter([])))
    assert (tmp_path / "e.json").read_text() == "[]"
    assert materialize({"k": Streamed(iter([1, 2]))}) == {"k": [1, 2]}


def _synth_set(n: int) -> AnnotationSet:
    scenes = CompactScenes(scene for _, scene in generate(n, seed=11, size=128, max_instances=4))
    return AnnotationSet(scenes, [dict(c) for c in CATEGORIES], format="cocoa")


@pytest.mark.parametrize("fmt", ["cocoa", "coco", "results"])
def test_saving_holds_no_more_for_more_scenes(tmp_path, monkeypatch, fmt):
    """The file is written as the scenes are decoded: the peak while saving 160 scenes is about that of 20
    (what grows is the image records); the whole document of 160 scenes, held before writing, would be over
    1 MB more."""
    monkeypatch.setattr(stream, "FLUSH_CHARS", 1 << 14)  # written in small pieces: the buffer stays small
    peaks = []
    for n in (20, 160):
        annset = _synth_set(n)
        tracemalloc.start()
        formats.save(annset, tmp_path / f"{n}.json", format=fmt)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        size = (tmp_path / f"{n}.json").stat().st_size
    assert size > 150_000
    assert peaks[1] - peaks[0] < 200_000, peaks


def test_read_json_parses_as_the_standard_parser_and_falls_back_to_it(tmp_path):
    for path in FILES:
        assert formats.read_json(path) == json.loads(path.read_bytes())
    odd = tmp_path / "odd.json"
    odd.write_text('{"a": NaN, "b": 123456789012345678901234567890, "c": "\\ud800"}')  # orjson refuses all three
    value = formats.read_json(odd)
    assert np.isnan(value["a"]) and value["b"] == 123456789012345678901234567890 and value["c"] == "\ud800"
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,\n ]}')
    with pytest.raises(FormatError, match=r"bad.json: complete, valid JSON; Expecting value at line 2, column 2"):
        formats.read_json(bad)


# ----- predict ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """The 12 demo images, and 60 (each 5 times under other names)."""
    few, many = tmp_path_factory.mktemp("few"), tmp_path_factory.mktemp("many")
    for path in sorted((DEMO / "images").glob("*.png")):
        shutil.copy(path, few / path.name)
        for k in range(5):
            shutil.copy(path, many / f"{k}_{path.name}")
    return few, many


def test_predict_memory_does_not_grow_with_the_images(tmp_path, many_images):
    """Each predicted scene is kept as RLE and the file written scene by scene: 48 more images add well under
    1 MB to the peak (their full-frame masks alone would be about 8 MB)."""
    peaks, counts = [], []
    for folder in many_images:
        tracemalloc.start()
        report = predict_files(None, [folder], tmp_path / "pred.json", fmt="cocoa", progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        counts.append(report.num_instances)
    assert counts[1] == 5 * counts[0] > 0
    assert peaks[1] - peaks[0] < 1_000_000, peaks


def test_predict_workers_write_the_same_file(tmp_path, many_images):
    few = many_images[0]
    predict_files(None, [few], tmp_path / "a.json", fmt="coco", progress=False)
    predict_files(None, [few], tmp_path / "b.json", fmt="coco", progress=False, workers=2, batch_size=3)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_torchrun_sharded_predict_writes_the_single_process_file(tmp_path, many_images):
    """Two CPU processes (gloo) each predict every other image; process 0 writes one file, the bytes one
    process writes (both at one torch thread, as in the whole suite: float sums depend on the threads)."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(many_images[0].glob("*.png"))[:5]:  # an odd count: the shards differ in size
        shutil.copy(path, images / path.name)
    (images / "broken.png").write_bytes(b"not a png")  # skipped, and the image ids stay consecutive
    single = tmp_path / "single.json"
    report = predict_files(None, [images], single, fmt="cocoa", progress=False)
    sharded = tmp_path / "sharded.json"
    run = torchrun_2(["-m", "semlayer", "predict", str(images), "--out", str(sharded), "--workers", "1"], timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sharded.read_bytes() == single.read_bytes()
    assert [p for p, _ in report.skipped] == [str(images / "broken.png")]
    assert run.stdout.count("wrote ") == 1 and f"{report.num_images} images" in run.stdout
    assert run.stderr.count(f"skipped {images / 'broken.png'}") == 1
