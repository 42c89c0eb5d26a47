"""`python -m app` command line: defaults, checks, exit status 2 with a clear message on bad input."""

import subprocess
import sys

import pytest

from app.main import ROOT, allowed_paths, build_parser, config_from_args, parse_auth
from semlayer.errors import ConfigError


def parse(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_options_are_checked(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    with pytest.raises(ConfigError, match="give --data and --images together"):
        parse("--data", str(ann))
    with pytest.raises(ConfigError, match="--images .*missing does not exist"):
        parse("--data", str(ann), "--images", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="--checkpoint .*none.pt does not exist"):
        parse("--data", str(ann), "--images", str(tmp_path), "--checkpoint", str(tmp_path / "none.pt"))
    cfg = parse("--data", str(ann), "--images", str(tmp_path), "--workspace", str(tmp_path / "ws"))
    assert (cfg.data, cfg.images, cfg.workspace) == (ann, tmp_path, tmp_path / "ws")
    # The image folder, not the annotation file's folder (finding 3: --data ~/ann.json served the home folder).
    assert allowed_paths(cfg) == [str(tmp_path / "ws"), str(ROOT / "assets"), str(tmp_path)]


def test_auth_and_listen_defaults():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.auth) == ("127.0.0.1", 7860, None)
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss")
    assert parse_auth(None) is None
    for bad in ("ann", "ann:", ":pass"):
        with pytest.raises(ConfigError, match="--auth must be USER:PASS"):
            parse_auth(bad)


def test_broken_annotation_file_exits_2_with_the_json_path(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1}], "annotations": []}')
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--data", str(bad), "--images", str(tmp_path), "--workspace", str(tmp_path / "ws")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: images[0].height:")
    assert "Traceback" not in proc.stderr


def test_score_threshold_and_figure_compression_follow_the_options(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    base = ("--data", str(ann), "--images", str(tmp_path))
    cfg = parse(*base)
    assert (cfg.score_thr, cfg.png_level) == (0.5, 0)  # served on this machine: figures stored uncompressed
    cfg = parse(*base, "--host", "0.0.0.0", "--score-thr", "0.3")
    assert (cfg.score_thr, cfg.png_level) == (0.3, 1)  # sent over a network: compressed
    with pytest.raises(ConfigError, match=r"--score-thr must be in \[0, 1\], got 1.5"):
        parse(*base, "--score-thr", "1.5")


def test_unreadable_checkpoint_exits_2_before_serving(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--checkpoint", str(bad), "--workspace", str(tmp_path / "ws")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: a readable semlayer checkpoint")
    assert "Traceback" not in proc.stderr and "Running on" not in proc.stdout


def test_data_root_logins_and_exposure_options(tmp_path):
    from app.security import check_exposure, credentials

    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    base = ("--data", str(ann), "--images", str(tmp_path))
    assert parse(*base).data_root is None
    assert parse(*base, "--data-root", str(tmp_path), "--tab-idle-minutes", "2").data_root == tmp_path
    assert parse(*base, "--tab-idle-minutes", "2").tab_idle_s == 120.0
    with pytest.raises(ConfigError, match="--data-root .*nowhere is not a folder"):
        parse(*base, "--data-root", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--tab-idle-minutes must be positive, got 0.0"):
        parse(*base, "--tab-idle-minutes", "0")
    logins = tmp_path / "logins"
    logins.write_text("ann:pw\nbroken\n")
    with pytest.raises(ConfigError, match=f"--auth-file {logins} line 2 must be USER:PASS"):
        credentials(None, logins, env={})
    logins.write_text("# nobody yet\n")
    with pytest.raises(ConfigError, match="no user:password line"):
        credentials(None, logins, env={})
    with pytest.raises(ConfigError, match="SEMLAYER_AUTH must be USER:PASS"):
        credentials(None, None, env={"SEMLAYER_AUTH": "nopassword"})
    assert credentials(None, None, env={}) == []
    assert check_exposure("127.0.0.1", [], False) is None and check_exposure("0.0.0.0", [("a", "b")], False) is None
    assert check_exposure("0.0.0.0", [], True).startswith("--insecure: anyone who can reach 0.0.0.0 can read")
