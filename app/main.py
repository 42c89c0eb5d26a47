"""`python -m app`: start the annotation app (127.0.0.1:7860, shipped model and demo data by default)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python app/main.py` works as well as `python -m app`
    sys.path.insert(0, str(ROOT))

from app.handlers import AppConfig  # noqa: E402
from semlayer.errors import ConfigError, SemlayerError  # noqa: E402
from semlayer.figures import DEMO_ANNOTATIONS as DEMO_DATA  # noqa: E402
from semlayer.figures import DEMO_IMAGES  # noqa: E402
from semlayer.predict import DEFAULT_CHECKPOINT  # noqa: E402
from semlayer.resources import ASSETS, CHECKOUT, CONFIGS  # noqa: E402

DEFAULT_TRAIN_CONFIG = CONFIGS / "tiny_synth.yaml"
# In a checkout, the repository's workspace/; installed from a wheel, workspace/ in the current folder.
DEFAULT_WORKSPACE = CHECKOUT / "workspace" if CHECKOUT is not None else Path("workspace")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD = "50mb"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semlayer-app", description=__doc__)
    p.add_argument("--checkpoint", type=Path, help=f"model checkpoint (default: {_shown(DEFAULT_CHECKPOINT)} if present)")
    p.add_argument("--data", type=Path, help="annotation file to open (COCOA, COCO-style amodal, KINS)")
    p.add_argument("--images", type=Path, help="image folder of --data")
    p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE, help="where edits and exports are saved")
    p.add_argument("--train-config", type=Path, help="data and schedule for fine-tuning from the page; the architecture "
                   "is the checkpoint's own (default: configs/tiny_synth.yaml)")  # fmt: skip
    p.add_argument("--score-thr", type=float, default=0.5, help="predicted instances shown from this score on (default 0.5)")
    p.add_argument("--finetune-iters", type=int, default=300, help="iterations of a fine-tune started from the page")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (use it whenever --host is not 127.0.0.1)")
    return p


def _shown(path: Path) -> Path:
    """A bundled file's path as a person would type it: relative to the checkout when there is one."""
    return path.relative_to(CHECKOUT) if CHECKOUT is not None and path.is_relative_to(CHECKOUT) else path


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """Resolve defaults (demo data, shipped model) and check that what was named exists."""
    if (args.data is None) != (args.images is None):
        raise ConfigError("give --data and --images together")
    data, images = args.data, args.images
    if data is None and DEMO_DATA.is_file() and DEMO_IMAGES.is_dir():
        data, images = DEMO_DATA, DEMO_IMAGES
    for what, path, ok in (("--data", data, Path.is_file), ("--images", images, Path.is_dir)):
        if path is not None and not ok(path):
            raise ConfigError(f"{what} {path} does not exist")
    checkpoint = args.checkpoint
    if checkpoint is None and DEFAULT_CHECKPOINT.is_file():
        checkpoint = DEFAULT_CHECKPOINT
    if checkpoint is not None and not checkpoint.is_file():
        raise ConfigError(f"--checkpoint {checkpoint} does not exist")
    if not 0.0 <= args.score_thr <= 1.0:
        raise ConfigError(f"--score-thr must be in [0, 1], got {args.score_thr}")
    train_config = args.train_config or (DEFAULT_TRAIN_CONFIG if DEFAULT_TRAIN_CONFIG.is_file() else None)
    examples = sorted(p for p in DEMO_IMAGES.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)[:8] if DEMO_IMAGES.is_dir() else []
    return AppConfig(
        workspace=args.workspace.resolve(),
        data=None if data is None else data.resolve(),
        images=None if images is None else images.resolve(),
        checkpoint=None if checkpoint is None else checkpoint.resolve(),
        train_config=None if train_config is None else train_config.resolve(),
        examples=examples if checkpoint is not None else [],
        finetune_iters=args.finetune_iters,
        score_thr=args.score_thr,
        # Figures leave this machine only when listening wider: then they are worth compressing.
        png_level=0 if args.host in LOOPBACK else 1,
    )


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must be USER:PASS")
    return user, password


def allowed_paths(cfg: AppConfig) -> list[str]:
    """The only folders the server may serve files from: workspace, the opened dataset, assets."""
    paths = [cfg.workspace, ASSETS]
    if cfg.images is not None:
        paths.append(cfg.images)
    if cfg.data is not None:
        paths.append(cfg.data.parent)
    return [str(p) for p in paths]


def fail(err: Exception) -> None:
    """The error as one line on stderr (library messages may quote multi-line errors of other tools)."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        auth = parse_auth(args.auth)
    except ConfigError as err:
        fail(err)
        return 2
    if args.host not in LOOPBACK and auth is None:
        logging.warning("listening on %s without --auth: anyone who can reach this port can edit the data", args.host)
    cfg.workspace.mkdir(parents=True, exist_ok=True)

    from app.handlers import new_tab
    from app.model import load_model

    try:
        new_tab(cfg)  # fail now, with a clear message, on a broken annotation file or workspace
        if cfg.checkpoint is not None:
            load_model(cfg.checkpoint)  # ... or checkpoint; and the first page need not wait for it
    except SemlayerError as err:
        fail(err)
        return 2
    if cfg.checkpoint is None:
        logging.warning(
            "no model: %s not found and no --checkpoint given; the app shows and edits annotations only",
            _shown(DEFAULT_CHECKPOINT),
        )
    else:
        logging.info("model %s", cfg.checkpoint)
    from app.layout import build  # Gradio is slow to import: only once the input is known to be good

    demo = build(cfg)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        auth=auth,
        allowed_paths=allowed_paths(cfg),
        max_file_size=MAX_UPLOAD,
        show_error=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
