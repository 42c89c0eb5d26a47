"""Amodal annotation formats: read COCOA native, COCO-style amodal (COCOA-cls, COCOA detectron, D2SA),
KINS 2019/2020 and COCO results lists (format detected from the content); write COCOA native, COCO-style
and results lists; validate whole files. See docs/formats.md."""

from ._base import Violation
from .api import detect, from_dict, load, read_json, save
from .coco import to_coco
from .compact import CompactScenes
from .cocoa import to_cocoa
from .results import to_results
from .validate import ValidationReport, validate, validation_report

__all__ = [
    "CompactScenes", "ValidationReport", "Violation", "detect", "from_dict", "load", "read_json", "save", "to_coco",
    "to_cocoa", "to_results", "validate", "validation_report",
]
