"""The app's trust boundary: a client (browser or script) reads only what the app produced or what the command
line named, and no path a client sends reaches the file system.

- Datasets other than ``--data`` are chosen by name among the annotation files under ``--data-root``
  (`dataset_choices`); image names from any file stay inside their folder (`semlayer.images.image_file`).
- ``/predict`` and the page's upload take only files Gradio received as uploads (`uploaded_file`).
- Gradio serves files only from `allowed_paths` (image folders, ``assets/``, what the app wrote), and
  `FileGuard` narrows that: no hidden (dot) file or folder, and in the workspace only images and exports.
- Messages and the page's config name files relative to the data root or workspace (`public_text`).
- Listening beyond this machine needs credentials (`credentials`, `check_exposure`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from semlayer.errors import ConfigError
from semlayer.resources import ASSETS  # the demo data and shipped model: the checkout's, or a wheel's copy

from .handlers import AppConfig, UserError

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
AUTH_ENV = "SEMLAYER_AUTH"
ANNOTATION_SUFFIXES = (".json",)
# Workspace parts a client may fetch: uploaded images (shown) and exports (downloaded). Never the session
# state, undo stacks, fine-tune logs or checkpoints.
WORKSPACE_SERVED = ("images", "exports")
MAX_CHOICES = 2000  # annotation files / image folders listed from --data-root
# Under --data-root, only images are served (the annotation files are opened, never downloaded).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ----- credentials -----------------------------------------------------------------------------


def parse_credential(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"{where} must be USER:PASS")
    return user, password


def credentials(auth: str | None, auth_file: Path | None, env: Mapping[str, str] = os.environ) -> list[tuple[str, str]]:
    """Logins from ``--auth USER:PASS``, ``--auth-file FILE`` (one ``user:password`` a line; blank lines and
    ``#`` comments skipped) and ``$SEMLAYER_AUTH`` (``user:password``): a file or the environment keeps the
    password out of ``ps``."""
    found = []
    if auth is not None:
        found.append(parse_credential(auth, "--auth"))
    if env.get(AUTH_ENV):
        found.append(parse_credential(env[AUTH_ENV], AUTH_ENV))
    if auth_file is not None:
        try:
            lines = Path(auth_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"--auth-file {auth_file}: not readable ({getattr(err, 'strerror', None) or err})"
            ) from None
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                found.append(parse_credential(line, f"--auth-file {auth_file} line {n}"))
        if not found:
            raise ConfigError(f"--auth-file {auth_file}: no user:password line")
    return found


def check_exposure(host: str, logins: list[tuple[str, str]], insecure: bool) -> str | None:
    """Refuse to listen beyond this machine without a login, unless ``--insecure`` says so; returns the
    warning to log in that case."""
    if host in LOOPBACK or logins:
        return None
    if not insecure:
        raise ConfigError(
            f"--host {host} makes the app reachable from other machines: give --auth-file FILE (or --auth, or "
            f"${AUTH_ENV}), or --insecure to serve without a login"
        )
    return (
        f"--insecure: anyone who can reach {host} can read the dataset's images and annotations, edit them, "
        "upload images and start fine-tunes"
    )


# ----- choosing datasets ------------------------------------------------------------------------


def _visible_parts(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def dataset_choices(cfg: AppConfig) -> list[str]:
    """The annotation files under ``--data-root`` a client may open, as paths relative to it (hidden files
    and folders, and the workspace, left out). Empty without a data root."""
    return _choices(cfg, lambda p: p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES)


def image_folder_choices(cfg: AppConfig) -> list[str]:
    """The folders under ``--data-root`` (and the root itself, ``.``) that may serve as an image folder."""
    if cfg.data_root is None:
        return []
    return ["."] + _choices(cfg, Path.is_dir)


def _choices(cfg: AppConfig, keep: Any) -> list[str]:
    if cfg.data_root is None:
        return []
    root = cfg.data_root
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and here / d != cfg.workspace)
        for name in [*dirnames, *sorted(filenames)]:
            path = here / name
            if not name.startswith(".") and keep(path):
                out.append(path.relative_to(root).as_posix())
                if len(out) >= MAX_CHOICES:
                    return sorted(out)
    return sorted(out)


def chosen(cfg: AppConfig, name: Any, choices: Iterable[str], what: str) -> Path:
    """The file or folder a client chose, by name, among ``choices`` (listed by the server): the client's text
    is only compared, never joined into a path."""
    if cfg.data_root is None:
        raise UserError(
            "opening other datasets is off: start the app with --data-root FOLDER to choose among "
            "the annotation files there"
        )
    for choice in choices:
        if choice == name:
            return cfg.data_root if choice == "." else cfg.data_root / choice
    raise UserError(f"choose the {what} from the list (files under the data root)")


def relative_name(cfg: AppConfig, path: Path | None) -> str | None:
    """``path`` as the page names it: relative to the data root when inside it, else its file name."""
    if path is None:
        return None
    if cfg.data_root is not None:
        try:
            return Path(path).relative_to(cfg.data_root).as_posix() or "."
        except ValueError:
            pass
    return Path(path).name


# ----- what is served ---------------------------------------------------------------------------


def allowed_paths(cfg: AppConfig) -> list[str]:
    """The folders Gradio may serve from (and copy outputs from): the image folder, the data root, assets and
    the workspace. `FileGuard` narrows the workspace to its images and exports and hides dotfiles."""
    paths = [cfg.workspace, ASSETS]
    for extra in (cfg.images, cfg.data_root):
        if extra is not None and extra not in paths:
            paths.append(extra)
    return [str(p) for p in paths]


def servable(cfg: AppConfig, path: str | os.PathLike, created: Iterable[str | os.PathLike] = ()) -> bool:
    """May a client fetch ``path``: inside a served folder (or a folder Gradio created: its upload and cache
    folders) and without a hidden (dot) part below it; in the workspace only ``*/images`` and ``*/exports``;
    under the data root only images."""
    target = Path(os.path.abspath(path))
    for folder in created:
        if _inside(target, Path(os.path.abspath(folder))):
            return True
    workspace = Path(os.path.abspath(cfg.workspace))
    if _inside(target, workspace):
        rel = target.relative_to(workspace).parts
        return len(rel) >= 3 and rel[1] in WORKSPACE_SERVED and not any(p.startswith(".") for p in rel)
    for root in allowed_paths(cfg):
        root_path = Path(os.path.abspath(root))
        if _inside(target, root_path) and _visible_parts(target, root_path):
            if cfg.data_root is not None and root_path == Path(os.path.abspath(cfg.data_root)):
                return target.suffix.lower() in IMAGE_SUFFIXES
            return True
    return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return ".." not in path.relative_to(folder).parts


FILE_ROUTE = "/file="


class FileGuard:
    """ASGI middleware in front of Gradio's ``/file=`` route: a request for anything `servable` refuses gets
    403, before Gradio's own, broader check (which allows whole folders, dotfiles included)."""

    def __init__(self, app: Any, cfg: AppConfig) -> None:
        self.app, self.cfg = app, cfg

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            raw = scope.get("path", "")
            at = raw.find(FILE_ROUTE)
            if at >= 0:
                requested = unquote(raw[at + len(FILE_ROUTE) :])
                if not requested.startswith(("http://", "https://")) and not servable(
                    self.cfg, requested, _gradio_folders()
                ):
                    await _forbidden(send)
                    return
        await self.app(scope, receive, send)


async def _forbidden(send: Any) -> None:
    await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"File not allowed."})


def _gradio_folders() -> list[str]:
    """Gradio's upload folder and its cache folder (figures, copies of outputs)."""
    import gradio as gr

    folders = [gr.utils.get_upload_folder()]
    try:
        folders.append(str(gr.utils.get_cache_folder()))
    except AttributeError:
        pass
    return folders


def app_kwargs(cfg: AppConfig) -> dict[str, Any]:
    """``demo.launch(app_kwargs=...)``: the FastAPI app with `FileGuard` in front."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(FileGuard, cfg=cfg)]}


def uploaded_file(value: Any) -> Path:
    """The file a client uploaded through Gradio (``/gradio_api/upload``, as ``handle_file`` and the page's
    file input do), from an input value: refused unless it lies in Gradio's upload folder, so no client-sent
    server path is opened, and the refusal says nothing about whether such a path exists."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", value)
    if isinstance(path, (str, os.PathLike)) and str(path):
        target = Path(os.path.abspath(path))
        upload = Path(os.path.abspath(_gradio_folders()[0]))
        if _inside(target, upload) and not any(p.startswith(".") for p in target.relative_to(upload).parts):
            return target
    raise UserError("only an uploaded image file is accepted (upload it, e.g. gradio_client's handle_file)")


# ----- messages ---------------------------------------------------------------------------------

_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"`()<>]+/)+")


def public_text(cfg: AppConfig, text: str) -> str:
    """``text`` for a client: paths under the data root, the image folder, the workspace, the app's folder, the
    working folder or the temp folder relative to them, and any other absolute path cut to its last part."""
    roots: list[tuple[Path, str]] = []
    for root, label in (
        (cfg.data_root, ""),
        (cfg.images, ""),
        (cfg.workspace, "workspace/"),
        (ROOT, ""),
        (Path.cwd(), ""),
        (Path(tempfile.gettempdir()), ""),
    ):
        if root is not None:
            roots.append((Path(os.path.abspath(root)), label))
            roots.append((Path(os.path.realpath(root)), label))
    if cfg.data_root is not None and cfg.images is not None:
        rel = relative_name(cfg, cfg.images)
        roots.insert(0, (Path(os.path.abspath(cfg.images)), "" if rel == "." else rel + "/"))
    for root, label in sorted(roots, key=lambda r: -len(str(r[0]))):
        text = text.replace(str(root) + os.sep, label).replace(str(root), label.rstrip("/") or ".")
    return _ABSOLUTE.sub("", text)
