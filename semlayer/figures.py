"""The README's figures, rendered by the project itself (`python -m semlayer figures`, `make figures`)."""

from __future__ import annotations

from pathlib import Path

from . import formats, semdist, viz
from .errors import FormatError
from .images import read_image
from .resources import DEMO_ANNOTATIONS, DEMO_IMAGES

__all__ = ["DEMO_ANNOTATIONS", "DEMO_IMAGES", "README_IMAGE_ID", "render_readme_figures"]
# The demo image the README shows: several overlapping objects, heavy occlusion included.
README_IMAGE_ID = 3


def render_readme_figures(
    out_dir: str | Path, data: str | None = None, images: str | None = None, image_id: int | None = None
) -> list[Path]:
    """Level sets, one instance's sem-dist surface and heat map, and the global layering map of one image."""
    out_dir = Path(out_dir)
    annset = formats.load(data or DEMO_ANNOTATIONS)
    image_dir = Path(images) if images else (Path(data).parent / "images" if data else DEMO_IMAGES)
    wanted = README_IMAGE_ID if image_id is None else image_id
    scenes = annset.scenes_for_image(wanted) or annset.scenes[:1]
    if not scenes:
        raise FormatError(str(data or DEMO_ANNOTATIONS), "annotations", "at least one annotated image")
    scene = scenes[0]
    image = read_image(image_dir / scene.file_name)
    maps = semdist.encode_scene(scene)
    # The most occluded instance shows every level of the map.
    rates = scene.occlude_rates()
    focus = max(range(len(scene)), key=lambda i: rates[i])
    written = []
    for name, figure in (
        ("level_sets.png", viz.level_set_figure(image, scene, maps=maps)),
        (
            "semdist_surface.png",
            viz.semdist_surface(maps[focus], title=f"sem-dist surface of '{scene.instances[focus].name}'"),
        ),
        (
            "semdist_heatmap.png",
            viz.semdist_heatmap(maps[focus], title=f"sem-dist map of '{scene.instances[focus].name}'"),
        ),
        ("global_layers.png", viz.global_layering_figure(image, scene)),
        ("overlay.png", viz.overlay_by_rank(image, scene, view="amodal")),
    ):
        written.append(Path(viz.save_png(figure, out_dir / name)))
    return written
