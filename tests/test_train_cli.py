import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train as train_cli  # noqa: E402  (the top-level script, imported to call main() in-process)
from tests.helpers import TINY_MODEL, tiny_data  # noqa: E402


TINY = {
    "model": dict(TINY_MODEL),
    "data": tiny_data(4),
    "train": {"batch_size": 2, "max_iters": 2, "warmup_iters": 1, "log_every": 1, "val_every": 2},
}


def write_config(path, cfg=TINY):
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--threads", "1", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_trains_writes_outputs_and_resumes(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    # --stop-at interrupts a 3-iteration schedule after 2, as the published runs' history does.
    proc = run("--config", cfg, "--out", out, "--max-iters", "3", "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train:  67%" in proc.stderr and "2/3" in proc.stderr  # the tqdm progress bar, stopped at 2 of 3
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.jsonl"]
    proc = run("--config", cfg, "--out", out, "--max-iters", "3", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train: 100%" in proc.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if r["split"] == "train"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("config_text", "args", "message"),
    [
        ("train:\n  lrr: 1\n", [], "train.lrr: unknown key"),
        ("model: [\n", [], "not valid YAML"),
        (None, [], "configuration file not found"),
        ("{}", ["--data", "ann.json"], "--data and --images go together"),
        ("{}", ["--val-images", "x"], "--val-data and --val-images go together"),
        ("{}", ["--data", "ann.json", "--images", "no_such_dir"], "no_such_dir: an existing image folder"),
        ("{}", ["--resume"], "last.pt does not exist"),
        ("{}", ["--batch-size", "0"], "train.batch_size: expected a value > 0"),
        ("{}", ["--threads", "0"], "--threads: expected >= 1"),
        ("{}", ["--stop-at", "0"], "--stop-at: expected >= 1"),
        ("{}", ["--init", "missing.pt"], "model.init: weights file missing.pt not found"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, monkeypatch, config_text, args, message):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    if config_text is not None:
        if config_text == "{}":
            write_config(cfg)
        else:
            cfg.write_text(config_text)
    status = train_cli.main(
        ["--config", str(cfg), "--out", str(tmp_path / "out"), "--no-progress", "--threads", "1", *args]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.startswith("error: ")


def test_unreadable_data_exits_2_without_traceback(tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml")
    images = tmp_path / "images"
    images.mkdir()
    ann = tmp_path / "ann.json"
    ann.write_text("{not json")
    status = train_cli.main(
        [
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "out"),
            "--data",
            str(ann),
            "--images",
            str(images),
            "--threads",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert err.startswith("error: ") and "ann.json" in err


def test_trains_on_an_annotation_file_with_images(tmp_path, capsys):
    from semlayer.synth import write_dataset

    ann = write_dataset(tmp_path / "data", num_images=3, seed=2, size=64, max_instances=3, progress=False)
    cfg = write_config(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    status = train_cli.main(
        [
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--no-progress",
            "--max-iters",
            "1",
            "--threads",
            "1",
            "--data",
            str(ann),
            "--images",
            str(tmp_path / "data" / "images"),
            "--val-data",
            str(ann),
            "--val-images",
            str(tmp_path / "data" / "images"),
        ]
    )
    assert status == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["split"] for r in log] == ["train", "val"]
    # Fine-tuning from the checkpoint just written (what the app does with corrected annotations).
    status = train_cli.main(
        [
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "ft"),
            "--no-progress",
            "--max-iters",
            "1",
            "--threads",
            "1",
            "--init",
            str(out / "last.pt"),
            "--data",
            str(ann),
            "--images",
            str(tmp_path / "data" / "images"),
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "ft" / "best.pt").is_file()
