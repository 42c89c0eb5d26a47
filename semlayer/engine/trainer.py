"""The training loop: optimizer and schedule, AMP on CUDA, DDP, validation losses, checkpoints, logs, curves.

Exact resume: the data order is a pure function of (seed, epoch) (`ResumableSampler`), augmentation a pure
function of (seed, epoch, index) (`semlayer.data.AmodalDataset`), and model, optimizer, scheduler, scaler and
every process's RNG states are in the checkpoint; validation runs under a forked RNG with BatchNorm frozen,
so it changes nothing a later iteration sees. A run interrupted at N and resumed therefore ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .. import distributed as D
from ..data import AmodalDataset, build_dataset, collate, targets_to
from ..errors import ConfigError, SemlayerError
from ..io_utils import atomic_write_bytes, atomic_write_text
from ..model import build_model, load_init_weights
from ..model.checkpoint import read_checkpoint, save_checkpoint
from .checkpoint import rng_state, set_rng_state

log = logging.getLogger(__name__)


class TrainingError(SemlayerError):
    """Training cannot go on (e.g. the loss became NaN)."""


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` that can start inside an epoch (``start`` samples of this process skipped), so a
    resumed run continues the interrupted epoch without loading the batches it already saw."""

    def __init__(self, dataset: AmodalDataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def lr_factor(iteration: int, cfg: dict[str, Any]) -> float:
    """Learning-rate multiplier at ``iteration``: linear warm-up, then cosine or step decay."""
    total = cfg["max_iters"]
    warm = cfg["warmup_iters"]
    if iteration < warm:
        alpha = iteration / warm
        return cfg["warmup_factor"] * (1 - alpha) + alpha
    if cfg["schedule"] == "cosine":
        progress = min(1.0, (iteration - warm) / max(1, total - warm))
        floor = cfg["min_lr_factor"]
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # Steps are given as fractions of max_iters (<= 1) or as absolute iterations (> 1).
    steps = [int(s * total) if s <= 1 else int(s) for s in cfg["steps"]]
    return cfg["gamma"] ** sum(iteration >= s for s in steps)


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW; no weight decay on norm parameters and biases (as torchvision's references do)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])
    return torch.optim.AdamW(groups, lr=cfg["lr"])


@dataclass
class TrainResult:
    """What a run ended with: the trained model (unwrapped from DDP), its iteration, the best validation
    (or, without a validation set, training) loss and the last logged mean losses."""

    model: nn.Module
    iteration: int
    out_dir: Path
    best: float | None
    last_losses: dict[str, float] = field(default_factory=dict)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: AmodalDataset, sampler: ResumableSampler, batch_size: int, workers: int, seed: int) -> DataLoader:
    # A private generator: creating the loader's iterator must not draw from the global torch RNG, or a
    # resumed run (which creates it mid-epoch) would diverge from an uninterrupted one.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def _frozen_bn(model: nn.Module) -> list[nn.Module]:
    bns: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.eval()
    return bns


def freeze_all_but(model: nn.Module, trainable: list[str]) -> list[nn.Module]:
    """``train.trainable``: only the parameters of the modules named (or under a name) in ``trainable``
    train, all of them when it is empty. Returns the BatchNorm layers left without a trainable parameter:
    the training loop keeps them in eval mode, so their running statistics stay as loaded and the frozen
    part computes exactly what it did before (e.g. refitting one head on a trained network)."""
    if not trainable:
        return []
    names = [name for name, _ in model.named_parameters()]
    unused = [t for t in trainable if not any(_under(n, t) for n in names)]
    if unused:
        raise ConfigError(
            f"train.trainable: {', '.join(map(repr, unused))} names no module with parameters "
            f"in this model (e.g. {', '.join(sorted({n.rsplit('.', 2)[0] for n in names})[:4])})"
        )
    for name, p in model.named_parameters():
        p.requires_grad_(any(_under(name, t) for t in trainable))
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
    ]


def _under(name: str, module: str) -> bool:
    """Whether parameter ``name`` belongs to ``module`` (a dotted module name)."""
    return name == module or name.startswith(module + ".")


@torch.no_grad()
def validation_losses(
    model: nn.Module, loader: DataLoader, device: torch.device, weights: dict[str, float]
) -> dict[str, float]:
    """Mean losses over a validation loader (all processes together). The model stays in training mode (the
    detection losses only exist there), with BatchNorm statistics frozen and the RNG state restored after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        was_training = model.training
        model.train()
        bns = _frozen_bn(model)
        sums: dict[str, float] = {}
        count = 0
        for images, targets in loader:
            images = [im.to(device) for im in images]
            losses = model(images, targets_to(targets, device))
            losses = {k: float(v) for k, v in losses.items()}
            losses["loss"] = sum(weights.get(k, 1.0) * v for k, v in losses.items())
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v * len(images)
            count += len(images)
        for m in bns:
            m.train()
        model.train(was_training)
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
    D.all_reduce_sum(t)
    n = max(1.0, float(t[-1]))
    return {k: float(v) / n for k, v in zip(keys, t[:-1].tolist())}


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Training (and validation) losses against iteration, log scale; written atomically as PNG."""
    fig = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    names = sorted({k for r in train for k in r if k.startswith("loss")})
    for name in names:
        pts = [(r["iteration"], r[name]) for r in train if name in r and r[name] > 0]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, label=name, linewidth=2.0 if name == "loss" else 1.0)
    if val:
        x, y = zip(*[(r["iteration"], r["loss"]) for r in val])
        ax.plot(x, y, "o-", color="black", label="val loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if any(np.size(line.get_ydata()) for line in ax.get_lines()):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.97, bottom=0.1)  # fixed margins: tight_layout costs ~0.5 s
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _read_log(path: Path, upto: int) -> list[dict[str, Any]]:
    """Records of an existing log up to iteration ``upto`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(rec, dict) and rec.get("iteration", upto + 1) <= upto:
            out.append(rec)
    return out


def train(
    config: dict[str, Any],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    resume: bool = False,
    init: str | None = None,
    train_data: tuple[str, str] | None = None,
    val_data: tuple[str, str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train the model a validated ``config`` describes; write ``out_dir``/last.pt, best.pt, log.jsonl, curves.png.

    ``train_data``/``val_data`` are (annotation file, image folder) overrides of the config's data; without
    any, the config's synthetic sets are generated. ``resume`` continues ``out_dir``/last.pt (its config is
    used, with ``train.max_iters`` from ``config``). ``init`` fine-tunes from a checkpoint or weights file.
    ``stop_at`` ends the run early as an interruption would (the schedule still spans ``max_iters``).
    Works alone or under ``torchrun`` (one process per CPU share or GPU)."""
    out = Path(out_dir)
    info = D.init_distributed(device)
    try:
        ckpt = read_checkpoint(out / "last.pt") if resume else None
        if ckpt is not None:  # the run's own config, with the schedule's new length
            config = {**ckpt["config"], "train": {**ckpt["config"]["train"], "max_iters": config["train"]["max_iters"]}}
        run, data = _start(
            config, out, info, ckpt=ckpt, init=init, train_data=train_data, val_data=val_data, workers=workers
        )
        tcfg = config["train"]
        end = tcfg["max_iters"] if stop_at is None else min(stop_at, tcfg["max_iters"])
        bar = tqdm(
            total=tcfg["max_iters"],
            initial=run.iteration,
            disable=not (progress and info.is_main),
            unit="it",
            dynamic_ncols=True,
            desc="train",
        )
        window = _LossWindow()
        while run.iteration < end:
            train_one_epoch(run, data, end=end, bar=bar, window=window)
        bar.close()
        D.barrier()
        if info.is_main:
            names = ("last.pt", "best.pt", "log.jsonl", "curves.png")
            log.info("done at iteration %d; wrote %s", run.iteration, ", ".join(str(out / n) for n in names))
        return TrainResult(run.model, run.iteration, out, run.best, run.last_losses)
    finally:
        D.cleanup()


@dataclass
class _Run:
    """What a training run holds and changes as it goes: the model (and its DDP wrapper), the optimizer, the
    schedule, the iteration, the best loss so far and the log records (the main process's)."""

    config: dict[str, Any]
    out: Path
    info: D.DistInfo
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    frozen_bns: list[nn.Module]  # BatchNorm layers kept in eval mode (`freeze_all_but`)
    categories: list[dict[str, Any]]  # the training data's, in label order
    use_amp: bool
    weights: dict[str, float]  # loss weights by loss name (1 when not named)
    iteration: int = 0
    best: float | None = None
    last_losses: dict[str, float] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tcfg(self) -> dict[str, Any]:
        return self.config["train"]

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"


@dataclass
class _TrainData:
    """The training set and its sampler (resumable inside an epoch), and the validation loader if any."""

    dataset: AmodalDataset
    sampler: ResumableSampler
    val_loader: DataLoader | None
    batch_size: int
    workers: int
    seed: int
    iters_per_epoch: int


@dataclass
class _LossWindow:
    """This process's training values summed since the last log line, and when that line was written."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    since: float = field(default_factory=time.perf_counter)

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def close(self, device: torch.device) -> tuple[dict[str, float], float]:
        """The window's means over every process and its seconds per iteration; a new window starts."""
        mean = D.all_reduce_mean({k: v / self.count for k, v in self.sums.items()}, device)
        now = time.perf_counter()
        seconds = (now - self.since) / self.count
        self.sums, self.count, self.since = {}, 0, now
        return mean, seconds


def _start(
    config: dict[str, Any],
    out: Path,
    info: D.DistInfo,
    *,
    ckpt: dict[str, Any] | None,
    init: str | None,
    train_data: tuple[str, str] | None,
    val_data: tuple[str, str] | None,
    workers: int | None,
) -> tuple[_Run, _TrainData]:
    """The run ready for its first (or resumed) iteration, in the order that fixes every random draw: seed,
    model, init weights, data, optimizer, then the checkpoint's states or the per-process seed."""
    seed = int(config["train"]["seed"])
    _seed_everything(seed)  # the same initial weights in every process
    # A resumed run takes its weights from the checkpoint, so model.init need not exist any more.
    model = build_model(config if ckpt is None else {**config, "model": {**config["model"], "init": None}})
    model = model.to(info.device)
    if init and ckpt is None:
        load_init_weights(model, init)
    frozen_bns = freeze_all_but(model, list(config["train"].get("trainable", [])))  # older checkpoints: no key
    train_ds, val_ds = _datasets(config, train_data, val_data)
    run = _new_run(config, out, info, model, frozen_bns, train_ds.categories)
    if ckpt is not None:
        _restore(run, ckpt)
    else:
        torch.manual_seed(seed + info.rank)  # proposal sampling differs per process, like its data shard
    data = _train_data(config, info, train_ds, val_ds, workers)
    _open_log(run, resumed=ckpt is not None)
    if info.is_main:
        log.info(
            "training %s (%s) for %d iterations on %d process(es), %s; %d training images, %s; out: %s",
            config["model"]["kind"],
            config["model"]["backbone"],
            run.tcfg["max_iters"],
            info.world_size,
            info.device,
            len(train_ds),
            f"{len(val_ds)} validation images" if val_ds is not None else "no validation set",
            out,
        )
    return run, data


def _datasets(
    config: dict[str, Any], train_data: tuple[str, str] | None, val_data: tuple[str, str] | None
) -> tuple[AmodalDataset, AmodalDataset | None]:
    """The training set and the validation set (None without one): the files given, else the config's files,
    else its synthetic sets."""
    train_ds = build_dataset(config, "train", True, *(train_data or (None, None)))
    val_ds = None
    if val_data or config["data"]["val"].get("annotations"):
        val_ds = build_dataset(config, "val", False, *(val_data or (None, None)))
    elif not (train_data or config["data"]["train"].get("annotations")):
        val_ds = build_dataset(config, "val", False)
    # The training data's categories, not the init checkpoint's: a fine-tune's labels mean the new data's classes.
    class_names = [c["name"] for c in train_ds.categories]
    if len(class_names) != config["model"]["num_classes"]:
        raise ConfigError(
            f"model.num_classes: the training data has {len(class_names)} classes "
            f"({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''}), "
            f"the config says {config['model']['num_classes']}"
        )
    if len(train_ds) == 0:
        raise ConfigError("the training set is empty")
    return train_ds, val_ds


def _new_run(
    config: dict[str, Any],
    out: Path,
    info: D.DistInfo,
    model: nn.Module,
    frozen_bns: list[nn.Module],
    categories: list[dict[str, Any]],
) -> _Run:
    tcfg = config["train"]
    ddp_model: nn.Module = model
    if info.distributed:
        ddp_model = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    optimizer = build_optimizer(model, tcfg)
    use_amp = bool(tcfg["amp"]) and info.device.type == "cuda"
    return _Run(
        config=config,
        out=out,
        info=info,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, tcfg)),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        frozen_bns=frozen_bns,
        categories=categories,
        use_amp=use_amp,
        weights={k: float(v) for k, v in tcfg["loss_weights"].items()},
    )


def _restore(run: _Run, ckpt: dict[str, Any]) -> None:
    """Continue where a checkpoint stopped: weights, optimizer, schedule, scaler, this process's RNG states."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.iteration, run.best = int(ckpt["iteration"]), ckpt.get("best")
    states = ckpt["rng"]
    set_rng_state(states[run.info.rank] if run.info.rank < len(states) else states[0])


def _train_data(
    config: dict[str, Any],
    info: D.DistInfo,
    train_ds: AmodalDataset,
    val_ds: AmodalDataset | None,
    workers: int | None,
) -> _TrainData:
    seed = int(config["train"]["seed"])
    nworkers = config["data"]["workers"] if workers is None else workers
    batch = int(config["train"]["batch_size"])
    sampler = ResumableSampler(train_ds, info.world_size, info.rank, seed)
    val_loader = None
    if val_ds is not None:
        val_sampler = ResumableSampler(val_ds, info.world_size, info.rank, seed, shuffle=False)
        val_loader = _loader(val_ds, val_sampler, batch, nworkers, seed)
    iters_per_epoch = max(1, math.ceil(sampler.num_samples / batch))
    return _TrainData(train_ds, sampler, val_loader, batch, nworkers, seed, iters_per_epoch)


def _open_log(run: _Run, *, resumed: bool) -> None:
    """Start ``log.jsonl`` (main process): empty, or a resumed run's records up to its checkpoint."""
    if not run.info.is_main:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    run.records = _read_log(run.log_path, run.iteration) if resumed else []
    atomic_write_text(run.log_path, "".join(json.dumps(r) + "\n" for r in run.records))


def _append_log(run: _Run, record: dict[str, Any]) -> None:
    # One JSON line per write, flushed: a crash can cut at most the last line, which readers skip.
    run.records.append(record)
    with open(run.log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train_one_epoch(run: _Run, data: _TrainData, *, end: int, bar: tqdm, window: _LossWindow) -> None:
    """Train from ``run.iteration`` to the end of its epoch (or to iteration ``end``), logging, validating
    and writing checkpoints when the config says."""
    epoch, offset = divmod(run.iteration, data.iters_per_epoch)
    data.sampler.set_epoch(epoch)
    data.sampler.start = offset * data.batch_size
    data.dataset.set_epoch(epoch)
    for images, targets in _loader(data.dataset, data.sampler, data.batch_size, data.workers, data.seed + epoch):
        values = train_step(run, images, targets)
        run.iteration += 1
        window.add(values)
        bar.update(1)
        _after_step(run, data, end=end, bar=bar, window=window)
        if run.iteration >= end:
            break


def train_step(run: _Run, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One optimizer step on a batch; returns the losses (and the gradient norm when clipped) as floats."""
    for m in run.frozen_bns:  # validation puts the whole model back in training mode
        m.eval()
    dev = run.info.device
    images = [im.to(dev, non_blocking=True) for im in images]
    targets = targets_to(targets, dev)
    with torch.autocast(device_type=dev.type, enabled=run.use_amp):
        losses = run.ddp_model(images, targets)
        total = sum(run.weights.get(k, 1.0) * v for k, v in losses.items())
    values = {k: float(v.detach()) for k, v in losses.items()}
    values["loss"] = float(total.detach())
    if not math.isfinite(values["loss"]):
        raise TrainingError(
            f"the loss is not finite at iteration {run.iteration + 1} ({values}); "
            "lower train.lr or raise train.warmup_iters"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    if run.tcfg["clip_grad_norm"] > 0:
        run.scaler.unscale_(run.optimizer)
        values["grad_norm"] = float(nn.utils.clip_grad_norm_(run.model.parameters(), run.tcfg["clip_grad_norm"]))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return values


def _after_step(run: _Run, data: _TrainData, *, end: int, bar: tqdm, window: _LossWindow) -> None:
    """The hooks after each step: a log line, validation and checkpoints, each when it is due."""
    it, tcfg = run.iteration, run.tcfg
    if it % tcfg["log_every"] == 0 or it == end:
        _log_training(run, window, bar)
    val_now = it % tcfg["val_every"] == 0 or it == end
    is_best = _validate(run, data.val_loader) if val_now else False
    if val_now or it % tcfg["checkpoint_every"] == 0:
        _write_checkpoints(run, is_best)


def _log_training(run: _Run, window: _LossWindow, bar: tqdm) -> None:
    mean, seconds = window.close(run.info.device)
    run.last_losses = mean
    if run.info.is_main:
        lr = run.optimizer.param_groups[0]["lr"]
        _append_log(run, {"split": "train", "iteration": run.iteration, **mean, "lr": lr, "time": seconds})
        bar.set_postfix(loss=f"{mean['loss']:.3f}", lr=f"{lr:.2g}")


def _validate(run: _Run, val_loader: DataLoader | None) -> bool:
    """Validation losses logged; whether this is the best loss so far (validation, else training loss)."""
    metric = run.last_losses.get("loss")
    if val_loader is not None:
        val = validation_losses(run.ddp_model, val_loader, run.info.device, run.weights)
        metric = val["loss"]
        if run.info.is_main:
            _append_log(run, {"split": "val", "iteration": run.iteration, **val})
    if metric is not None and (run.best is None or metric < run.best):
        run.best = metric
        return True
    return False


def _write_checkpoints(run: _Run, is_best: bool) -> None:
    """``last.pt`` (and ``best.pt`` when best, or when there is none yet) and ``curves.png``; every process
    hands its RNG states to the main process, which writes."""
    rngs = D.all_gather_objects(rng_state())
    if not run.info.is_main:
        return
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "iteration": run.iteration,
        "rng": rngs,
        "config": run.config,
        "class_names": [c["name"] for c in run.categories],
        "categories": run.categories,
        "best": run.best,
    }
    save_checkpoint(run.out / "last.pt", state)
    if is_best or not (run.out / "best.pt").exists():
        save_checkpoint(run.out / "best.pt", state)
    plot_curves(run.records, run.out / "curves.png")
