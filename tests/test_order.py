import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semlayer.order import (
    Constraint,
    cluster_pairs,
    constraints_from_clusters,
    constraints_from_overlap,
    format_depth_constraint,
    overlapping_pairs,
    parse_depth_constraint,
    ranks_from_constraints,
)


def test_chain_gives_ranks():
    out = ranks_from_constraints(3, [(2, 0), (0, 1)])
    assert out.ranks == [2, 3, 1] and out.dropped == []


def test_cycle_drops_the_weakest_constraint():
    out = ranks_from_constraints(3, [Constraint(0, 1, 5), Constraint(1, 2, 4), Constraint(2, 0, 1)])
    assert out.ranks == [1, 2, 3]
    assert out.dropped == [Constraint(2, 0, 1)]


def test_equal_weight_cycle_is_broken_deterministically():
    a = ranks_from_constraints(3, [(0, 1), (1, 2), (2, 0)])
    b = ranks_from_constraints(3, [(2, 0), (1, 2), (0, 1)])
    assert a.ranks == b.ranks == [1, 2, 3]
    assert a.dropped == [Constraint(2, 0, 1.0)]


def test_opposing_evidence_cancels_and_tie_break_orders_free_items():
    out = ranks_from_constraints(3, [Constraint(0, 1, 2), Constraint(1, 0, 2)], tie_break=[3, 1, 2])
    assert out.ranks == [3, 1, 2]
    out = ranks_from_constraints(2, [Constraint(0, 1, 1), Constraint(1, 0, 3)])
    assert out.ranks == [2, 1]


def test_bad_constraints():
    with pytest.raises(ValueError, match="outside 0..1"):
        ranks_from_constraints(2, [(0, 2)])
    with pytest.raises(ValueError, match="in front of itself"):
        ranks_from_constraints(2, [(1, 1)])


def test_depth_constraint_strings():
    assert parse_depth_constraint("1-2,1-5, 2-5") == [(1, 2), (1, 5), (2, 5)]
    assert parse_depth_constraint("") == []
    assert format_depth_constraint([(1, 2), (3, 4)]) == "1-2,3-4"
    with pytest.raises(ValueError, match="'1-x'"):
        parse_depth_constraint("1-x")


def test_overlapping_pairs_and_overlap_evidence():
    a = np.zeros((8, 10), bool)
    a[1:5, 1:5] = True
    b = np.zeros((8, 10), bool)
    b[3:7, 3:9] = True
    c = np.zeros((8, 10), bool)
    c[0, 9] = True
    assert overlapping_pairs([2, 1, 3], [a, b, c]) == [(1, 0)]
    vis_b = b & ~a
    assert constraints_from_overlap([a, vis_b, c], [a, b, c]) == [Constraint(0, 1, 4.0)]


def test_kins_clusters():
    cons = constraints_from_clusters([1, 1, 0, 2, 1], [1, 2, 1, 1, 3])
    pairs = sorted((c.front, c.back) for c in cons)
    assert pairs == [(0, 1), (0, 4), (1, 4)]
    assert ranks_from_constraints(5, cons).ranks[4] > ranks_from_constraints(5, cons).ranks[1]
    # The evaluator's pairs: same cluster (> 0), different ico_id, front first; by cluster, then ico_id.
    clusters = [(2, 2), (1, 2), None, (2, 1), (1, 1), (0, 1), (1, 2), (0, 2)]
    assert cluster_pairs(clusters) == [(4, 1), (4, 6), (3, 0)]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.permutations(list(range(n))))))
def test_consistent_constraints_recover_the_order(case):
    n, order = case
    pairs = [(order[i], order[j]) for i in range(n) for j in range(i + 1, n)]
    out = ranks_from_constraints(n, reversed(pairs))
    assert out.dropped == []
    assert [r for _, r in sorted(zip(order, range(1, n + 1)))] == out.ranks
