"""The intervention mode: from the full state at as_of, a plan's behaviours simulated forward on common
random numbers (data/intervene.py), against the oracle and the world's own mechanisms."""
from __future__ import annotations

import numpy as np
import pytest

from linerisk.data.intervene import Intervention, paired, simulate_plan
from linerisk.data.simulate import WorldParams, oracle_probs, states_at
from linerisk.data.world import CAUSES, MINOR

P = WorldParams(users=3_000, months=12, seed=4, oracle_futures=4)
DAY = 300


@pytest.fixture(scope="module")
def state():
    return next(states_at(P, DAY))


def test_no_intervention_reproduces_the_oracle_exactly(state):
    active = np.flatnonzero(state.pl.opened & ~state.restricted)[:600]
    restricted = np.flatnonzero(state.restricted)
    assert len(restricted) > 20
    want_active, want_restored = oracle_probs(state, active, restricted, DAY, P, np.random.default_rng(3))
    rows = np.concatenate([active, restricted])
    none = (Intervention(no_inquiries=True, repay_on_time=True, utilisation_cap=0.3, appeal=True),)
    got = simulate_plan(state, rows, DAY, P.horizon_days, P, np.random.default_rng(3), P.oracle_futures,
                        none, np.zeros((1, len(rows)), bool))  # a plan applied to nobody
    np.testing.assert_array_equal(got.restricted_within(0, P.horizon_days)[:len(active)], want_active)
    np.testing.assert_array_equal(got.restored_by()[P.horizon_days - 1][len(active):], want_restored)


def test_common_random_numbers_give_a_plan_applied_to_nobody_the_same_futures(state):
    rows = np.flatnonzero(state.pl.opened)[:500]
    plain = simulate_plan(state, rows, DAY, 60, P, paired(1, len(rows), 4), 4)
    idle = simulate_plan(state, rows, DAY, 60, P, paired(1, len(rows), 4), 4, (Intervention(no_inquiries=True),),
                         np.zeros((1, len(rows)), bool))
    np.testing.assert_array_equal(plain.restrict, idle.restrict)
    other = simulate_plan(state, rows, DAY, 60, P, paired(2, len(rows), 4), 4)
    assert not np.array_equal(plain.restrict, other.restrict)  # another seed, other futures


def test_a_plan_that_stops_inquiries_lowers_the_true_multi_borrowing_hazard(state):
    rows = np.flatnonzero(state.pl.opened & ~state.restricted)[:800]
    base = simulate_plan(state, rows, DAY, 90, P, paired(5, len(rows), 8), 8)
    plan = simulate_plan(state, rows, DAY, 90, P, paired(5, len(rows), 8), 8, (Intervention(no_inquiries=True),),
                         np.ones((1, len(rows)), bool))
    k = CAUSES.index("multi_borrowing")
    change = plan.by_cause[..., k].mean(axis=0) - base.by_cause[..., k].mean(axis=0)
    assert (change <= 1e-15).all()           # never raised, row by row: same random numbers
    assert (change < 0).mean() > 0.5          # lowered for most (any inquiry in the next 30 days counts)
    assert plan.restricted_within(0, 90).mean() < base.restricted_within(0, 90).mean()


def test_an_appeal_helps_a_minor_cause_restricted_line_and_not_a_red_line_one(state):
    cause = state.restricted_cause.astype(int)
    minor = np.isin(cause, [CAUSES.index(c) for c in MINOR])
    light = np.flatnonzero(state.restricted & minor & ~state.red_line & (state.appeal_review_day < 0))
    red = np.flatnonzero(state.restricted & state.red_line)
    assert len(light) >= 5 and len(red) >= 3
    rows = np.concatenate([light, red])
    base = simulate_plan(state, rows, DAY, 30, P, paired(6, len(rows), 8), 8)
    plan = simulate_plan(state, rows, DAY, 30, P, paired(6, len(rows), 8), 8, (Intervention(appeal=True, days=1),),
                         np.ones((1, len(rows)), bool))
    gain = plan.restored_by()[-1] - base.restored_by()[-1]
    assert (gain[: len(light)] > 0.1).all()   # the review lifts a minor cause with a fair chance
    np.testing.assert_array_equal(plan.restored_by()[:, len(light):], 0.0)  # never past the red line
