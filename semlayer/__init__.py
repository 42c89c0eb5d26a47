"""semlayer: amodal instance segmentation with semantics-aware distance maps (SLN, ACM MM 2019)."""

from .scene import AmodalScene, AnnotationSet, Instance

__version__ = "0.1.0"
__all__ = ["AmodalScene", "AnnotationSet", "Instance", "__version__"]
