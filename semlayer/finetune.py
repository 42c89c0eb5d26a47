"""Fine-tuning a model on an annotator's corrections: train.py in a background process, live progress
(with an ETA) from its log.jsonl, a held-out split of the corrected images, old-against-new evaluation on
it, and a model history to roll back to. UI-free: the app and scripts use it alike.

The job runs in its own process group so Cancel stops train.py and anything it spawned (data loader
workers) at once; `stop_all` ends every job's group when the process exits (see `end_jobs_on_exit`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from . import formats
from .model.checkpoint import read_checkpoint, save_checkpoint
from .config import load_config, validate_model_config
from .errors import FormatError, SemlayerError
from .evaluate import evaluate
from .images import image_file, read_image
from .io_utils import atomic_write_json, atomic_write_text
from .predict import Predictor
from .resources import ROOT  # where train.py is: the checkout, or its copy in an installed wheel
from .scene import AmodalScene, AnnotationSet
from .workspace import EditSession

LOG_NAME = "log.jsonl"
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Progress:
    """What the page shows about a fine-tune job."""

    state: str  # running | done | failed | cancelled
    step: int = 0
    total: int | None = None
    loss: float | None = None
    checkpoint: Path | None = None
    message: str = ""
    eta_s: float | None = None  # seconds left at the mean iteration time so far (None until one is known)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


def next_run_dir(workspace: Path) -> Path:
    """``workspace/finetune-N`` with the first N not taken."""
    n = 1
    while (workspace / f"finetune-{n}").exists():
        n += 1
    return workspace / f"finetune-{n}"


def finetune_config(
    train_config: Path,
    checkpoint_model: dict[str, Any] | None,
    out: Path,
    class_agnostic: bool | None = None,
    num_classes: int | None = None,
) -> Path:
    """The config a fine-tune runs with, written as ``out/finetune_config.yaml``: ``train_config``'s data
    and schedule with the ``model`` section of the checkpoint being fine-tuned (when it has one). Under
    another architecture ``--init`` would load only the weights that fit and silently start the rest
    from scratch. ``class_agnostic`` (when given) sets ``data.class_agnostic``, and one class for it;
    ``num_classes`` (when given) the number of classes of class-specific data."""
    config = load_config(train_config)
    if checkpoint_model is not None:
        source = f"the model section of the checkpoint being fine-tuned (with {train_config})"
        config["model"] = {**validate_model_config(dict(checkpoint_model), source), "init": None}
    if class_agnostic is not None:
        config["data"]["class_agnostic"] = bool(class_agnostic)
        if class_agnostic:
            config["model"]["num_classes"] = 1
    if num_classes is not None and not class_agnostic:
        config["model"]["num_classes"] = int(num_classes)
    return atomic_write_text(Path(out) / "finetune_config.yaml", yaml.safe_dump(config, sort_keys=False))


# Weights with one block of rows per class (background first): the box classifier and regressor, the
# SLN's class-specific layering maps, the Mask R-CNN baselines' mask logits.
PER_CLASS_WEIGHTS = (
    "roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
    "roi_heads.mask_predictor.layer_logits.", "roi_heads.mask_predictor.mask_fcn_logits.",
)  # fmt: skip


def _merged_heads(ckpt: dict[str, Any], sources: list[list[int]], bias_shift: list[float]) -> dict[str, Any]:
    """The checkpoint's state with each per-class head rebuilt: the background block kept, new class k the
    mean of the model's class blocks ``sources[k]`` (1-based), its classifier bias raised by ``bias_shift[k]``."""
    classes = int(ckpt["config"]["model"]["num_classes"])
    state = dict(ckpt["model"])
    for name, tensor in ckpt["model"].items():
        if not name.startswith(PER_CLASS_WEIGHTS) or tensor.shape[0] % (classes + 1):
            continue
        blocks = tensor.reshape(classes + 1, tensor.shape[0] // (classes + 1), *tensor.shape[1:])
        merged = torch.stack([blocks[0], *(blocks[source].mean(0) for source in sources)])
        if name == "roi_heads.box_predictor.cls_score.bias":
            merged[1:] += torch.tensor(bias_shift, dtype=merged.dtype).view(-1, *[1] * (merged.dim() - 1))
        state[name] = merged.reshape(-1, *tensor.shape[1:]).contiguous()
    return state


def class_agnostic_checkpoint(checkpoint: Path, out: Path) -> Path:
    """A one-class ("object") copy of a per-class checkpoint, written as ``out/init_class_agnostic.pt``, to
    fine-tune on class-agnostic data (COCOA). Each per-class head keeps its background block and gets, as
    its one object block, the mean of the class blocks; the classifier's object bias gains log(C), so its
    object logit starts at a lower bound of the per-class model's log-probability of "any class"
    (log-sum-exp >= mean + log C). Every other weight is kept as trained."""
    ckpt = read_checkpoint(checkpoint)
    config = ckpt["config"]
    classes = int(config["model"]["num_classes"])
    if classes == 1:
        return Path(checkpoint)
    state = _merged_heads(ckpt, [list(range(1, classes + 1))], [math.log(classes)])
    model = {**config["model"], "num_classes": 1}
    return save_checkpoint(Path(out) / "init_class_agnostic.pt", {
        "model": state, "config": {**config, "model": model, "data": {**config.get("data", {}), "class_agnostic": True}},
        "class_names": ["object"], "categories": [{"id": 1, "name": "object"}],
    })  # fmt: skip


def mapped_class_checkpoint(checkpoint: Path, categories: Sequence[dict[str, Any]], out: Path) -> Path:
    """A copy of a per-class checkpoint with one class per data category (in label order: ascending id, as
    the trainer numbers them), written as ``out/init_mapped_classes.pt``: a category the model has a class
    of the same name for keeps that class's heads; any other starts from the mean of the model's classes."""
    ckpt = read_checkpoint(checkpoint)
    config = ckpt["config"]
    classes = int(config["model"]["num_classes"])
    names = [str(n) for n in ckpt.get("class_names") or []]
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    every = list(range(1, classes + 1))
    sources = [[names.index(str(c.get("name"))) + 1] if str(c.get("name")) in names else every for c in ordered]
    state = _merged_heads(ckpt, sources, [0.0] * len(sources))
    model = {**config["model"], "num_classes": len(ordered)}
    records = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in ordered]
    return save_checkpoint(Path(out) / "init_mapped_classes.pt", {
        "model": state, "config": {**config, "model": model, "data": {**config.get("data", {}), "class_agnostic": False}},
        "class_names": [r["name"] for r in records], "categories": records,
    })  # fmt: skip


def train_command(config: Path, init: Path, data: Path, images: Path, out: Path, max_iters: int) -> list[str]:
    return [
        sys.executable, str(ROOT / "train.py"), "--config", str(config), "--init", str(init),
        "--data", str(data), "--images", str(images), "--out", str(out), "--max-iters", str(max_iters),
        "--no-progress",
    ]  # fmt: skip


_RUNNING: weakref.WeakSet[FineTuneJob] = weakref.WeakSet()
_RUNNING_LOCK = threading.Lock()


def stop_all(timeout: float = 10.0) -> None:
    """Cancel every job still running in this process (their whole process groups)."""
    with _RUNNING_LOCK:
        jobs = list(_RUNNING)
    for job in jobs:
        job.cancel(timeout)


def end_jobs_on_exit() -> None:
    """End fine-tune process groups with the app: on a normal exit, Ctrl-C (SIGINT) and SIGTERM. They run in
    their own groups (so Cancel reaches their workers), which is also why a terminal's Ctrl-C misses them."""
    atexit.register(stop_all)

    def on_signal(signum: int, frame: Any) -> None:
        stop_all()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # what the server's own shutdown expects
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


class FineTuneJob:
    """One background training process writing ``out/log.jsonl``; ``plan`` is what `prepare_finetune` set
    up for it (None for a bare command)."""

    def __init__(
        self, command: list[str], out: Path, total: int | None = None, note: str = "", plan: FineTunePlan | None = None
    ) -> None:
        self.command = list(command)
        self.note = note  # how it trains (e.g. class-agnostic, and why), for the page
        self.total = total
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.out / "stderr.txt", "wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: cancel reaches every child
        )
        self.cancelled = False
        self.started = time.monotonic()
        self.plan = plan
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    def _eta(self, step: int, total: int | None, timed_steps: int, timed_s: float) -> float | None:
        """Seconds left: the iterations to go at the mean time per iteration the log states (train.py's
        ``time``), else at the wall-clock time per iteration since the start (which includes start-up)."""
        if total is None or step <= 0:
            return None
        per_step = timed_s / timed_steps if timed_steps else (time.monotonic() - self.started) / step
        return max(0, total - step) * per_step

    def cancel(self, timeout: float = 10.0) -> None:
        """Terminate the process group; kill it if it does not stop within ``timeout`` seconds."""
        if self.proc.poll() is not None:
            return
        self.cancelled = True
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:  # ended meanwhile
            self.proc.wait()

    def records(self) -> list[dict]:
        """The complete JSON lines of the log so far (a line being written is skipped)."""
        path = self.out / LOG_NAME
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def checkpoint(self) -> Path | None:
        """The checkpoint the run reports last (``checkpoint`` in the log), else ``out/last.pt`` (what
        train.py writes), else the newest checkpoint file in ``out``."""
        for rec in reversed(self.records()):
            if isinstance(rec.get("checkpoint"), str):
                path = Path(rec["checkpoint"])
                path = path if path.is_absolute() else self.out / path
                if path.is_file():
                    return path
        if (self.out / "last.pt").is_file():
            return self.out / "last.pt"
        found = [p for p in self.out.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

    def progress(self) -> Progress:
        code = self.proc.poll()
        step, total, loss = 0, self.total, None
        timed_steps, timed_s = 0, 0.0  # iterations whose mean time a record states, and their seconds
        for rec in self.records():
            if rec.get("split", "train") != "train":
                continue  # validation records carry metrics, not training progress
            previous = step
            step = int(rec.get("iteration", rec.get("step", step)))
            total = rec.get("total", total)
            if isinstance(rec.get("loss"), (int, float)):
                loss = float(rec["loss"])
            if isinstance(rec.get("time"), (int, float)) and step > previous:
                timed_steps, timed_s = timed_steps + step - previous, timed_s + float(rec["time"]) * (step - previous)
        total = int(total) if isinstance(total, (int, float)) else None
        if code is None:
            return Progress("running", step, total, loss, eta_s=self._eta(step, total, timed_steps, timed_s))
        self._stderr.close()
        if self.cancelled:
            return Progress("cancelled", step, total, loss, message="cancelled")
        if code != 0:
            tail = (self.out / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return Progress("failed", step, total, loss, message=tail[-1] if tail else f"exit status {code}")
        ckpt = self.checkpoint()
        if ckpt is None:
            return Progress("failed", step, total, loss, message=f"train.py wrote no checkpoint into {self.out}")
        return Progress("done", step, total, loss, checkpoint=ckpt)


# ----- fine-tuning a workspace: what to train on, held-out images, model history ----------------------------
RUNS_FOLDER = "runs"
HISTORY_FILE = "history.json"
HISTORY_FORMAT = "semlayer-model-history"
HELD_OUT_EVERY = 5  # every 5th corrected image is held out from training, to compare old and new model on
COMPARE_SCORE_THR = 0.05  # AP needs the low-score tail (see `semlayer.evaluate.THRESHOLDED_SCORE`)


class FineTuneRefused(SemlayerError):
    """A fine-tune that would learn nothing (or cannot start); the message says why, for the annotator."""


def runs_dir(workspace: str | os.PathLike) -> Path:
    """Where a workspace's fine-tunes live (each ``runs/finetune-N`` keeps its checkpoint for rollback)."""
    return Path(workspace) / RUNS_FOLDER


def held_out_indices(corrected: Sequence[int]) -> list[int]:
    """The corrected images training does not see: every `HELD_OUT_EVERY`-th in dataset order, from the
    first (so at least one once two are corrected); none while only one is (it is all there is to learn)."""
    ordered = sorted(set(corrected))
    return ordered[::HELD_OUT_EVERY] if len(ordered) >= 2 else []


def training_classes(
    categories: Sequence[dict[str, Any]], edited: Sequence[AmodalScene], model_classes: int, model_names: Sequence[str]
) -> tuple[str, str]:
    """How a fine-tune treats classes, and why in words: ``agnostic`` (one "object" class), ``keep`` (the
    model's classes are the data's categories) or ``map`` (per category, heads taken over by name).

    COCOA has no categories: class-agnostic, a per-class model's heads merged into one. COCOA-cls, D2SA and
    KINS name a category per object: trained per category, unless the model itself is class-agnostic (its
    head is kept) or an edited object has none."""
    if not categories:
        return "agnostic", "class-agnostic (the data has no categories)"
    if any(inst.category is None for scene in edited for inst in scene.instances):
        return "agnostic", "class-agnostic (an edited object has no category)"
    if model_classes == 1:
        return "agnostic", "class-agnostic (the model is)"
    names = [str(c.get("name", c["id"])) for c in sorted(categories, key=lambda c: int(c["id"]))]
    if names == [str(n) for n in model_names]:
        return "keep", f"per category ({len(names)} categories, the model's own)"
    known = sum(name in model_names for name in names)
    return "map", (
        f"per category ({len(names)} categories; {known} of them the model knows by name, the others start "
        "from the mean of its classes)"
    )


@dataclass
class FineTunePlan:
    """What `prepare_finetune` set up in ``out``: the command to run and the data it trains and is judged on."""

    out: Path
    command: list[str]
    base: Path  # the checkpoint being fine-tuned
    train_data: Path  # the corrected dataset without the held-out images (COCOA)
    held_out: list[int]  # scene indices of the held-out corrected images
    held_out_data: Path | None  # those images' corrected annotations (COCOA), None when none is held out
    images: Path
    iterations: int
    note: str  # how it trains (classes, held-out images), for the page


def _write_split(session: EditSession, held_out: list[int], out: Path) -> tuple[Path, Path | None]:
    """The corrected dataset as COCOA without the held-out images, and the held-out images alone."""
    corrected = session.export_dict("cocoa")
    held = [session.scene_at(i) for i in held_out]
    held_ids = {scene.image_id for scene in held}
    train = {
        **corrected,
        "images": [im for im in corrected.get("images", []) if int(im["id"]) not in held_ids],
        "annotations": [a for a in corrected.get("annotations", []) if int(a["image_id"]) not in held_ids],
    }
    train_path = atomic_write_json(out / "train.cocoa.json", train)
    if not held:
        return train_path, None
    held_set = AnnotationSet(scenes=held, categories=session.annset.categories, format="cocoa")
    return train_path, atomic_write_json(out / "held_out.cocoa.json", formats.to_cocoa(held_set))


def prepare_finetune(
    session: EditSession, checkpoint: str | os.PathLike, train_config: str | os.PathLike, iterations: int
) -> FineTunePlan:
    """Set up a fine-tune of ``checkpoint`` on the session's corrections in a new ``runs/finetune-N``: the
    training file (the corrected dataset less the held-out images), the held-out file, the initial weights
    (heads merged or mapped for the data's classes, see `training_classes`) and the config (the model's own
    architecture, ``train_config``'s data and schedule). `FineTuneRefused` when no image is corrected."""
    edited = session.edited_indices()
    if not edited:
        raise FineTuneRefused(
            "nothing to fine-tune on: no image of this dataset is corrected yet (fix a mask, an order or a name "
            "first; the fine-tune learns from the corrections)"
        )
    base = Path(checkpoint)
    ckpt = read_checkpoint(base)
    model_cfg = ckpt["config"]["model"]
    classes = int(model_cfg["num_classes"])
    categories = session.annset.categories
    mode, note = training_classes(
        categories, [session.scene_at(i) for i in edited], classes, ckpt.get("class_names") or []
    )
    del ckpt  # the weights are read again only where heads are rebuilt
    out = next_run_dir(runs_dir(session.folder))
    out.mkdir(parents=True)
    held_out = held_out_indices(edited)
    train_data, held_out_data = _write_split(session, held_out, out)
    init = base
    if mode == "agnostic" and classes > 1:
        init = class_agnostic_checkpoint(base, out)
        note += f": the model's {classes} class heads merged into one"
    elif mode == "map":
        init = mapped_class_checkpoint(base, categories, out)
    config = finetune_config(
        Path(train_config), model_cfg, out, class_agnostic=mode == "agnostic", num_classes=len(categories) or None
    )
    images = session.image_dir or session.folder / "images"
    note += f"; {len(held_out)} of {len(edited)} corrected images held out to compare the models on"
    command = train_command(config, init, train_data, images, out, iterations)
    return FineTunePlan(out, command, base, train_data, held_out, held_out_data, images, iterations, note)


def start_finetune(plan: FineTunePlan) -> FineTuneJob:
    """Run a prepared fine-tune in the background."""
    return FineTuneJob(plan.command, plan.out, total=plan.iterations, note=plan.note, plan=plan)


class ModelHistory:
    """The models of one workspace, in ``runs/history.json``: each finished fine-tune's checkpoint (kept in
    its ``runs/finetune-N``), the model it started from and its held-out file, and which model is current.
    `rollback` makes the model the current one was fine-tuned from current again."""

    def __init__(self, workspace: str | os.PathLike) -> None:
        self.path = runs_dir(workspace) / HISTORY_FILE
        self.runs: list[dict[str, Any]] = []
        self.current: str | None = None
        if self.path.is_file():
            try:
                obj = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise FormatError(str(self.path), "", f"a readable model history ({err})") from None
            if (
                not isinstance(obj, dict)
                or obj.get("format") != HISTORY_FORMAT
                or not isinstance(obj.get("runs"), list)
            ):
                raise FormatError(str(self.path), "", f"a {HISTORY_FORMAT} object with a list of runs")
            self.runs, self.current = list(obj["runs"]), obj.get("current")

    def _save(self) -> None:
        obj = {"format": HISTORY_FORMAT, "version": 1, "current": self.current, "runs": self.runs}
        atomic_write_json(self.path, obj, indent=1)

    def record(self, job: FineTuneJob) -> Path | None:
        """Add a finished job's checkpoint (once) and make it current; returns it (None unless done)."""
        progress = job.progress()
        if progress.state != "done" or progress.checkpoint is None or job.plan is None:
            return None
        checkpoint = str(progress.checkpoint)
        if not any(run["checkpoint"] == checkpoint for run in self.runs):
            plan = job.plan
            held = None if plan.held_out_data is None else str(plan.held_out_data)
            self.runs.append({
                "checkpoint": checkpoint, "base": str(plan.base), "held_out_data": held, "images": str(plan.images),
                "held_out": plan.held_out, "iterations": plan.iterations,
            })  # fmt: skip
        self.current = checkpoint
        self._save()
        return progress.checkpoint

    def run_of(self, checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
        return next((run for run in self.runs if run["checkpoint"] == str(checkpoint)), None)

    def previous_model(self) -> Path | None:
        """The checkpoint the current model was fine-tuned from; None when the current one is no fine-tune."""
        run = self.run_of(self.current)
        return None if run is None else Path(run["base"])

    def rollback(self) -> Path:
        """Make the previous model current again and return its checkpoint (the fine-tuned one stays on disk)."""
        previous = self.previous_model()
        if previous is None:
            raise FineTuneRefused(
                "no earlier model to go back to: the current model is not a fine-tune of this workspace"
            )
        self.current = str(previous)
        self._save()
        return previous


@dataclass
class Comparison:
    """Amodal AP (COCO .50:.95, -1 when the images hold no object) of two models on the same held-out images."""

    old_ap: float
    new_ap: float
    images: int


def _predicted(checkpoint: str | os.PathLike, gt: AnnotationSet, images: Path, device: str) -> AnnotationSet:
    predictor = Predictor(checkpoint, device=device, semdist=False)
    scenes = []
    for scene in gt.scenes:
        predictor.set_image(read_image(image_file(images, scene.file_name), expected_hw=scene.shape))
        scenes.append(predictor.scene(COMPARE_SCORE_THR, dict(scene.image)))
    return AnnotationSet(scenes=scenes, categories=[dict(c) for c in predictor.categories], format="cocoa")


def compare(
    old_checkpoint: str | os.PathLike,
    new_checkpoint: str | os.PathLike,
    held_out: str | os.PathLike | AnnotationSet,
    images: str | os.PathLike,
    device: str = "cpu",
) -> Comparison:
    """Both models' amodal AP (`semlayer.evaluate.evaluate`) on the held-out corrected images (an annotation
    file or set; their image files in ``images``). Class-agnostic when the data has no categories or either
    model has one class (a class-agnostic fine-tune of a per-class model is judged on the same terms)."""
    gt = held_out if isinstance(held_out, AnnotationSet) else formats.load(held_out)
    preds = [_predicted(ckpt, gt, Path(images), device) for ckpt in (old_checkpoint, new_checkpoint)]
    agnostic = not gt.has_instance_categories() or any(len(p.categories) <= 1 for p in preds)
    old, new = (evaluate(gt, p, class_agnostic=agnostic)["amodal_AP"] for p in preds)
    return Comparison(float(old), float(new), len(gt))
