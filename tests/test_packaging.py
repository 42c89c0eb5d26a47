"""The project as others get it: installed with pip (wheel and editable), versioned checkpoints, the API
page's example, lint, and a repository that refers to nothing outside itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

import semlayer
from semlayer.model.checkpoint import VERSION, read_checkpoint, save_checkpoint
from semlayer.errors import FormatError
from semlayer.predict import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "runs",
    "workspace",
    "baselines",
)


def api_example() -> str:
    """The python code block of docs/api.md."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


# ----- version and checkpoints ---------------------------------------------------------------------------------
def test_the_version_is_written_in_one_place_and_the_citation_follows_it():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "semlayer.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", semlayer.__version__)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == semlayer.__version__
    assert citation["preferred-citation"]["identifiers"][1]["value"] == "arXiv:1905.12898"
    assert [a["family-names"] for a in citation["preferred-citation"]["authors"]] == [
        "Zhang",
        "Chen",
        "Xie",
        "Yu",
        "Gao",
    ]


def test_a_checkpoint_records_its_format_and_the_version_that_wrote_it(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}, "class_names": ["a"], "version": 99})
    ckpt = read_checkpoint(path)
    # The writer's own format number wins over anything passed in the state.
    assert (ckpt["format"], ckpt["version"], ckpt["semlayer_version"]) == (
        "semlayer-checkpoint",
        VERSION,
        semlayer.__version__,
    )


def test_a_checkpoint_of_a_newer_format_is_refused_naming_who_wrote_it(tmp_path):
    path = tmp_path / "newer.pt"
    torch.save(
        {
            "format": "semlayer-checkpoint",
            "version": VERSION + 1,
            "semlayer_version": "7.0.0",
            "model": {},
            "config": {},
            "class_names": [],
        },
        path,
    )
    with pytest.raises(FormatError) as err:
        read_checkpoint(path)
    assert str(err.value) == (
        f"{path}: version: checkpoint format {VERSION} or older; this file has format {VERSION + 1}, written by "
        f"semlayer 7.0.0, and this is semlayer {semlayer.__version__}: upgrade semlayer to load it"
    )
    torch.save({"format": "semlayer-checkpoint", "version": "2", "model": {}, "config": {}, "class_names": []}, path)
    with pytest.raises(FormatError, match=r"version: a checkpoint format number \(an integer >= 1\), got '2'"):
        read_checkpoint(path)


def test_the_shipped_checkpoint_has_a_format_this_version_reads():
    ckpt = read_checkpoint(DEFAULT_CHECKPOINT)
    assert ckpt["version"] == 1 <= VERSION and "semlayer_version" not in ckpt  # written before the entry


# ----- the repository stands alone ----------------------------------------------------------------------------
def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (an unpacked source archive): every file there
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    else:
        names = out.stdout.split()
    suffixes = {".py", ".md", ".toml", ".txt", ".yaml", ".yml", ".cff", ".ini", ".cfg", ".sh", ""}
    return [ROOT / n for n in names if Path(n).suffix in suffixes and (ROOT / n).is_file()]


def test_nothing_in_the_repository_refers_to_files_outside_it():
    outside = re.compile(r"\.\./shared|" + "/work" + r"/|" + "shared/" + r"(DESIGN|FORMATS)\.md")
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in tracked_text_files()
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert hits == []
    assert (ROOT / "docs" / "design.md").is_file()
    assert "(design.md)" in (ROOT / "docs" / "development.md").read_text()


def test_the_wheel_lists_every_package_of_the_tree():
    """setuptools takes the explicit package list of pyproject.toml; a new subpackage must be added there."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("semlayer", "app")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, sorted(on_disk - listed)


# ----- lint: make test runs ruff and mypy before pytest; ruff is quick enough to check here too -----------------
def test_make_test_runs_the_lint_and_type_checks_first():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\blint\b", makefile, re.M)
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "-m ruff check ." in lint and "-m ruff format --check ." in lint and "-m mypy" in lint


def test_ruff_is_clean_on_the_whole_tree():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (make installs it)")
    for check in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        out = subprocess.run([ruff, *check], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr


# ----- installed with pip into a fresh virtual environment -----------------------------------------------------
def make_venv(path: Path) -> Path:
    """A fresh environment that sees this one's third-party packages (a .pth line, no download) but not
    the checkout: what `pip install` puts into it is what runs."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python: Path, *args: str) -> None:
    # --no-index: nothing is downloaded; --ignore-installed: never touch another environment's copy.
    cmd = [
        str(python),
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--no-build-isolation",
        "--ignore-installed",
        "--disable-pip-version-check",
        "-q",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return dict(env, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A copy of the working tree, so building leaves nothing in the checkout."""
    src = tmp_path_factory.mktemp("src") / "semlayer"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    return src


@pytest.mark.slow
def test_pip_install_gives_working_commands_and_api(tmp_path, sources):
    python = make_venv(tmp_path / "venv")
    pip_install(python, str(sources))
    bin_dir = python.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = run(
        [
            str(python),
            "-c",
            "import semlayer, semlayer.resources as r; print(semlayer.__file__); print(r.CHECKOUT); print(r.ASSETS)",
        ],
        elsewhere,
    )
    assert where.returncode == 0, where.stderr
    module, checkout, assets = where.stdout.split("\n")[:3]
    site = str(python.parent.parent)
    assert module.startswith(site) and checkout == "None" and assets.startswith(site)

    help_ = run([str(bin_dir / "semlayer"), "--help"], elsewhere)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: semlayer ")
    assert "validate" in help_.stdout and "predict" in help_.stdout
    version = run([str(bin_dir / "semlayer"), "--version"], elsewhere)
    assert version.stdout.strip() == f"semlayer {semlayer.__version__}"

    demo = ROOT / "assets" / "demo" / "annotations.json"
    valid = run([str(bin_dir / "semlayer"), "validate", str(demo)], elsewhere)
    assert (valid.returncode, valid.stdout) == (0, f"{demo}: valid\n"), valid.stderr
    broken = elsewhere / "broken.json"
    broken.write_text('{"images": [], "annotations": [{"regions": 3}]}')
    bad = run([str(bin_dir / "semlayer"), "validate", str(broken)], elsewhere)
    assert bad.returncode in (1, 2) and "Traceback" not in bad.stderr

    app_help = run([str(bin_dir / "semlayer-app"), "--help"], elsewhere)
    assert app_help.returncode == 0 and app_help.stdout.startswith("usage: semlayer-app ")
    # The app's defaults are the bundled demo data, model and fine-tuning config, and train.py is there.
    defaults = run(
        [
            str(python),
            "-c",
            "import app.main as m, semlayer.finetune as f, app.security as s; "
            "c = m.config_from_args(m.build_parser().parse_args([])); "
            "print(c.data, c.checkpoint, c.train_config, (f.ROOT / 'train.py').is_file(), c.workspace, "
            "s.allowed_paths(c)[1])",
        ],
        elsewhere,
    )
    assert defaults.returncode == 0, defaults.stderr
    data, checkpoint, train_config, has_train, workspace, served = defaults.stdout.split()
    assert data.endswith("semlayer/_bundled/assets/demo/annotations.json") and data.startswith(site)
    assert checkpoint.endswith("semlayer/_bundled/assets/checkpoints/sln_tiny_synth.pt")
    assert train_config.endswith("semlayer/_bundled/configs/tiny_synth.yaml") and has_train == "True"
    assert workspace == str(elsewhere / "workspace") and served == assets  # the demo images can be shown

    (elsewhere / "example.py").write_text(api_example())
    example = run([str(python), "example.py"], elsewhere, timeout=600)
    assert example.returncode == 0, example.stderr
    assert re.search(r"^amodal AP \d\.\d{3}, occluded-part mIoU \d\.\d{3}$", example.stdout, re.M), example.stdout


@pytest.mark.slow
def test_editable_install_runs_the_checkout(tmp_path, sources):
    python = make_venv(tmp_path / "venv")
    pip_install(python, "-e", str(sources))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        [str(python), "-c", "import semlayer, semlayer.resources as r; print(semlayer.__file__, r.ASSETS)"], elsewhere
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(sources / "semlayer" / "__init__.py"), str(sources / "assets")]
    help_ = run([str(python.parent / "semlayer"), "--version"], elsewhere)
    assert help_.stdout.strip() == f"semlayer {semlayer.__version__}", help_.stderr
