"""bench/annotation_bench.py: its --api mode (the app's script API) counts the same clicks as the library."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


def load_bench():
    spec = importlib.util.spec_from_file_location("annotation_bench", ROOT / "bench" / "annotation_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_seconds(out):
    return {
        name: {task: {k: v for k, v in row.items() if k != "seconds"} for task, row in tasks.items()}
        for name, tasks in out.items()
    }


def test_api_mode_gives_the_library_modes_clicks(tmp_path, monkeypatch):
    bench = load_bench()
    common = [
        "--data",
        str(DEMO / "annotations.json"),
        "--images",
        str(DEMO / "images"),
        "--max-objects",
        "2",
        "--brush-radius",
        "8",
    ]
    assert bench.main([*common, "--no-model", "--json", str(tmp_path / "library.json")]) == 0
    calls = []
    call = bench.AppAnnotator.call

    def counted(self, name, *args):
        calls.append(name)
        return call(self, name, *args)

    monkeypatch.setattr(bench.AppAnnotator, "call", counted)
    assert bench.main([*common, "--api", "--json", str(tmp_path / "api.json")]) == 0
    library = json.loads((tmp_path / "library.json").read_text())
    api = json.loads((tmp_path / "api.json").read_text())
    assert without_seconds(api) == without_seconds(library)
    assert set(api) == {
        "brush",
        "grabcut",
        "superpixel",
        "clipped_brush",
        "auto_brush",
        "hull",
        "hull+auto",
        "mirror",
        "mirror+auto",
    }
    assert api["grabcut"]["visible"]["objects"] == 2 and api["hull"]["amodal"]["objects"] >= 1
    # The assisted methods' masks came from the app's endpoints.
    assert {
        "/open_image",
        "/assist_grabcut",
        "/assist_superpixels",
        "/assist_hidden_polygon",
        "/assist_hidden_brush",
        "/assist_complete",
        "/assist_clear",
    } <= set(calls)
