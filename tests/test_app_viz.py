"""The app's OpenCV figures in semlayer.viz: layer map, sem-dist heat panel, selection outline."""

import matplotlib
import numpy as np
import pytest

from semlayer import viz
from semlayer.scene import AmodalScene, Instance
from semlayer.semdist import encode_scene, instance_layer_maps

H, W = 120, 160
DARK = viz.LAYER_OUTSIDE_COLOR


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def toy():
    """front (rank 1) over middle (2) over back (3). Back, x 25..59, y 5..39, is hidden by front alone on
    x 25..29, y 10..19; by middle alone on x 30..49, y 20..39 and x 25..29, y 30..39; by both (layer 2) on
    x 25..29, y 20..29: layer 0 on 675 px, layer 1 on 500, layer 2 on 50."""
    return AmodalScene(
        {"id": 1, "height": H, "width": W},
        [
            Instance(1, rect(10, 10, 30, 30), rank=1, name="front"),
            Instance(2, rect(20, 20, 50, 45), rank=2, name="middle"),
            Instance(3, rect(25, 5, 60, 40), rank=3, name="back"),
        ],
    )


def blend(color, base=DARK, a=0.8):
    """The figure's fill: ``a`` of the layer colour over the background, rounded."""
    c, b = np.float32(color), np.float32(base)
    return tuple(int(v) for v in np.rint(b + (c - b) * np.float32(a)))


def count(canvas, color):
    return int(np.all(canvas == np.array(color, np.uint8), axis=2).sum())


def test_layer_colors_run_from_visible_green_through_magenta_to_violet():
    assert viz.layer_colors(3).tolist() == [[40, 210, 90], [255, 40, 190], [90, 70, 255]]
    assert viz.layer_colors(4)[2].tolist() == [172, 55, 222]  # halfway from magenta to violet
    assert viz.layer_colors(2).tolist() == [[40, 210, 90], [255, 40, 190]]
    with pytest.raises(ValueError, match="K must be at least 2"):
        viz.layer_colors(1)


def test_layer_map_of_a_scene_instance_colours_each_layer(toy):
    fig = viz.layer_map_figure(toy, 3, K=3, margin=16, out_size=320)
    # Box x 25..59, y 5..39 grown by 16 and clipped: x 9..75, y 0..55 (67 x 56), enlarged 320 / 67.
    zoom = 320 / 67
    height = round(56 * zoom)
    assert fig.shape[1] == 320 and fig.shape[0] > height  # + the legend strip
    canvas = fig[:height]
    for k, area in enumerate((675, 500, 50)):
        filled = count(canvas, blend(viz.layer_colors(3)[k]))
        # Every layer pixel shows its colour, but for the outlines between layers and the layer numbers.
        assert 0.5 * area * zoom**2 < filled <= area * zoom**2, (k, filled)
    assert count(canvas, DARK) > 0.97 * (67 * 56 - 35 * 35) * zoom**2  # outside: dark
    # The same layers given as an array draw the same map; only the caption (no name) differs.
    from_array = viz.layer_map_figure(instance_layer_maps(toy, K=3)[2], K=3, margin=16, out_size=320)
    assert np.array_equal(from_array[:height], canvas)
    # K = 2: the layer-2 pixels are "hidden by 1+", in layer 1's colour.
    k2 = viz.layer_map_figure(toy, 3, K=2)[:height]
    assert count(k2, blend(viz.layer_colors(2)[1])) > 0.75 * 550 * zoom**2


def test_layer_map_shows_the_image_dimmed_outside(toy):
    image = np.full((H, W, 3), 200, np.uint8)
    canvas = viz.layer_map_figure(toy, 1, image=image)[:50]
    # Front's box x 10..29 grown by 16 (clipped at 0): its top-left corner is outside the mask.
    assert tuple(canvas[2, 2]) == tuple(int(v) for v in np.rint(viz._dim(image[:1, :1], 0.5)[0, 0]))


def test_layer_map_refuses_what_it_cannot_draw(toy):
    with pytest.raises(ValueError, match="give the instance_id"):
        viz.layer_map_figure(toy)
    with pytest.raises(KeyError):
        viz.layer_map_figure(toy, 9)
    layers = instance_layer_maps(toy, K=3)[2]
    with pytest.raises(ValueError, match="only meaningful with a scene"):
        viz.layer_map_figure(layers, 3)
    with pytest.raises(ValueError, match=r"-1 \(outside\) or 0..1, got -1..2"):
        viz.layer_map_figure(layers, K=2)
    with pytest.raises(ValueError, match="2-D integer array"):
        viz.layer_map_figure(layers.astype(np.float32))
    with pytest.raises(ValueError, match="empty"):
        viz.layer_map_figure(np.full((4, 4), -1, np.int8))
    with pytest.raises(ValueError, match="image is 10x10 but the scene is 160x120"):
        viz.layer_map_figure(toy, 1, image=np.zeros((10, 10, 3), np.uint8))


def test_semdist_heat_panel_colours_S_and_draws_its_levels(toy):
    sdm = encode_scene(toy, K=3, tau=6.0)[0]  # front: all visible; S = 3 from 6 px inside its edge
    fig = viz.semdist_heat_panel(sdm, margin=16, out_size=320)
    # Box x 10..29, y 10..29 grown by 16: x 0..45, y 0..45 (46 x 46), enlarged 320 / 46.
    zoom = 320 / 46
    canvas = fig[:320]
    magma = (matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    centre = round((20 + 0.5) * zoom)
    assert tuple(canvas[centre, centre]) == tuple(magma[255])  # S = K at the centre
    assert tuple(canvas[3, 3]) == tuple(magma[0])  # outside, S = 0
    # x 13, y 20: 4 px from the outside, so S = 2 + 4/6, drawn at 255 * (2 + 4/6) / 3 = 226.7 of the map.
    assert tuple(canvas[round(20.5 * zoom), round(13.5 * zoom)]) == tuple(magma[227])
    cyan = np.all(canvas == (0, 255, 255), axis=2)
    assert cyan[:, : round(9 * zoom)].sum() == 0 and cyan.sum() > 4 * 20 * zoom  # the outline, nothing outside
    with pytest.raises(ValueError, match="empty"):
        viz.semdist_heat_panel(
            encode_scene(AmodalScene({"id": 2, "height": 4, "width": 4}, [Instance(1, np.zeros((4, 4), bool))]))[0]
        )


def test_selection_outline_redraws_only_the_instance_box(toy):
    scale = 2
    canvas = np.full((H * scale, W * 2 * scale, 3), 50, np.uint8)  # e.g. "both": the scene on the right
    before = canvas.copy()
    out = canvas.copy()
    out[:, W * scale :] = viz.selection_outline(canvas[:, W * scale :], toy, 2)  # the page places the view
    assert np.array_equal(canvas, before)  # a copy is drawn on
    changed = np.argwhere(np.any(out != canvas, axis=2))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    # middle: x 20..49, y 20..44, enlarged twice and shifted right by the left half; the halo is 5 px wide.
    assert (W + 20) * scale - 5 <= x0 and x1 <= (W + 50) * scale + 4 and 20 * scale - 5 <= y0 and y1 <= 45 * scale + 4
    assert x1 - x0 >= 29 * scale and y1 - y0 >= 24 * scale
    color = viz.instance_color(2)
    assert count(out, color) > 0 and count(out, (255, 255, 255)) > 0  # its own colour on a white halo
    with pytest.raises(ValueError, match="cannot hold"):
        viz.selection_outline(canvas[:100, W * scale :], toy, 2)
    with pytest.raises(KeyError):
        viz.selection_outline(canvas[:, W * scale :], toy, 9)
