"""`python -m app`: start the annotation app (127.0.0.1:7860, shipped model and demo data by default)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python app/main.py` works as well as `python -m app`
    sys.path.insert(0, str(ROOT))

from semlayer.finetune import end_jobs_on_exit  # noqa: E402
from app.handlers import new_tab  # noqa: E402
from app.model import load_model  # noqa: E402
from app.tab import AppConfig  # noqa: E402
from app.security import LOOPBACK, allowed_paths, app_kwargs, check_exposure, credentials, parse_credential  # noqa: E402
from semlayer.errors import ConfigError, SemlayerError  # noqa: E402
from semlayer.predict import DEFAULT_CHECKPOINT  # noqa: E402
from semlayer.resources import CHECKOUT, CONFIGS, DEMO_IMAGES  # noqa: E402
from semlayer.resources import DEMO_ANNOTATIONS as DEMO_DATA  # noqa: E402

DEFAULT_TRAIN_CONFIG = CONFIGS / "tiny_synth.yaml"
# In a checkout, the repository's workspace/; installed from a wheel, workspace/ in the current folder.
DEFAULT_WORKSPACE = CHECKOUT / "workspace" if CHECKOUT is not None else Path("workspace")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_UPLOAD = "50mb"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semlayer-app", description=__doc__)
    p.add_argument(
        "--checkpoint", type=Path, help=f"model checkpoint (default: {_shown(DEFAULT_CHECKPOINT)} if present)"
    )
    p.add_argument("--data", type=Path, help="annotation file to open (COCOA, COCO-style amodal, KINS)")
    p.add_argument("--images", type=Path, help="image folder of --data")
    p.add_argument("--data-root", type=Path, help="folder whose annotation files and image folders the page may open "
                   "(without it, only --data is opened)")  # fmt: skip
    p.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE, help="where edits and exports are saved")
    p.add_argument("--train-config", type=Path, help="data and schedule for fine-tuning from the page; the architecture "
                   "is the checkpoint's own (default: configs/tiny_synth.yaml)")  # fmt: skip
    p.add_argument(
        "--score-thr", type=float, default=0.5, help="predicted instances shown from this score on (default 0.5)"
    )
    p.add_argument("--finetune-iters", type=int, default=300, help="iterations of a fine-tune started from the page")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", metavar="USER:PASS", help="require this login (visible in ps: prefer --auth-file or "
                   "$SEMLAYER_AUTH)")  # fmt: skip
    p.add_argument("--auth-file", type=Path, metavar="FILE", help="logins, one user:password a line")
    p.add_argument("--insecure", action="store_true", help="serve a non-loopback --host without a login (anyone who "
                   "reaches the port reads and edits the data)")  # fmt: skip
    p.add_argument("--tab-idle-minutes", type=float, default=60.0, help="forget a tab or API client unused this long "
                   "(its edits are on disk; default 60)")  # fmt: skip
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
    if args.data_root is not None and not args.data_root.is_dir():
        raise ConfigError(f"--data-root {args.data_root} is not a folder")
    if not args.tab_idle_minutes > 0:
        raise ConfigError(f"--tab-idle-minutes must be positive, got {args.tab_idle_minutes}")
    if not 0.0 <= args.score_thr <= 1.0:
        raise ConfigError(f"--score-thr must be in [0, 1], got {args.score_thr}")
    train_config = args.train_config or (DEFAULT_TRAIN_CONFIG if DEFAULT_TRAIN_CONFIG.is_file() else None)
    examples = (
        sorted(p for p in DEMO_IMAGES.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)[:8]
        if DEMO_IMAGES.is_dir()
        else []
    )
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
        data_root=None if args.data_root is None else args.data_root.resolve(),
        tab_idle_s=args.tab_idle_minutes * 60.0,
    )


def parse_auth(text: str | None) -> tuple[str, str] | None:
    return None if text is None else parse_credential(text, "--auth")


def launch(
    cfg: AppConfig,
    host: str = "127.0.0.1",
    port: int | None = None,
    logins: list[tuple[str, str]] | None = None,
    **options: Any,
) -> tuple[Any, str]:
    """Build the page and serve it: only `allowed_paths`, behind `FileGuard`, with the logins given.
    Returns the Blocks and the local URL (``options`` go to ``launch``, e.g. ``prevent_thread_lock``)."""
    from app.layout import build  # late: Gradio (heavy) is imported only once the input is known to be good

    demo = build(cfg)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        auth=logins or None,
        allowed_paths=allowed_paths(cfg),
        app_kwargs=app_kwargs(cfg),
        max_file_size=MAX_UPLOAD,
        show_error=False,  # unexpected errors as a generic message: their text may name server paths
        **options,
    )
    return demo, url


def fail(err: Exception) -> None:
    """The error as one line on stderr (library messages may quote multi-line errors of other tools)."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        logins = credentials(args.auth, args.auth_file)
        exposed = check_exposure(args.host, logins, args.insecure)
    except ConfigError as err:
        fail(err)
        return 2
    if exposed:
        logging.warning("%s", exposed)
    cfg.workspace.mkdir(parents=True, exist_ok=True)

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
    end_jobs_on_exit()
    launch(cfg, args.host, args.port, logins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
