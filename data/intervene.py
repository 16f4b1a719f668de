"""The intervention mode: from the full state at as_of, chosen users keep to a plan's behaviours and the
world is simulated forward as the oracle does, with and without the plan, on common random numbers.

A plan is declarative: `Intervention`s (behaviour overrides kept for some days) and, per user row, which of
them it applies. Both arms run from copies of the same state with `world.Paired` draws from one seed, so
each row sees the same random numbers in both and the difference is the plan's effect, not noise.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from linerisk.data.errors import InputError
from linerisk.data.simulate import WorldParams, run_futures
from linerisk.data.world import BEHAVIOURS, Draws, Overrides, Paired, State


@dataclass(frozen=True)
class Intervention:
    """Behaviours a user keeps for `days` from as_of: no new credit applications, every instalment on time
    (arrears cleared at once), the personal line paid down to and held under `utilisation_cap` x its limit,
    no early repayments, no misuse of business-loan funds, normal business-loan use (drawn when nothing is
    owed, repaid on schedule, funds used as agreed), an appeal to the platform on the first day."""

    days: int = 90
    no_inquiries: bool = False
    repay_on_time: bool = False
    no_early_repayment: bool = False
    no_fund_misuse: bool = False
    business_loan_use: bool = False
    utilisation_cap: float | None = None
    appeal: bool = False

    def __post_init__(self) -> None:
        if self.days < 1:
            raise InputError(f"intervention: days must be at least 1, not {self.days}")
        if self.utilisation_cap is not None and not 0.0 <= self.utilisation_cap < 1.0:
            raise InputError(f"intervention: utilisation_cap must be in [0, 1), not {self.utilisation_cap}")

    def kept(self) -> tuple[str, ...]:
        """The behaviours it names (world.BEHAVIOURS)."""
        return tuple(b for b in BEHAVIOURS if (self.utilisation_cap is not None if b == "utilisation_cap"
                                               else getattr(self, b)))


assert {f.name for f in fields(Intervention)} - {"days"} == set(BEHAVIOURS)


def overrides(interventions: tuple[Intervention, ...], applied: np.ndarray, start: int) -> Overrides:
    """The per-row behaviour overrides: row j keeps intervention i where `applied[i, j]`; a behaviour named
    by several is kept as long as the longest, the tightest cap wins. One pass per intervention, not per row."""
    applied = np.atleast_2d(np.asarray(applied, bool))
    n = applied.shape[1]
    until = np.full((len(BEHAVIOURS), n), start, np.int64)
    cap = np.ones(n)
    for iv, rows in zip(interventions, applied, strict=True):
        for b in iv.kept():
            k = BEHAVIOURS.index(b)
            until[k] = np.where(rows, np.maximum(until[k], start + iv.days), until[k])
        if iv.utilisation_cap is not None:
            cap = np.where(rows, np.minimum(cap, iv.utilisation_cap), cap)
    return Overrides(start, until, cap)


@dataclass
class Futures:
    """Forward simulation of `users` (state rows) over `days`, `futures` copies each: cumulative restriction
    and restoration hazards per day, (days, futures, users); the restriction hazard summed over the days per
    cause, (futures, users, len(CAUSES))."""

    restrict: np.ndarray
    restore: np.ndarray
    by_cause: np.ndarray

    def restricted_within(self, start: int | np.ndarray, length: int) -> np.ndarray:
        """P(restricted in [as_of + start, as_of + start + length)) per user (`start` one per user or for all),
        given not restricted before (the oracle's quantity when start = 0): mean over futures of
        1 - exp(-summed hazard)."""
        users = self.restrict.shape[2]
        start = np.broadcast_to(np.asarray(start, np.int64), (users,))
        cols = np.arange(users)
        end = self.restrict[start + length - 1, :, cols]  # (users, futures)
        before = np.where((start > 0)[:, None], self.restrict[np.maximum(start - 1, 0), :, cols], 0.0)
        return (-np.expm1(-(end - before))).mean(axis=1)

    def restored_by(self) -> np.ndarray:
        """P(restored by the end of each day) per user, (days, users)."""
        return (-np.expm1(-self.restore)).mean(axis=1)


def simulate_plan(s: State, rows: np.ndarray, day: int, days: int, p: WorldParams, rng: np.random.Generator | Draws,
                  futures: int, interventions: tuple[Intervention, ...] = (), applied: np.ndarray | None = None,
                  on_day: Callable[[int], None] | None = None) -> Futures:
    """Simulate state rows `rows` forward `days` from `day` with `futures` copies each, the plan (which of
    `interventions` each row keeps, `applied` (len(interventions), len(rows))) imposed from `day`.
    With no interventions and a Generator this is exactly the oracle's run (simulate.oracle_probs)."""
    copies = s.take(np.tile(rows, futures))
    ov = None
    if interventions:
        ov = overrides(interventions, np.tile(np.asarray(applied, bool), (1, futures)), day)
    restrict, restore, by_cause = run_futures(copies, day, days, p, rng, ov, daily=True, on_day=on_day)
    shape = (days, futures, len(rows))
    return Futures(restrict.reshape(shape), restore.reshape(shape), by_cause.reshape(futures, len(rows), -1))


def paired(seed: int, rows: int, futures: int) -> Paired:
    """Common random numbers for one arm of a comparison: every arm built from the same seed draws alike."""
    return Paired(np.random.SeedSequence(seed), rows * futures)
