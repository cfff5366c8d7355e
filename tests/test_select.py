"""Selection rules on hand-made candidates."""

from __future__ import annotations

import math

import pytest

from aldsl.ops.select import select


def test_first():
    assert select("first", ["a", "b"], [0.0, 9.0]) == 0


def test_argmax_prefers_the_earliest_of_ties_and_ignores_missing_rewards():
    assert select("argmax", ["a", "b", "c"], [1.0, 3.0, 3.0]) == 1
    assert select("argmax", ["a", "b"], [None, -5.0]) == 1
    assert select("argmax", ["a", "b"], [math.nan, 0.0]) == 1


def test_majority_counts_answers_and_skips_empty_ones():
    assert select("majority", ["7", "8", "8", "7", "8"], [None] * 5) == 1
    assert select("majority", ["", "", "5"], [None] * 3) == 2
    assert select("majority", ["4", "5"], [None, None]) == 0  # a tie goes to the earliest


def test_weighted_vote_uses_softmax_of_rewards():
    # answer "1" has two votes of reward 0; answer "2" one vote of reward 2: e^2 > 2 e^0
    assert select("weighted_vote", ["1", "1", "2"], [0.0, 0.0, 2.0]) == 2
    # rewards 1, 1, 1.5: 2 e^1 > e^1.5, so the two votes win
    assert select("weighted_vote", ["1", "1", "2"], [1.0, 1.0, 1.5]) == 0


def test_errors():
    with pytest.raises(ValueError, match="no candidates"):
        select("first", [], [])
    with pytest.raises(ValueError, match="unknown selection rule"):
        select("best", ["a"], [1.0])
