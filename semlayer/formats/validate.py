"""Whole-file validation: schema problems and consistency of what the file states.

The readers' own parser runs in collecting mode (every schema problem becomes a `Violation`, the bad
record is skipped), then each scene's records are checked against the invariants of docs/formats.md:
visible/invisible partition the amodal mask (a visible pixel outside the amodal mask is a violation in
every format), ``occlude_rate``, unique orders, a ``depth_constraint`` that names existing regions, agrees
with the orders and has no cycle, and the painter's rule where the file states the order (COCOA, COCO-style
with ``amodal_region.order``; where those orders tie, as in D2SA, under the order the masks give the tied
objects, as the readers take it).

The painter's rule is read the way the scene model reads it (`semlayer.scene`): a region in front
hides what it covers, so a visible pixel under the amodal mask of a region with a smaller order is a
contradiction (a violation). Hidden pixels that no region in front covers are *external occlusion*
(something that is not annotated is in front): valid data, which the readers keep bit for bit, so they
are only counted (`ValidationReport.external`, shown as a note). Where the order is inferred from the
masks (KINS, COCO-style without ``amodal_region.order``), visible pixels under an instance in front are
counted in a note: KINS draws its amodal and visible masks in separate passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..boxes import mask_box
from ..images import image_name_problem
from ..order import overlapping_pairs, parse_depth_constraint
from ._base import (
    Context,
    Group,
    Region,
    Repair,
    Violation,
    build_scene,
    group_ranks,
    join,
    repair_lines,
    stated_occlusion,
    summary,
)
from .masks import rle_and, rle_area, rle_or
from .api import detect, parse, read_json

TOLERANCE = 1e-6
NOTE_PATHS = 5  # regions named in a note


@dataclass
class ValidationReport:
    """What `validation_report` found: ``violations`` (the file contradicts its format or itself; empty
    when valid) and, about valid data: ``external``, the regions with external occlusion as ``(json path,
    hidden px that no region in front covers)``; ``clipped``, where the order is inferred from the masks,
    stated visible pixels under an instance in front, which the scene (the painter's rule) reads as hidden;
    ``repairs``, masks larger than their image that the readers crop (D2SA); ``occl_depth``, overlapping
    pairs ``(front path, back path, front occl_depth, back occl_depth)`` whose order (the masks', or
    ``amodal_region.order``) puts the smaller ``occl_depth`` in front."""

    violations: list[Violation] = field(default_factory=list)
    external: list[tuple[str, int]] = field(default_factory=list)
    clipped: list[tuple[str, int]] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    occl_depth: list[tuple[str, str, float, float]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def notes(self) -> list[str]:
        """Informational lines about valid data (not violations)."""
        notes = []
        if self.external:
            notes.append(
                summary(self.external, "with external occlusion (hidden by unannotated objects, {total} px in all)")
            )
        if self.clipped:
            notes.append(
                summary(
                    self.clipped,
                    "whose visible mask reaches under an instance in front ({total} px "
                    "in all; read as hidden, by the painter's rule under the order "
                    "inferred from the masks)",
                )
            )
        notes += repair_lines(self.repairs)
        if self.occl_depth:
            pairs = [(f"{front} over {back}", 0) for front, back, _, _ in self.occl_depth]
            labels = [f"occl_depth {a:g} over {b:g}" for _, _, a, b in self.occl_depth]
            notes.append(
                summary(
                    pairs,
                    "where the object in front has the smaller occl_depth (kept as the masks, "
                    "or amodal_region.order, put them; occl_depth, whose direction D2SA does "
                    "not document, is read as larger = nearer the front and only breaks ties)",
                    "overlapping pair",
                    NOTE_PATHS,
                    labels,
                )
            )
        return notes


def validate(path_or_obj: str | os.PathLike | Any) -> list[Violation]:
    """Every violation in a file (path) or parsed JSON; empty when valid and consistent.

    Raises FormatError when there is nothing to validate: unreadable file, not JSON, empty, or a
    top-level value that is neither an object nor a list.
    """
    return validation_report(path_or_obj).violations


def validation_report(path_or_obj: str | os.PathLike | Any) -> ValidationReport:
    """`validate`'s violations plus what is valid but worth a note (external occlusion)."""
    if isinstance(path_or_obj, (str, os.PathLike)):
        source, obj = str(path_or_obj), read_json(path_or_obj)
    else:
        source, obj = "<memory>", path_or_obj
    fmt = detect(obj, source)
    report = ValidationReport()
    ctx = Context(source, report.violations)
    _check_image_names(ctx, obj)
    parsed = ctx.attempt(parse, ctx, obj, fmt)
    if parsed is not None:
        for group in parsed.groups:
            _check_masks(ctx, group)
            if group.order_kind == "explicit":
                _check_orders(ctx, group)
                _check_painters_rule(ctx, group, report.external, [r.order for r in group.regions])
            elif group.order_kind == "tied":  # D2SA: the masks order the tied objects, as the readers do
                _check_painters_rule(ctx, group, report.external, group_ranks(group))
            else:
                _note_clipped_visible(group, report.clipped)
            if fmt == "cocoa":
                _check_depth_constraint(ctx, group)
            if fmt == "coco":
                _note_occl_depth(group, report.occl_depth)
    report.repairs = ctx.repairs  # the readers' crops of padded masks
    return report


def _check_image_names(ctx: Context, obj: Any) -> None:
    """Every image name stays inside its images folder: the app and `render` refuse any other."""
    images = obj.get("images") if isinstance(obj, dict) else None
    for i, rec in enumerate(images if isinstance(images, list) else []):
        name = rec.get("file_name") if isinstance(rec, dict) else None
        if isinstance(name, str) and name:
            problem = image_name_problem(name)
            if problem is not None:
                ctx.report(f"images[{i}].file_name", problem)


def _px(n: int) -> str:
    return f"{n} px"


def _check_masks(ctx: Context, group: Group) -> None:
    """Pixel counts on the stated RLEs (pycocotools' merge and area): no mask is decoded."""
    for r in group.regions:
        amodal = r.amodal_mask.rle
        area = rle_area(amodal)
        visible, invisible = r.visible_mask, r.invisible_mask
        if visible is not None and invisible is not None:
            stated = rle_or(visible.rle, invisible.rle)
            stated_inside = rle_area(rle_and(amodal, stated))
            counts = (
                (rle_area(rle_and(visible.rle, invisible.rle)), "in both"),
                (area - stated_inside, "of the amodal mask in neither"),
                (rle_area(stated) - stated_inside, "outside the amodal mask"),
            )
            parts = [f"{_px(n)} {what}" for n, what in counts if n]
            if parts:
                msg = "visible_mask and invisible_mask that partition the amodal mask; "
                ctx.report(r.path, msg + ", ".join(parts))
        else:
            for key, mask in ((r.visible_key, visible), ("invisible_mask", invisible)):
                outside = 0 if mask is None else mask.area - rle_area(rle_and(mask.rle, amodal))
                if outside:
                    ctx.report(join(r.path, key), f"a mask inside the amodal mask; {_px(outside)} outside")
        if r.occlude_rate is not None:
            # the hidden part as stated: invisible_mask, else the amodal mask minus the visible mask
            if invisible is not None:
                hidden = rle_area(rle_and(amodal, invisible.rle))
            else:
                hidden = 0 if visible is None else area - rle_area(rle_and(amodal, visible.rle))
            expected = hidden / area if area else 0.0
            if abs(r.occlude_rate - expected) > TOLERANCE:
                ctx.report(
                    join(r.path, "occlude_rate"),
                    f"{expected!r} (invisible {hidden} px / amodal {area} px), got {r.occlude_rate!r}",
                )


def _note_clipped_visible(group: Group, clipped: list[tuple[str, int]]) -> None:
    dropped: list[Repair] = []
    build_scene(group, dropped)
    clipped += [(r.json_path, r.px) for r in dropped if r.kind == "under"]


def _note_occl_depth(group: Group, found: list[tuple[str, str, float, float]]) -> None:
    """Overlapping pairs that the scene's order (the masks', or ``amodal_region.order``) puts against
    ``occl_depth`` read as larger = nearer the front; the masks' evidence is kept, the disagreement noted."""
    regions = group.regions
    if len(regions) < 2 or any(r.occl_depth is None for r in regions):
        return
    for front, back in overlapping_pairs(group_ranks(group), [r.amodal for r in regions]):
        a, b = regions[front].occl_depth, regions[back].occl_depth
        if a < b:
            found.append((regions[front].path, regions[back].path, a, b))


def _check_orders(ctx: Context, group: Group) -> None:
    first: dict[float, Any] = {}
    for r in group.regions:
        if r.order in first:
            ctx.report(
                r.order_path, f"an order unique within the annotation; {first[r.order].path} has order {r.order} too"
            )
        else:
            first[r.order] = r


def _check_painters_rule(ctx: Context, group: Group, external: list[tuple[str, int]], keys: list[float]) -> None:
    """No visible pixel under a region in front (smaller ``keys``; else a violation); hidden pixels that no
    region in front covers are external occlusion, as the readers take them (`AmodalScene.set_visible`).
    Reported in record order. Counted on the RLEs; a group with a violation is decoded to name who covers it."""
    counts = stated_occlusion(group.regions, keys)
    if any(under for under, _ in counts):
        _check_painters_rule_frames(ctx, group, external, keys)
        return
    external += [(r.path, hidden) for r, (_, hidden) in zip(group.regions, counts) if hidden]


def _check_painters_rule_frames(ctx: Context, group: Group, external: list[tuple[str, int]], keys: list[float]) -> None:
    """`_check_painters_rule` on the decoded masks, which name the regions that cover each violation."""
    found: dict[int, tuple[tuple[str, str] | None, int]] = {}  # record index -> (violation, external px)
    by_order = sorted(range(len(group.regions)), key=lambda i: keys[i])
    # Bounding boxes of the regions in depth order: naming who covers a clash looks only at the regions whose
    # box meets the clash's, not at every region in front.
    boxes = np.array([mask_box(group.regions[i].amodal) for i in by_order], np.int64).reshape(-1, 4)
    front = None  # union of the amodal masks of the regions in front
    done = 0  # regions by_order[:done] are in front
    for k, i in enumerate(by_order):
        r = group.regions[i]
        if front is None:
            front = np.zeros_like(r.amodal)
        while keys[by_order[done]] < keys[i]:
            x0, y0, x1, y1 = boxes[done]
            front[y0:y1, x0:x1] |= group.regions[by_order[done]].amodal[y0:y1, x0:x1]
            done += 1
        # Everything below lies inside the region's own box: crops, not whole frames.
        x0, y0, x1, y1 = boxes[k]
        amodal = r.amodal[y0:y1, x0:x1]
        visible = amodal & r.visible_or_amodal()[y0:y1, x0:x1]
        in_front = front[y0:y1, x0:x1]
        clash = visible & in_front
        n = int(np.count_nonzero(clash))
        violation = None
        if n:
            cx0, cy0, cx1, cy1 = mask_box(clash)
            box = (x0 + cx0, y0 + cy0, x0 + cx1, y0 + cy1)
            b = boxes[:done]
            near = np.flatnonzero((b[:, 0] < box[2]) & (b[:, 2] > box[0]) & (b[:, 1] < box[3]) & (b[:, 3] > box[1]))
            violation = _painter_violation(
                r, clash[cy0:cy1, cx0:cx1], n, [group.regions[by_order[j]] for j in near], box
            )
        found[i] = (violation, int(np.count_nonzero(amodal & ~visible & ~in_front)))
    for i, r in enumerate(group.regions):
        violation, hidden_by_nothing = found[i]
        if violation is not None:
            ctx.report(*violation)
        if hidden_by_nothing:
            external.append((r.path, hidden_by_nothing))


def _painter_violation(
    r: Region, clash: np.ndarray, n: int, in_front: list[Region], box: tuple[int, int, int, int]
) -> tuple[str, str]:
    """(path, message) for the ``n`` visible pixels ``clash`` (the crop ``box`` of the image) of region ``r``
    under regions ``in_front``."""
    x0, y0, x1, y1 = box
    under = [(o, int(np.count_nonzero(clash & o.amodal[y0:y1, x0:x1]))) for o in in_front]
    under = [(o, k) for o, k in under if k]

    def order(o: Region) -> str:  # a tied order (D2SA) says who is in front by the masks
        return f"order {o.order}, in front by the masks" if o.order == r.order else f"order {o.order}"

    if len(under) == 1:
        who = f"{under[0][0].path} ({order(under[0][0])})"
    else:
        who = ", ".join(f"{o.path} ({order(o)}, {_px(k)})" for o, k in under)
    if r.visible is not None:
        return join(r.path, r.visible_key), (
            "no visible pixel under the amodal mask of a region in front "
            f"(painter's rule); {_px(n)} visible under {who}"
        )
    if r.invisible is not None:
        return join(r.path, "invisible_mask"), (
            "every pixel of the amodal mask that a region in front covers "
            f"(painter's rule); {_px(n)} missing, under {who}"
        )
    return r.path, (
        "a visible_mask or invisible_mask (painter's rule); without either the region is fully "
        f"visible, but {_px(n)} of its amodal mask lie under {who}"
    )


def _check_depth_constraint(ctx: Context, group: Group) -> None:
    text = group.annotation.get("depth_constraint", "")
    path = join(group.path, "depth_constraint")
    try:
        pairs = parse_depth_constraint(text)
    except ValueError as err:
        ctx.report(path, f"comma-separated pairs 'A-B' of region orders; {err}")
        return
    orders = {r.order for r in group.regions}
    for a, b in pairs:
        missing = [o for o in (a, b) if o not in orders]
        if missing:
            ctx.report(path, f"pairs of existing region orders; {a}-{b} names order {missing[0]}, which no region has")
        elif a == b:
            ctx.report(path, f"pairs of two different regions; {a}-{b} names one region twice")
        elif a > b:
            ctx.report(path, f"pairs that agree with the regions' orders; {a}-{b} puts order {a} in front of order {b}")
    cycle = _find_cycle(pairs)
    if cycle:
        steps = ", ".join(f"{a}-{b}" for a, b in zip(cycle, cycle[1:]))
        ctx.report(path, f"pairs without a cycle; {steps} form a cycle")


def _find_cycle(pairs: list[tuple[int, int]]) -> list[int] | None:
    """A cycle in the "a in front of b" graph as nodes [n0, n1, ..., n0], or None (deterministic)."""
    adj: dict[int, list[int]] = {}
    for a, b in pairs:
        if a != b:
            adj.setdefault(a, []).append(b)
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(adj):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(adj.get(start, [])))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(adj.get(nxt, []))))
    return None
