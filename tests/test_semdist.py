import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapes import rect, toy_scene

from semlayer import semdist
from semlayer.order import overlapping_pairs
from semlayer.scene import AmodalScene, Instance


def test_toy_scene_values_follow_the_definition():
    maps = semdist.encode_scene(toy_scene(), K=3, tau=6)
    s2 = maps[1].full()
    # Occluded 2x2 corner of region 2 (x 3..4, y 3..4): layer 1, distance 1 to the visible part / outside.
    np.testing.assert_allclose(s2[3:5, 3:5], 1 + 1 / 6, rtol=1e-6)
    # Visible pixel (x 6, y 4): two pixels from the border of the visible region.
    assert s2[4, 6] == pytest.approx(2 + 2 / 6)
    assert (s2[~rect(8, 10, 3, 3, 9, 7)] == 0).all()
    assert maps[1].box == (3, 3, 9, 7)
    layers = semdist.instance_layer_maps(toy_scene(), K=3)
    assert layers.dtype == np.int8 and layers[1, 3, 3] == 1 and layers[1, 4, 6] == 0 and layers[1, 0, 0] == -1
    g = semdist.global_layering_map([i.amodal for i in toy_scene().instances], (8, 10), K=3)
    assert g.dtype == np.uint8 and g[3, 3] == 2 and g[1, 1] == 1 and g[0, 0] == 0


def test_layering_agreement_of_a_predicted_G_with_the_instances():
    a, b = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    a[0:2, 0:4] = True  # 8 px
    b[1:3, 2:6] = True  # 8 px, 2 of them over a: the instances' G covers 14 px, 2 of them at 2
    own = semdist.global_layering_map([a, b], (4, 6), K=3)
    assert semdist.layering_agreement(own, [a, b]) == 1.0
    G = np.minimum(own, 1)  # a GLM that misses the overlap: 12 of 14 covered pixels agree
    assert semdist.layering_agreement(G, [a, b]) == pytest.approx(12 / 14)
    G[3, 0] = 1  # and claims an object where no instance is: 12 of 15
    assert semdist.layering_agreement(G, [a, b]) == pytest.approx(12 / 15)
    assert semdist.layering_agreement(np.zeros((4, 6), np.uint8), []) is None


def test_delta_saturates_at_tau_and_uses_euclidean_distance():
    s = AmodalScene({"id": 1, "height": 41, "width": 41}, [Instance(1, rect(41, 41, 0, 0, 41, 41))])
    m = semdist.encode_scene(s, K=2, tau=30)[0].values
    # Centre of a 41x41 square whose border counts as outside: 21 px to the nearest outside pixel.
    assert m[20, 20] == pytest.approx(1 + 21 / 30)
    assert semdist.encode_scene(s, K=2, tau=6)[0].values[20, 20] == pytest.approx(2.0)


def test_clipping_at_K_minus_1_and_external_occlusion():
    h, w = 12, 12
    masks = [rect(h, w, 0, 0, 6, 6), rect(h, w, 0, 0, 8, 8), rect(h, w, 0, 0, 10, 10), rect(h, w, 0, 0, 12, 12)]
    s = AmodalScene({"id": 1, "height": h, "width": w}, [Instance(i + 1, m, rank=i + 1) for i, m in enumerate(masks)])
    layers = semdist.instance_layer_maps(s, K=3)
    assert layers[3, 0, 0] == 2  # 3 instances in front, clipped to K-1
    assert layers[3, 11, 11] == 0
    ext = rect(h, w, 10, 10, 12, 12)
    s.set_visible([v & ~ext if i == 3 else v for i, v in enumerate(s.visible_masks())])
    layers = semdist.instance_layer_maps(s, K=3)
    assert layers[3, 11, 11] == 1 and layers[3, 9, 11] == 0


def _random_scene(draw_rects, h, w, external):
    instances = [Instance(i + 1, rect(h, w, *r)) for i, r in enumerate(draw_rects)]
    ranks = list(range(1, len(instances) + 1))
    for inst, r in zip(instances, ranks):
        inst.rank = r
    scene = AmodalScene({"id": 1, "height": h, "width": w}, instances)
    if external is not None:
        vis = scene.visible_masks()
        vis[-1] = vis[-1] & ~rect(h, w, *external)
        scene.set_visible(vis)
    return scene


@st.composite
def scenes(draw):
    h = draw(st.integers(8, 40))
    w = draw(st.integers(8, 40))
    n = draw(st.integers(1, 6))
    rects = []
    for _ in range(n):
        x0 = draw(st.integers(0, w - 2))
        y0 = draw(st.integers(0, h - 2))
        rects.append((x0, y0, draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))))
    perm = draw(st.permutations(list(range(n))))
    rects = [rects[i] for i in perm]
    ext = draw(st.none() | st.tuples(st.integers(0, w // 2), st.integers(0, h // 2), st.just(w), st.just(h)))
    return _random_scene(rects, h, w, ext)


@settings(max_examples=60, deadline=None)
@given(scenes(), st.integers(2, 5), st.sampled_from([1.0, 3.0, 6.0, 10.5]))
def test_encode_decode_is_lossless(scene, K, tau):
    maps = semdist.encode_scene(scene, K=K, tau=tau)
    layers = semdist.instance_layer_maps(scene, K=K)
    visible = scene.visible_masks()
    for i, (inst, m) in enumerate(zip(scene.instances, maps)):
        full = m.full()
        assert full.dtype == np.float32
        assert (full >= 0).all() and (full <= K).all()
        np.testing.assert_array_equal(m.amodal(), inst.amodal)
        np.testing.assert_array_equal(m.visible(), visible[i])
        np.testing.assert_array_equal(m.occluded(), inst.amodal & ~visible[i])
        np.testing.assert_array_equal(m.layers(), layers[i])
    # Order: every overlapping pair whose overlap is not entirely clipped decodes in the right direction.
    decoded = semdist.decode_scene(maps, scene.image)
    for a, b in overlapping_pairs(scene.ranks(), [i.amodal for i in scene.instances]):
        va, vb = semdist.pairwise_votes(maps[a], maps[b])
        if va != vb:
            assert va > vb
            assert decoded.instances[a].rank < decoded.instances[b].rank
    for i, inst in enumerate(decoded.instances):
        np.testing.assert_array_equal(inst.amodal, scene.instances[i].amodal)


def test_decode_scene_round_trip_of_visible_masks_with_K3():
    scene = toy_scene()
    decoded = semdist.decode_scene(semdist.encode_scene(scene), scene.image)
    assert decoded.ranks() == [1, 2]
    for a, b in zip(decoded.visible_masks(), scene.visible_masks()):
        np.testing.assert_array_equal(a, b)


def test_bad_parameters():
    with pytest.raises(ValueError, match="K must be"):
        semdist.encode_scene(toy_scene(), K=0)
    with pytest.raises(ValueError, match="tau must be"):
        semdist.encode_scene(toy_scene(), tau=0)


def test_empty_instance_is_all_zero():
    s = AmodalScene({"id": 1, "height": 5, "width": 5}, [Instance(1, np.zeros((5, 5), bool))])
    m = semdist.encode_scene(s)[0]
    assert m.full().sum() == 0 and not m.amodal().any()
    assert cv2.__version__  # OpenCV is the distance-transform engine


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_pairwise_votes_count_the_definition(seed, K):
    """Votes on random layer crops (boxes overlapping or not) equal the full-frame count of pixels
    where both maps are inside and one is on a lower layer; from_layers and decoded maps agree."""
    rng = np.random.default_rng(seed)
    shape = (20, 24)
    maps = []
    for _ in range(2):
        x0, y0 = int(rng.integers(0, 20)), int(rng.integers(0, 16))
        x1, y1 = int(rng.integers(x0 + 1, 25)), int(rng.integers(y0 + 1, 21))
        layers = rng.integers(-1, K, size=(y1 - y0, x1 - x0)).astype(np.int8)
        maps.append(semdist.SemDistMap.from_layers(layers, (x0, y0, x1, y1), shape, K))
    la, lb = maps[0].layers(), maps[1].layers()
    both = (la >= 0) & (lb >= 0)
    expected = (int((both & (la < lb)).sum()), int((both & (lb < la)).sum()))
    assert semdist.pairwise_votes(*maps) == expected
    assert semdist.pairwise_votes(maps[1], maps[0]) == expected[::-1]
    decoded = [semdist.SemDistMap(m.values, m.box, m.shape, K) for m in maps]  # no cached layers
    np.testing.assert_array_equal(decoded[0].layers(), la)
    assert semdist.pairwise_votes(*decoded) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 6), st.integers(0, 6)), max_size=9))
def test_box_pairs_are_the_pairs_of_boxes_that_share_a_pixel(specs):
    boxes = [(x, y, x + w, y + h) for x, y, w, h in specs]  # exclusive ends; w or h 0 = an empty box

    def pixels(b):
        return {(x, y) for x in range(b[0], b[2]) for y in range(b[1], b[3])}

    expected = [
        (i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if pixels(boxes[i]) & pixels(boxes[j])
    ]
    assert semdist.box_pairs(boxes) == expected
    # Boxes that only touch along an edge share no pixel.
    assert semdist.box_pairs([(0, 0, 5, 5), (5, 0, 8, 5), (4, 4, 6, 6)]) == [(0, 2), (1, 2)]


def test_decode_layers_is_safe_for_any_value():
    """A value above K (outside any level) is inside the amodal mask, as `amodal` says: the visible layer,
    never -1; values at or below 0 are outside."""
    values = np.array([[-0.5, 0.0, 0.2, 1.0, 1.5, 2.0, 2.7, 3.0, 3.2, 7.0]], np.float32)
    np.testing.assert_array_equal(semdist.decode_layers(values, 3), [[-1, -1, 2, 2, 1, 1, 0, 0, 0, 0]])
    m = semdist.SemDistMap(values, (0, 0, 10, 1), (1, 10), 3)
    np.testing.assert_array_equal(m.layers() >= 0, m.amodal())
