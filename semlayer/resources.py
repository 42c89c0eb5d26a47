"""Where the files that come with semlayer are: the demo data, the shipped model and the training configs.

In a source checkout (and an editable install) they are the repository's ``assets/`` and ``configs/``; a wheel
(``pip install .``) has no repository beside the package, so it carries copies in ``semlayer/_bundled/``
(pyproject.toml lists them).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_BUNDLED = _PACKAGE / "_bundled"

CHECKOUT: Path | None = None if _BUNDLED.is_dir() else _PACKAGE.parent  # the repository, when run from one
ROOT: Path = _BUNDLED if CHECKOUT is None else CHECKOUT
ASSETS = ROOT / "assets"
CONFIGS = ROOT / "configs"
DEMO_ANNOTATIONS = ASSETS / "demo" / "annotations.json"
DEMO_IMAGES = ASSETS / "demo" / "images"
