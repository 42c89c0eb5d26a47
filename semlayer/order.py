"""Depth-order algebra: ranks from pairwise constraints, cycle breaking, and the reverse.

A constraint ``(a, b, w)`` says "index a is in front of index b" with weight ``w`` (evidence strength).
Ranks are 1-based, 1 = front-most.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Sequence, cast

import numpy as np

from .boxes import Box, crop_over, in_box, mask_box, meet_box


@dataclass(frozen=True)
class Constraint:
    front: int
    back: int
    weight: float = 1.0


@dataclass
class Ordering:
    """Result of `ranks_from_constraints`: ranks per index and the constraints dropped to break cycles."""

    ranks: list[int]
    dropped: list[Constraint]


def _as_constraints(pairs: Iterable[Constraint | tuple]) -> list[Constraint]:
    out = []
    for p in pairs:
        out.append(
            p if isinstance(p, Constraint) else Constraint(int(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 1.0)
        )
    return out


def _reaches(adj: list[set[int]], start: int, goal: int) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in adj[node]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def ranks_from_constraints(
    n: int, pairs: Iterable[Constraint | tuple], tie_break: Sequence[float] | None = None
) -> Ordering:
    """Total order of ``n`` items that satisfies as many (and the strongest) constraints as possible.

    Constraints are merged per unordered pair (opposing evidence cancels), then added strongest first;
    one that would close a cycle is dropped. Equal weights are taken in index order, so equal inputs give
    equal outputs. Items left unordered are ranked by ``tie_break`` (smaller = more in front; default: index).
    """
    net: dict[tuple[int, int], float] = {}
    for c in _as_constraints(pairs):
        if not (0 <= c.front < n and 0 <= c.back < n):
            raise ValueError(f"constraint {c.front}-{c.back} names an item outside 0..{n - 1}")
        if c.front == c.back:
            raise ValueError(f"constraint {c.front}-{c.back} puts an item in front of itself")
        key = (min(c.front, c.back), max(c.front, c.back))
        sign = 1.0 if c.front == key[0] else -1.0
        net[key] = net.get(key, 0.0) + sign * c.weight
    merged = [Constraint(a, b, w) if w > 0 else Constraint(b, a, -w) for (a, b), w in sorted(net.items()) if w != 0]
    merged.sort(key=lambda c: (-c.weight, c.front, c.back))
    adj: list[set[int]] = [set() for _ in range(n)]
    dropped = []
    for c in merged:
        if _reaches(adj, c.back, c.front):
            dropped.append(c)
        else:
            adj[c.front].add(c.back)
    keys = list(tie_break) if tie_break is not None else list(range(n))
    indeg = [0] * n
    for a in range(n):
        for b in adj[a]:
            indeg[b] += 1
    heap = [(keys[i], i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    ranks = [0] * n
    rank = 1
    while heap:
        _, node = heapq.heappop(heap)
        ranks[node] = rank
        rank += 1
        for b in adj[node]:
            indeg[b] -= 1
            if indeg[b] == 0:
                heapq.heappush(heap, (keys[b], b))
    return Ordering(ranks=ranks, dropped=dropped)


def parse_depth_constraint(text: str) -> list[tuple[int, int]]:
    """COCOA ``depth_constraint`` (``"1-2,1-5"``) as ``(front_order, back_order)`` pairs."""
    pairs: list[tuple[int, int]] = []
    text = (text or "").strip()
    if not text:
        return pairs
    for part in text.split(","):
        bits = part.strip().split("-")
        if len(bits) != 2 or not bits[0].strip().isdigit() or not bits[1].strip().isdigit():
            raise ValueError(f"depth constraint {part.strip()!r} is not of the form 'A-B' with integers A and B")
        pairs.append((int(bits[0]), int(bits[1])))
    return pairs


def format_depth_constraint(pairs: Iterable[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" for a, b in pairs)


def overlapping_pairs(
    ranks: Sequence[int], masks: Sequence[np.ndarray], boxes: Sequence[Sequence[int]] | None = None
) -> list[tuple[int, int]]:
    """The reverse of ordering: every pair of overlapping masks as ``(front_index, back_index)``,
    sorted by the front's then the back's rank (COCOA's ``depth_constraint`` order). ``masks`` are full
    frames, or crops placed at ``boxes`` (each its mask's tight box, as `scene.Instance` keeps them)."""
    content, placed = _placements(masks, boxes)
    pairs = []
    for i, j in box_pairs(content):
        window = cast(Box, meet_box(content[i], content[j]))
        if (in_box(masks[i], placed[i], window) & in_box(masks[j], placed[j], window)).any():
            pairs.append((i, j) if ranks[i] < ranks[j] else (j, i))
    pairs.sort(key=lambda p: (ranks[p[0]], ranks[p[1]]))
    return pairs


def _placements(masks: Sequence[np.ndarray], boxes: Sequence[Sequence[int]] | None) -> tuple[list[Box], list[Box]]:
    """Each mask's content box (where its pixels are) and the box its array covers: a full frame's tight box
    and the whole frame; a crop's given box, twice."""
    if boxes is None:
        return [mask_box(m) for m in masks], [(0, 0, m.shape[1], m.shape[0]) for m in masks]
    return [_as_box(b) for b in boxes], [_as_box(b) for b in boxes]


def _as_box(box: Sequence[int]) -> Box:
    x0, y0, x1, y1 = (int(v) for v in box)
    return (x0, y0, x1, y1)


def cluster_pairs(clusters: Sequence[tuple[int, int] | None]) -> list[tuple[int, int]]:
    """KINS 2020's depth-order pairs: every pair inside one ``oco_id`` cluster (> 0) with different
    ``ico_id`` as ``(front_index, back_index)`` (the smaller ``ico_id`` is in front), sorted by cluster,
    then by the front's and the back's ``ico_id``. ``clusters[i]`` is ``(oco_id, ico_id)`` or None."""
    pairs = []
    for i, a in enumerate(clusters):
        for j, b in enumerate(clusters):
            if a is not None and b is not None and a[0] > 0 and a[0] == b[0] and a[1] < b[1]:
                pairs.append((i, j))
    key = {i: c for i, c in enumerate(clusters) if c is not None}
    pairs.sort(key=lambda p: (key[p[0]][0], key[p[0]][1], key[p[1]][1], p))
    return pairs


def constraints_from_overlap(
    visible: Sequence[np.ndarray],
    amodal: Sequence[np.ndarray],
    pairs: Iterable[tuple[int, int]] | None = None,
    visible_boxes: Sequence[Sequence[int]] | None = None,
    amodal_boxes: Sequence[Sequence[int]] | None = None,
) -> list[Constraint]:
    """Order evidence from masks alone: i is in front of j when i's visible mask covers more of j's
    amodal mask than j's visible mask covers of i's (weight = the pixel difference). Over ``pairs``
    (index pairs) when given, else over every pair; either way only where the masks' boxes meet. The masks
    are full frames, or crops placed at ``visible_boxes`` / ``amodal_boxes`` (give both or neither)."""
    vis_content, vis_placed = _placements(visible, visible_boxes)
    am_content, am_placed = _placements(amodal, amodal_boxes)
    # Each instance's box covers its visible and its amodal mask (a stated visible mask may stray outside).
    boxes = [_union_box(v, a) for v, a in zip(vis_content, am_content)]
    meet = set(box_pairs(boxes))
    candidates = sorted(meet) if pairs is None else [p for p in pairs if (min(p), max(p)) in meet]
    out = []
    for i, j in candidates:
        window = cast(Box, meet_box(boxes[i], boxes[j]))
        vi, vj = (crop_over(visible[k], vis_placed[k], window) for k in (i, j))
        ai, aj = (crop_over(amodal[k], am_placed[k], window) for k in (i, j))
        i_over_j, j_over_i = int(np.count_nonzero(vi & aj)), int(np.count_nonzero(vj & ai))
        if i_over_j > j_over_i:
            out.append(Constraint(i, j, float(i_over_j - j_over_i)))
        elif j_over_i > i_over_j:
            out.append(Constraint(j, i, float(j_over_i - i_over_j)))
    return out


def constraints_from_clusters(oco_ids: Sequence[int], ico_ids: Sequence[int]) -> list[Constraint]:
    """KINS 2020: inside a cluster (``oco_id`` > 0) a smaller ``ico_id`` is in front."""
    return [Constraint(i, j, 1.0) for i, j in cluster_pairs(list(zip(oco_ids, ico_ids)))]


def _union_box(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    if a[2] <= a[0] or a[3] <= a[1]:
        return b
    if b[2] <= b[0] or b[3] <= b[1]:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def box_pairs(boxes: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, in row-major order, of the boxes (x0, y0, x1, y1; exclusive ends)
    that share a pixel: found in one vectorised test, so pairwise work skips the pairs that cannot meet."""
    if len(boxes) < 2:
        return []
    b = np.asarray(boxes, np.int64).reshape(len(boxes), 4)
    meet = (np.minimum(b[:, None, 2], b[None, :, 2]) > np.maximum(b[:, None, 0], b[None, :, 0])) & (
        np.minimum(b[:, None, 3], b[None, :, 3]) > np.maximum(b[:, None, 1], b[None, :, 1])
    )
    i, j = np.nonzero(np.triu(meet, k=1))
    return list(zip(i.tolist(), j.tolist()))
