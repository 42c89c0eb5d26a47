"""bench/gpu_check.sh end to end on the CPU (`--device cpu --tiny`): both models train, the SLN predicts
held-out scenes and both protocols score them. The CUDA path is the same code with the R50 recipe."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_its_steps_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    times = summary["s_per_iter"]
    assert set(times) == {"sln", "maskrcnn_amodal"} and all(t > 0 for t in times.values())
    assert summary["ratio"] == pytest.approx(times["sln"] / times["maskrcnn_amodal"])
    assert summary["iterations"] == 3
    for kind in times:
        records = [json.loads(line) for line in (out / kind / "log.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert summary["cocoa_official"]["num_images"] == 2 and "AP_heavy" in summary["cocoa_official"]
    assert summary["default"]["num_images"] == 2
    printed = proc.stdout
    assert f"SLN              {times['sln']:.3f} s/iter" in printed
    assert f"SLN / Mask R-CNN  {summary['ratio']:.2f}x s/iter" in printed
    assert "COCOA official" in printed


def test_gpu_check_without_cuda_says_so():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr
