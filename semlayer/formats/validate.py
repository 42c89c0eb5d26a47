"""Whole-file validation: schema problems and consistency of what the file states.

The readers' own parser runs in collecting mode (every schema problem becomes a `Violation`, the bad
record is skipped), then each scene's records are checked against the invariants of FORMATS.md:
visible/invisible partition the amodal mask, the painter's rule, ``occlude_rate``, unique orders and a
``depth_constraint`` that names existing regions, agrees with the orders and has no cycle. KINS masks come
from separate amodal and visible annotation passes that do not follow the painter's rule, so only their
structure is checked.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..order import parse_depth_constraint
from ._base import Context, Group, Violation, join
from .api import detect, parse, read_json

TOLERANCE = 1e-6


def validate(path_or_obj: str | os.PathLike | Any) -> list[Violation]:
    """Every violation in a file (path) or parsed JSON; empty when valid and consistent.

    Raises FormatError when there is nothing to validate: unreadable file, not JSON, empty, or a
    top-level value that is neither an object nor a list.
    """
    if isinstance(path_or_obj, (str, os.PathLike)):
        source, obj = str(path_or_obj), read_json(path_or_obj)
    else:
        source, obj = "<memory>", path_or_obj
    fmt = detect(obj, source)
    violations: list[Violation] = []
    ctx = Context(source, violations)
    parsed = ctx.attempt(parse, ctx, obj, fmt)
    if parsed is not None:
        for group in parsed.groups:
            if not fmt.startswith("kins"):
                _check_masks(ctx, group)
            if group.order_kind == "explicit":
                _check_orders(ctx, group)
            if fmt == "cocoa":
                _check_depth_constraint(ctx, group)
    return violations


def _px(n: int) -> str:
    return f"{n} px"


def _check_masks(ctx: Context, group: Group) -> None:
    for r in group.regions:
        amodal = r.amodal
        if r.visible is not None and r.invisible is not None:
            counts = (
                (int((r.visible & r.invisible).sum()), "in both"),
                (int((amodal & ~r.visible & ~r.invisible).sum()), "of the amodal mask in neither"),
                (int(((r.visible | r.invisible) & ~amodal).sum()), "outside the amodal mask"),
            )
            parts = [f"{_px(n)} {what}" for n, what in counts if n]
            if parts:
                msg = "visible_mask and invisible_mask that partition the amodal mask; "
                ctx.report(r.path, msg + ", ".join(parts))
        else:
            for key, mask in (("visible_mask", r.visible), ("invisible_mask", r.invisible)):
                outside = 0 if mask is None else int((mask & ~amodal).sum())
                if outside:
                    ctx.report(join(r.path, key), f"a mask inside the amodal mask; {_px(outside)} outside")
        if r.occlude_rate is not None:
            area = int(amodal.sum())
            hidden = int((amodal & r.hidden()).sum())
            expected = hidden / area if area else 0.0
            if abs(r.occlude_rate - expected) > TOLERANCE:
                ctx.report(join(r.path, "occlude_rate"),
                           f"{expected!r} (invisible {hidden} px / amodal {area} px), got {r.occlude_rate!r}")


def _check_orders(ctx: Context, group: Group) -> None:
    first: dict[float, Any] = {}
    for r in group.regions:
        if r.order in first:
            ctx.report(r.order_path,
                       f"an order unique within the annotation; {first[r.order].path} has order {r.order} too")
        else:
            first[r.order] = r
    for r in group.regions:
        front = np.zeros_like(r.amodal)
        for other in group.regions:
            if other.order < r.order:
                front |= other.amodal
        expected = r.amodal & front
        hidden = r.amodal & r.hidden()
        diff = int((expected ^ hidden).sum())
        if diff:
            ctx.report(r.path, f"the invisible part = the amodal mask covered by regions in front (painter's rule, "
                               f"{_px(int(expected.sum()))}); got {_px(int(hidden.sum()))}, {_px(diff)} differ")


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
