import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ring_async.c3po.advantages import group_advantages, is_zero_advantage
from ring_async.c3po.budget import select_budget


def test_exact_cuts_the_straddler_to_hit_the_budget():
    sel = select_budget([4, 3, 5, 10], budget=10, cut="exact")
    assert (sel.count, sel.last_take, sel.tokens) == (3, 3, 10)
    assert [sel.take(i, n) for i, n in enumerate([4, 3, 5, 10])] == [4, 3, 3, 0]


def test_whole_takes_the_straddler_whole():
    sel = select_budget([4, 3, 5, 10], budget=10, cut="whole")
    assert (sel.count, sel.last_take, sel.tokens) == (3, 5, 12)


def test_exact_landing_on_the_budget_cuts_nothing():
    sel = select_budget([4, 6, 5], budget=10, cut="exact")
    assert (sel.count, sel.last_take) == (2, 6)


def test_one_response_longer_than_the_budget():
    assert select_budget([50], 10, "exact").last_take == 10
    assert select_budget([50], 10, "whole").tokens == 50


def test_not_enough_tokens_selects_nothing():
    assert select_budget([3, 3], 10) is None
    assert select_budget([], 10) is None
    with pytest.raises(ValueError):
        select_budget([1], 0)


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(1, 3000), st.sampled_from(["exact", "whole"]))
def test_selection_properties(lengths, budget, cut):
    sel = select_budget(lengths, budget, cut)
    if sum(lengths) < budget:
        assert sel is None
        return
    takes = [sel.take(i, n) for i, n in enumerate(lengths)]
    assert sum(takes) == sel.tokens
    # A prefix in order; every response but the last is taken whole.
    assert all(t == n for t, n in zip(takes[: sel.count - 1], lengths))
    assert all(t == 0 for t in takes[sel.count :])
    before_last = sum(lengths[: sel.count - 1])
    assert before_last < budget  # the last one taken is the straddler
    if cut == "exact":
        assert sel.tokens == budget and 0 < takes[sel.count - 1] <= lengths[sel.count - 1]
    else:
        assert budget <= sel.tokens == before_last + lengths[sel.count - 1]


def test_grpo_advantages_hand_computed():
    # rewards 1,0,0,1: mean 0.5, sample std sqrt(1/3)=0.57735
    adv = group_advantages([1, 0, 0, 1], eps=0.0)
    np.testing.assert_allclose(adv, [0.866025, -0.866025, -0.866025, 0.866025], rtol=1e-5)
    np.testing.assert_allclose(group_advantages([1, 0, 0, 1], norm="none"), [0.5, -0.5, -0.5, 0.5])
    assert group_advantages([1.0]).tolist() == [0.0]
    assert np.all(group_advantages([1, 1, 1]) == 0)
    assert is_zero_advantage([0, 0, 0]) and is_zero_advantage([1]) and not is_zero_advantage([0, 1])
