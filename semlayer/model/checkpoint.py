"""Checkpoint files: read, write, check and export them, and rebuild their model for inference (the training
state that resuming also needs, such as RNG states, is written by `semlayer.engine`).

A checkpoint is a ``torch.save`` dict: ``format`` ("semlayer-checkpoint"), ``version`` (the checkpoint format
number, `VERSION`), ``semlayer_version`` (the package version that wrote it), ``model``
(state_dict), ``optimizer``, ``scheduler``, ``scaler``, ``iteration``, ``rng`` (python, numpy and torch
states of every process: `semlayer.engine.checkpoint.rng_state`), ``config`` (the full validated
configuration), ``class_names``, ``categories``, ``best`` (best validation loss so far). Only plain containers and tensors are stored, so it
loads with ``torch.load(weights_only=True)``.

``categories`` maps the model's contiguous labels back to the training data's categories: label k (1..C)
is ``categories[k - 1]`` = ``{"id": the dataset's category id, "name": its name}`` (class-agnostic models:
``[{"id": 1, "name": "object"}]``). ``class_names`` (the same names) stays for older readers. Checkpoints
written before ``categories`` existed read as ids 1..C with their class names (`checkpoint_categories`).

Compatibility: `VERSION` goes up only when a change would make older semlayer versions misread a checkpoint
(an entry removed, renamed or given another meaning); new optional entries keep it. A checkpoint with a
higher format number than this code reads is refused with a message naming the version that wrote it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import __version__
from ..errors import FormatError
from ..io_utils import atomic_write_bytes
from .build import build_model

FORMAT = "semlayer-checkpoint"
VERSION = 1  # the checkpoint format number (see the module docstring); not the package version


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format, format number and the writing package version) atomically."""
    buf = io.BytesIO()
    torch.save({**state, "format": FORMAT, "version": VERSION, "semlayer_version": __version__}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, with a clear `FormatError` for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(str(path), "", "a semlayer checkpoint (file not found)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, runtime) for damaged files
        raise FormatError(str(path), "", f"a readable semlayer checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FormatError(
            str(path),
            "format",
            f"a semlayer checkpoint (format {FORMAT!r}); for other weights files use model.init / --init",
        )
    check_format_version(ckpt, str(path))
    for key in ("model", "config", "class_names"):
        if key not in ckpt:
            raise FormatError(str(path), key, "this entry of a semlayer checkpoint")
    return ckpt


def check_format_version(ckpt: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint of a newer format than this code reads (`VERSION`), naming who wrote it."""
    number = ckpt.get("version", 1)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise FormatError(source, "version", f"a checkpoint format number (an integer >= 1), got {number!r}")
    if number > VERSION:
        writer = ckpt.get("semlayer_version", "an unknown version")
        raise FormatError(
            source,
            "version",
            f"checkpoint format {VERSION} or older; this file has format {number}, "
            f"written by semlayer {writer}, and this is semlayer {__version__}: upgrade semlayer "
            "to load it",
        )


def check_categories(categories: Any, source: str, entry: str = "categories") -> list[dict[str, Any]]:
    """``categories`` as a list of ``{"id": int, "name": str}`` records with unique ids (a `FormatError`
    naming ``source`` and ``entry[i]`` otherwise); other fields of a record are left out."""
    if not isinstance(categories, (list, tuple)):
        raise FormatError(source, entry, f"a list of {{'id', 'name'}} records, got {type(categories).__name__}")
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, cat in enumerate(categories):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise FormatError(source, f"{entry}[{i}].id", f"an integer category id, got {cid!r}")
        if cid in seen:
            raise FormatError(source, f"{entry}[{i}].id", f"a unique category id; {cid} comes twice")
        if not isinstance(cat.get("name"), str):
            raise FormatError(source, f"{entry}[{i}].name", f"a category name (a string), got {cat.get('name')!r}")
        seen.add(cid)
        out.append({"id": cid, "name": cat["name"]})
    return out


def categories_from_names(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Categories with ids 1..C for class names in label order (what checkpoints without ``categories`` mean)."""
    return [{"id": i, "name": str(n)} for i, n in enumerate(class_names, start=1)]


def checkpoint_categories(ckpt: dict[str, Any], source: str = "checkpoint") -> list[dict[str, Any]]:
    """A checkpoint's categories in label order (see the module docstring); ids 1..C for older checkpoints."""
    names = [str(n) for n in ckpt["class_names"]]
    if "categories" not in ckpt:
        return categories_from_names(names)
    cats = check_categories(ckpt["categories"], source)
    if len(cats) != len(names):
        raise FormatError(source, "categories", f"one category per class name ({len(names)}), got {len(cats)}")
    return cats


def load_for_inference(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict, list[dict[str, Any]]]:
    """Rebuild the model of a checkpoint for inference: ``(model in eval mode on device, config, categories)``,
    ``categories`` as `checkpoint_categories` gives them."""
    ckpt = read_checkpoint(path, "cpu")
    categories = checkpoint_categories(ckpt, str(path))
    config = ckpt["config"]
    model_cfg = dict(config["model"], init=None)  # the checkpoint's own weights replace any init file
    model = build_model({**config, "model": model_cfg})
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise FormatError(str(path), "model", f"weights matching the checkpoint's own config ({exc})") from None
    model.to(device).eval()
    return model, config, categories


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict, list[str]]:
    """Rebuild the model of a checkpoint for inference: ``(model in eval mode on device, config, class_names)``
    (`load_for_inference` also gives the categories' dataset ids)."""
    model, config, categories = load_for_inference(path, device)
    return model, config, [c["name"] for c in categories]


def export_for_inference(src: str | Path, dst: str | Path) -> Path:
    """Copy a training checkpoint without what only resuming needs (optimizer, scheduler, RNG states):
    the file to ship or share. It still loads with `load_checkpoint` and works as ``--init``."""
    ckpt = read_checkpoint(src, "cpu")
    keep: dict[str, Any] = {k: ckpt[k] for k in ("model", "config", "class_names", "iteration", "best") if k in ckpt}
    keep["categories"] = checkpoint_categories(ckpt, str(src))  # ids 1..C when an older checkpoint has none
    return save_checkpoint(dst, keep)
