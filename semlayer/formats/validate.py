"""Whole-file validation: schema problems and consistency of what the file states.

The readers' own parser runs in collecting mode (every schema problem becomes a `Violation`, the bad
record is skipped), then each scene's records are checked against the invariants of FORMATS.md:
visible/invisible partition the amodal mask, ``occlude_rate``, unique orders, a ``depth_constraint`` that
names existing regions, agrees with the orders and has no cycle, and the painter's rule where the orders
are authoritative (COCOA, COCO-style with ``amodal_region.order``).

The painter's rule is read the way the scene model reads it (DESIGN.md section 3): a region in front
hides what it covers, so a visible pixel under the amodal mask of a region with a smaller order is a
contradiction (a violation). Hidden pixels that no region in front covers are *external occlusion*
(something that is not annotated is in front): valid data, which the readers keep bit for bit, so they
are only counted (`ValidationReport.external`, shown as a note). KINS masks come from separate amodal and
visible annotation passes that do not follow the painter's rule, so only their structure is checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..order import parse_depth_constraint
from ._base import Context, Group, Region, Violation, build_scene, join
from .api import detect, parse, read_json

TOLERANCE = 1e-6
NOTE_PATHS = 5  # regions with external occlusion named in the note


@dataclass
class ValidationReport:
    """What `validation_report` found: ``violations`` (the file contradicts its format or itself; empty
    when valid) and ``external``, the regions with external occlusion as ``(json path, hidden px that no
    region in front covers)``, which is valid data."""

    violations: list[Violation] = field(default_factory=list)
    external: list[tuple[str, int]] = field(default_factory=list)
    # KINS: stated visible pixels under an instance in front of the inferred order, which the scene (the
    # painter's rule) reads as hidden: (json path, px). KINS draws visible and amodal masks separately.
    clipped: list[tuple[str, int]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def notes(self) -> list[str]:
        """Informational lines about valid data (not violations)."""
        notes = []
        if self.external:
            notes.append(_note(self.external, "with external occlusion (hidden by unannotated objects, {total} px "
                                              "in all)"))
        if self.clipped:
            notes.append(_note(self.clipped, "whose visible mask reaches under an instance in front ({total} px "
                                             "in all; read as hidden, by the painter's rule under the order "
                                             "inferred from the masks)"))
        return notes


def _note(regions: list[tuple[str, int]], what: str) -> str:
    n = len(regions)
    shown = ", ".join(f"{path} ({px} px)" for path, px in regions[:NOTE_PATHS])
    more = f" and {n - NOTE_PATHS} more" if n > NOTE_PATHS else ""
    total = sum(px for _, px in regions)
    return f"{n} region{'s' if n > 1 else ''} {what.format(total=total)}: {shown}{more}"


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
    parsed = ctx.attempt(parse, ctx, obj, fmt)
    if parsed is not None:
        for group in parsed.groups:
            if fmt.startswith("kins"):
                _note_clipped_visible(group, report.clipped)
            else:
                _check_masks(ctx, group)
            if group.order_kind == "explicit":
                _check_orders(ctx, group)
                _check_painters_rule(ctx, group, report.external)
            if fmt == "cocoa":
                _check_depth_constraint(ctx, group)
    return report


def _px(n: int) -> str:
    return f"{n} px"


def _check_masks(ctx: Context, group: Group) -> None:
    for r in group.regions:
        amodal = r.amodal
        if r.visible is not None and r.invisible is not None:
            counts = (
                (int(np.count_nonzero(r.visible & r.invisible)), "in both"),
                (int(np.count_nonzero(amodal & ~r.visible & ~r.invisible)), "of the amodal mask in neither"),
                (int(np.count_nonzero((r.visible | r.invisible) & ~amodal)), "outside the amodal mask"),
            )
            parts = [f"{_px(n)} {what}" for n, what in counts if n]
            if parts:
                msg = "visible_mask and invisible_mask that partition the amodal mask; "
                ctx.report(r.path, msg + ", ".join(parts))
        else:
            for key, mask in (("visible_mask", r.visible), ("invisible_mask", r.invisible)):
                outside = 0 if mask is None else int(np.count_nonzero(mask & ~amodal))
                if outside:
                    ctx.report(join(r.path, key), f"a mask inside the amodal mask; {_px(outside)} outside")
        if r.occlude_rate is not None:
            area = int(np.count_nonzero(amodal))
            hidden = int(np.count_nonzero(amodal & r.hidden()))
            expected = hidden / area if area else 0.0
            if abs(r.occlude_rate - expected) > TOLERANCE:
                ctx.report(join(r.path, "occlude_rate"),
                           f"{expected!r} (invisible {hidden} px / amodal {area} px), got {r.occlude_rate!r}")


def _note_clipped_visible(group: Group, clipped: list[tuple[str, int]]) -> None:
    scene = build_scene(group)
    for r, visible in zip(group.regions, scene.visible_masks()):
        n = int(np.count_nonzero(r.visible_or_amodal() & r.amodal & ~visible))
        if n:
            clipped.append((r.path, n))


def _check_orders(ctx: Context, group: Group) -> None:
    first: dict[float, Any] = {}
    for r in group.regions:
        if r.order in first:
            ctx.report(r.order_path,
                       f"an order unique within the annotation; {first[r.order].path} has order {r.order} too")
        else:
            first[r.order] = r


def _check_painters_rule(ctx: Context, group: Group, external: list[tuple[str, int]]) -> None:
    """No visible pixel under a region in front (else a violation); hidden pixels that no region in front
    covers are external occlusion, as the readers take them (`AmodalScene.set_visible`). Reported in
    record order."""
    found: dict[int, tuple[tuple[str, str] | None, int]] = {}  # record index -> (violation, external px)
    by_order = sorted(range(len(group.regions)), key=lambda i: group.regions[i].order)
    front = None  # union of the amodal masks of the regions in front
    done = 0  # regions by_order[:done] are in front
    for i in by_order:
        r = group.regions[i]
        if front is None:
            front = np.zeros_like(r.amodal)
        while group.regions[by_order[done]].order < r.order:
            front |= group.regions[by_order[done]].amodal
            done += 1
        visible = r.amodal & r.visible_or_amodal()
        clash = visible & front
        n = int(np.count_nonzero(clash))
        found[i] = (_painter_violation(r, clash, n, [group.regions[j] for j in by_order[:done]]) if n else None,
                    int(np.count_nonzero(r.amodal & ~visible & ~front)))
    for i, r in enumerate(group.regions):
        violation, hidden_by_nothing = found[i]
        if violation is not None:
            ctx.report(*violation)
        if hidden_by_nothing:
            external.append((r.path, hidden_by_nothing))


def _painter_violation(r: Region, clash: np.ndarray, n: int, in_front: list[Region]) -> tuple[str, str]:
    """(path, message) for the ``n`` visible pixels ``clash`` of region ``r`` under regions ``in_front``."""
    under = [(o, int(np.count_nonzero(clash & o.amodal))) for o in in_front]
    under = [(o, k) for o, k in under if k]
    if len(under) == 1:
        who = f"{under[0][0].path} (order {under[0][0].order})"
    else:
        who = ", ".join(f"{o.path} (order {o.order}, {_px(k)})" for o, k in under)
    if r.visible is not None:
        return join(r.path, "visible_mask"), ("no visible pixel under the amodal mask of a region in front "
                                              f"(painter's rule); {_px(n)} visible under {who}")
    if r.invisible is not None:
        return join(r.path, "invisible_mask"), ("every pixel of the amodal mask that a region in front covers "
                                                f"(painter's rule); {_px(n)} missing, under {who}")
    return r.path, ("a visible_mask or invisible_mask (painter's rule); without either the region is fully "
                    f"visible, but {_px(n)} of its amodal mask lie under {who}")


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
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(adj.get(nxt, []))))
    return None
