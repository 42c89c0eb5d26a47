"""The configuration (model, data, training): YAML with a fixed schema. Unknown keys and wrong types are
`ConfigError`s that name the key (``train.lr: expected a number, got 'fast'``); missing keys take the defaults
below."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    default: Any
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns what was expected when the value is wrong
    nullable: bool = False


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a value > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a value >= 0"


def _probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "a value in [0, 1]"


def _int_list(n: int | None = None) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        if not ok or (n is not None and len(v) != n):
            return f"a list of {n or 'some'} positive integers"
        return None

    return check


def _number_list(n: int | None = None, positive: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and (x > 0 or not positive) for x in v)
        if not ok or (n is not None and len(v) != n) or not v:
            return f"a list of {n or 'some'} positive numbers"
        return None

    return check


def _name_list(v: Any) -> str | None:
    ok = all(isinstance(x, str) and x and not x.startswith(".") and not x.endswith(".") for x in v)
    return None if ok else "a list of module names such as 'roi_heads.mask_predictor.semdist'"


def _scale_range(v: Any) -> str | None:
    bad = _number_list(2)(v)
    return bad or (None if v[0] <= v[1] else "[low, high] with low <= high")


INT, NUM, STR, BOOL, LIST = (int,), (int, float), (str,), (bool,), (list,)

SYNTH = {
    "num_images": Field(INT, 2000, check=_positive),
    "seed": Field(INT, 0),
    "size": Field(INT, 256, check=_positive),
    "max_instances": Field(INT, 6, check=_positive),
    "min_instances": Field(INT, 1, check=_non_negative),
}
FILES = {
    "annotations": Field(STR, None, nullable=True),
    "images": Field(STR, None, nullable=True),
}

SCHEMA: dict[str, dict[str, Any]] = {
    "model": {
        "kind": Field(STR, "sln", choices=("sln", "maskrcnn_amodal", "maskrcnn_visible")),
        "backbone": Field(STR, "tiny", choices=("tiny", "resnet50_fpn", "resnet101_fpn")),
        "num_classes": Field(INT, 1, check=_positive),
        "K": Field(INT, 3, check=_positive),
        "tau": Field(NUM, 6.0, check=_positive),
        "fpn_channels": Field(INT, 64, check=_positive),
        "width_mult": Field(NUM, 1.0, check=_positive),
        "trainable_layers": Field(INT, 3, check=_non_negative),
        "norm": Field(STR, "frozen_bn", choices=("frozen_bn", "bn", "gn")),
        "min_size": Field(INT, 256, check=_positive),
        "max_size": Field(INT, 512, check=_positive),
        "anchor_sizes": Field(LIST, [16, 32, 64, 128, 256], check=_int_list(5)),
        "aspect_ratios": Field(LIST, [0.5, 1.0, 2.0], check=_number_list()),
        "rpn_pre_nms_top_n_train": Field(INT, 1000, check=_positive),
        "rpn_pre_nms_top_n_test": Field(INT, 500, check=_positive),
        "rpn_post_nms_top_n_train": Field(INT, 500, check=_positive),
        "rpn_post_nms_top_n_test": Field(INT, 300, check=_positive),
        "rpn_batch_size_per_image": Field(INT, 256, check=_positive),
        "box_batch_size_per_image": Field(INT, 512, check=_positive),
        "representation_size": Field(INT, 1024, check=_positive),
        "mask_head_channels": Field(INT, 256, check=_positive),
        "mask_head_convs": Field(INT, 4, check=_positive),
        "glm_channels": Field(INT, 128, check=_positive),
        "glm_convs": Field(INT, 2, check=_positive),
        "box_score_thresh": Field(NUM, 0.05, check=_probability),
        "box_nms_thresh": Field(NUM, 0.5, check=_probability),
        "box_detections_per_img": Field(INT, 100, check=_positive),
        "semdist_beta": Field(NUM, 0.1, check=_positive),
        # 3: the shipped model's sem-dist layer (its checkpoint loads as trained); 1: a cheaper 1x1 layer.
        "semdist_kernel": Field(INT, 3, choices=(1, 3)),
        # 28: the sem-dist layer at the layering maps' resolution; 14: a coarser, cheaper one.
        "semdist_resolution": Field(INT, 28, choices=(14, 28)),
        # One set of layering maps per class (as Mask R-CNN's masks are) instead of one shared set; False is
        # what the shipped model was trained with.
        "class_specific_layers": Field(BOOL, False),
        # Ablations (SLN only): false drops the global layering module (the mask branch then sees the RoI
        # features alone) or the sem-dist head (the layering maps alone are trained and predicted).
        "glm": Field(BOOL, True),
        "semdist_head": Field(BOOL, True),
        "init": Field(STR, None, nullable=True),
    },
    "data": {
        "class_agnostic": Field(BOOL, True),
        "seed": Field(INT, 0),
        "workers": Field(INT, 0, check=_non_negative),
        "augment": {
            "hflip": Field(NUM, 0.5, check=_probability),
            "scale_range": Field(LIST, [0.8, 1.2], check=_scale_range),
        },
        "synthetic": SYNTH,
        "val_synthetic": {**SYNTH, "num_images": Field(INT, 32, check=_positive), "seed": Field(INT, 1)},
        "train": FILES,
        "val": FILES,
    },
    "train": {
        "batch_size": Field(INT, 4, check=_positive),
        "max_iters": Field(INT, 1000, check=_positive),
        "optimizer": Field(STR, "sgd", choices=("sgd", "adamw")),
        "lr": Field(NUM, 0.02, check=_positive),
        "momentum": Field(NUM, 0.9, check=_probability),
        "weight_decay": Field(NUM, 1e-4, check=_non_negative),
        "warmup_iters": Field(INT, 100, check=_non_negative),
        "warmup_factor": Field(NUM, 0.001, check=_probability),
        "schedule": Field(STR, "cosine", choices=("cosine", "step")),
        "steps": Field(LIST, [0.67, 0.89], check=_number_list()),
        "gamma": Field(NUM, 0.1, check=_positive),
        "min_lr_factor": Field(NUM, 0.0, check=_probability),
        "clip_grad_norm": Field(NUM, 10.0, check=_non_negative),
        "amp": Field(BOOL, True),
        "seed": Field(INT, 0),
        "log_every": Field(INT, 20, check=_positive),
        "val_every": Field(INT, 500, check=_positive),
        "checkpoint_every": Field(INT, 500, check=_positive),
        "loss_weights": Field((dict,), {}),
        # Module names (prefixes) to train, everything else frozen; [] trains the whole model.
        "trainable": Field(LIST, [], check=_name_list),
    },
}


def defaults() -> dict[str, Any]:
    """The full default configuration."""

    def fill(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: fill(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}

    return fill(SCHEMA)


def _type_name(types: tuple[type, ...]) -> str:
    names: dict[tuple[type, ...], str] = {
        INT: "an integer",
        NUM: "a number",
        STR: "a string",
        BOOL: "true or false",
        LIST: "a list",
    }
    return names.get(types, "a mapping")


def _check(schema: dict[str, Any], given: Any, prefix: str, source: str) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'}: expected a mapping, got {type(given).__name__}")
    out: dict[str, Any] = {}
    for key, value in given.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            raise ConfigError(f"{source}: {path}: unknown key (known: {', '.join(schema)})")
        spec = schema[key]
        if isinstance(spec, dict):
            out[key] = _check(spec, value if value is not None else {}, path, source)
            continue
        if value is None and spec.nullable:
            out[key] = None
            continue
        # bool is an int in Python; a YAML `true` where a number belongs is a mistake, not 1.
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in spec.types) or not isinstance(value, spec.types):
            raise ConfigError(f"{source}: {path}: expected {_type_name(spec.types)}, got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{source}: {path}: expected one of {list(spec.choices)}, got {value!r}")
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{source}: {path}: expected {problem}, got {value!r}")
        out[key] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "loss_weights":
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check a (partial) configuration against the schema and return it completed with the defaults."""
    checked = _check(SCHEMA, config, "", source)
    full = _merge(defaults(), checked)
    weights = full["train"]["loss_weights"]
    for name, w in weights.items():
        if not (isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0):
            raise ConfigError(f"{source}: train.loss_weights.{name}: expected a number >= 0, got {w!r}")
    for section in ("synthetic", "val_synthetic"):
        syn = full["data"][section]
        if syn["min_instances"] > syn["max_instances"]:
            raise ConfigError(
                f"{source}: data.{section}.min_instances: expected <= max_instances "
                f"({syn['max_instances']}), got {syn['min_instances']}"
            )
    model = _check_model(full["model"], source)
    if full["data"]["class_agnostic"] and model["num_classes"] != 1:
        raise ConfigError(
            f"{source}: model.num_classes: expected 1 with data.class_agnostic: true, got {model['num_classes']}"
        )
    return full


def _check_model(model: dict[str, Any], source: str) -> dict[str, Any]:
    if model["min_size"] > model["max_size"]:
        raise ConfigError(
            f"{source}: model.min_size: expected <= model.max_size ({model['max_size']}), got {model['min_size']}"
        )
    if model["trainable_layers"] > 5:
        raise ConfigError(f"{source}: model.trainable_layers: expected 0..5, got {model['trainable_layers']}")
    return model


def validate_model_config(model: dict[str, Any], source: str = "model config") -> dict[str, Any]:
    """Check the ``model`` section alone and complete it with the defaults."""
    checked = _check(SCHEMA["model"], model, "model", source)
    return _check_model(_merge(defaults()["model"], checked), source)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return validate_config(data if data is not None else {}, str(path))
