"""Amodal annotation formats: read COCOA native, COCO-style amodal (COCOA-cls, COCOA detectron, D2SA),
KINS 2019/2020 and COCO results lists (format detected from the content); write COCOA native, COCO-style,
KINS 2020 and results lists; validate whole files. See docs/formats.md."""

from ._base import Violation
from .api import detect, from_dict, load, read_json, save
from .coco import kins_clusters, to_coco, to_kins
from .compact import CompactScenes
from .cocoa import to_cocoa
from .results import to_results
from .validate import ValidationReport, validate, validation_report

__all__ = [
    "CompactScenes",
    "ValidationReport",
    "Violation",
    "detect",
    "from_dict",
    "load",
    "read_json",
    "save",
    "to_coco",
    "to_cocoa",
    "to_kins",
    "kins_clusters",
    "to_results",
    "validate",
    "validation_report",
]
