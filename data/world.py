"""The synthetic world's state and its daily step (shared/design/world.md).

Everything is a numpy array over users; one call of `step` advances every user by one
day. The same step drives the main run and the oracle's simulated futures, so the oracle
knows exactly the world the data came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from linerisk.data.errors import InputError
from linerisk.data.schema import EVENT_TYPES, RED_LINE_DPD, RED_LINE_MISUSE_FLAGS

CAUSES = ("overdue", "early_repayment", "fund_misuse", "credit_score", "multi_borrowing",
          "utilisation", "bl_closure", "latent")

# Event type codes used inside the simulator: positions in the events contract's types.
EVENT_CODES = EVENT_TYPES
CODE = {name: i for i, name in enumerate(EVENT_CODES)}

# Ring-buffer windows (days) of the observable statistics the hazard reads.
EARLY_WINDOW, LATE_WINDOW, INQUIRY_WINDOW, MISUSE_WINDOW = 90, 90, 30, 180


@dataclass(frozen=True)
class Hazards:
    """Daily restriction-hazard scales per cause, the platform review's lag, and the red line."""

    overdue: float = 0.0140       # x (late days in 90d / 30) ** 1.3
    early_repayment: float = 0.0045  # x max(0, weighted early repayments in 90d - 1.5)
    fund_misuse: float = 0.0060   # x min(misuse flags in 180d, 2)
    credit_score: float = 0.0005  # x (sigmoid((580 - score) / 15) + max(0, -90d change - 10) / 40)
    multi_borrowing: float = 0.0015  # x max(0, inquiries in 30d - 1)
    utilisation: float = 0.0012   # x clip((utilisation - 0.7) / 0.3, 0, 1) ** 2
    bl_closure: float = 0.0030    # x [bl closed in the last 60 days]
    latent: float = 0.00008       # x exp(-health); also stands in for the base hazard
    review_lag_days: float = 90.0  # the platform's review lags behaviour: restrictions fire from an
    # exponentially smoothed hazard, h_eff += (h - h_eff) / review_lag_days, per cause (1: instant)
    red_line_dpd: int = RED_LINE_DPD  # a default beyond this many days past due is the red line
    red_line_misuse_flags: int = RED_LINE_MISUSE_FLAGS  # so is a second fund-misuse flag


# The seeds' minor causes: short cooling-off, and an appeal lifts them with a fair chance (Restoration).
MINOR = ("early_repayment", "multi_borrowing", "utilisation", "bl_closure")


@dataclass(frozen=True)
class Restoration:
    """The way back (world.md, Restoration): a daily hazard per restricted line, the product of its
    factors (restore_factors), and the appeal channel. Per-cause tuples follow CAUSES."""

    cooling_days: tuple[int, ...] = (60, 30, 180, 45, 45, 45, 30, 60)
    lift: tuple[float, ...] = (0.004, 0.012, 0.0015, 0.003, 0.010, 0.010, 0.014, 0.005)  # daily, once cooled
    score_change: tuple[float, ...] = (0.5, 0.3, 0.3, 1.2, 0.5, 0.5, 0.3, 0.5)  # per 20 points since
    score_level: float = 0.5      # per 50 points above 650
    clean: float = 0.12           # per on-time or early repayment since (at most 8 count)
    late: float = 1.0             # per late repayment since
    inquiry: float = 0.5          # per credit inquiry since (at most 6 count)
    bl_use: float = 0.25          # per business-loan drawdown since (at most 4 count)
    early: float = 0.3            # early_repayment-caused lines: per early repayment since (at most 6),
    # until the user draws normally again (a business-loan drawdown since)
    arrears_other: float = 0.3    # factor while a loan is overdue (an overdue-caused line: 0)
    appeal_rate: float = 0.003    # daily, x (1 + days restricted / 90) x exp(0.4 discipline)
    appeal_lift: tuple[float, ...] = (0.02, 0.40, 0.01, 0.05, 0.40, 0.40, 0.45, 0.05)
    review_days: tuple[int, int] = (2, 10)

    def __post_init__(self) -> None:
        """Per-cause values come one per cause family (a TOML list is fine); anything else stops the run."""
        for name in ("cooling_days", "lift", "score_change", "appeal_lift"):
            value = tuple(getattr(self, name))
            if len(value) != len(CAUSES):
                raise InputError(f"config: restoration.{name} needs {len(CAUSES)} values, one per cause "
                                 f"({', '.join(CAUSES)}), not {len(value)}")
            object.__setattr__(self, name, value)
        if len(self.review_days) != 2 or not 0 < self.review_days[0] <= self.review_days[1]:
            raise InputError(f"config: restoration.review_days must be [first, last] days, not {self.review_days!r}")
        object.__setattr__(self, "review_days", tuple(self.review_days))


@dataclass(frozen=True)
class Behaviour:
    """How latent traits turn into actions; daily probabilities unless stated."""

    health_rho: float = 0.9965
    health_sd: float = 0.6
    shock_rate: float = 1 / 900
    shock_size: float = 1.6
    pl_draw: float = 0.006
    bl_draw: float = 0.040
    inquiry_rate: float = 0.004
    misuse_logit: float = -3.4
    miss_logit: float = -4.3
    cure_logit: float = -1.2
    early_logit: float = -2.2
    bl_close: float = 0.0020
    limit_change: float = 1 / 200


@dataclass
class Window:
    """A rolling sum over the last `days` days per user: a ring buffer plus its running total."""

    buf: np.ndarray    # (days, n) integer counts, one row per day slot
    total: np.ndarray  # (n,) sum over the buffer

    @classmethod
    def empty(cls, days: int, n: int) -> "Window":
        return cls(np.zeros((days, n), np.int16), np.zeros(n, np.int32))

    def push(self, day: int, values: np.ndarray) -> None:
        """Replace the slot that falls out of the window with today's values."""
        slot = day % len(self.buf)
        self.total += values
        self.total -= self.buf[slot]
        self.buf[slot] = values


@dataclass
class Loan:
    """One product's current loan per user: balance, instalment schedule and overdue state."""

    opened: np.ndarray
    limit: np.ndarray
    balance: np.ndarray
    remaining: np.ndarray   # instalments left
    instalment: np.ndarray
    due: np.ndarray         # day of the next instalment, -1 when no loan
    pay_early: np.ndarray   # day the user plans to pay early, -1 when not planned
    overdue_since: np.ndarray  # due day missed, -1 when not overdue

    @classmethod
    def empty(cls, n: int, limit: np.ndarray) -> "Loan":
        return cls(np.zeros(n, bool), limit, np.zeros(n), np.zeros(n, np.int16), np.zeros(n),
                   np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int32))


@dataclass
class State:
    """Every user's latent traits, products, observable-history windows and line status."""

    user_id: np.ndarray
    merchant: np.ndarray
    signup_day: np.ndarray
    liquidity: np.ndarray
    discipline: np.ndarray
    health_mean: np.ndarray
    health_dev: np.ndarray
    score_true: np.ndarray
    score_day: np.ndarray       # day-of-month offset of the monthly score report
    scores: np.ndarray          # last 4 reported scores, newest last (nan before reports)
    score_term: np.ndarray      # credit-score hazard term, refreshed at each report
    p_early_pl: np.ndarray      # chance of paying an instalment early (liquidity-driven)
    p_early_bl: np.ndarray
    inquiry_base: np.ndarray    # daily rates before the stress multiplier (liquidity-driven)
    pl_draw_base: np.ndarray
    bl_draw_base: np.ndarray
    bl_close_base: np.ndarray
    pl: Loan
    bl: Loan
    bl_closed_day: np.ndarray
    misuse_day: np.ndarray
    misuse_amount: np.ndarray
    early: Window      # early repayments in half units (bl counts 2, pl 1)
    late: Window       # days past due (capped at 120) of late repayments
    inquiries: Window
    misuse: Window
    restricted: np.ndarray
    restricted_day: np.ndarray
    restricted_cause: np.ndarray  # cause code of the current (or last) restriction, -1 never
    score_at_restriction: np.ndarray  # last reported score when restricted (nan: none yet)
    late_since_restriction: np.ndarray  # repayments since the restriction: late ...
    clean_since_restriction: np.ndarray  # ... on time or early
    early_since_restriction: np.ndarray  # ... early
    inquiries_since_restriction: np.ndarray
    bl_draws_since_restriction: np.ndarray
    appeal_review_day: np.ndarray  # day the pending appeal's review lands, -1 none
    misuse_flags: np.ndarray     # fund-misuse flags ever
    red_line: np.ndarray
    sample_u: np.ndarray        # uniform draw deciding oracle-sample membership
    hazard: np.ndarray = field(default=None)  # (n, len(CAUSES)) components in force (smoothed, active lines)
    review: np.ndarray = field(default=None)  # (len(CAUSES), n) the review's smoothed components, always updated

    @property
    def n(self) -> int:
        return len(self.user_id)

    @property
    def health(self) -> np.ndarray:
        return self.health_mean + self.health_dev

    def take(self, idx: np.ndarray) -> "State":
        """A deep copy of the rows `idx` (the oracle's futures start from such copies)."""
        def sub(name, v):
            if name == "review":  # cause-major
                return v[:, idx].copy()
            if isinstance(v, Loan):
                return Loan(**{f.name: getattr(v, f.name)[idx].copy() for f in fields(Loan)})
            if isinstance(v, Window):
                return Window(v.buf[:, idx].copy(), v.total[idx].copy())
            return None if v is None else v[idx].copy()
        return replace(self, **{f.name: sub(f.name, getattr(self, f.name)) for f in fields(State)})


def init_state(user_id: np.ndarray, days: int, rng: np.random.Generator,
               behaviour: Behaviour = Behaviour()) -> State:
    """Draw users: segment, signup day, latent traits, limits and a starting score."""
    n = len(user_id)
    merchant = rng.random(n) < 0.45
    before = rng.random(n) < 0.75
    signup_day = np.where(before, rng.integers(-730, 0, n), rng.integers(0, max(days // 2, 1), n)).astype(np.int32)
    liquidity = rng.standard_normal(n)
    discipline = rng.standard_normal(n)
    health_mean = 0.6 * rng.standard_normal(n) + 0.25 * discipline
    health_dev = 0.6 * rng.standard_normal(n)
    health = health_mean + health_dev
    score_true = np.clip(650 + 45 * health + 20 * discipline + 15 * rng.standard_normal(n), 350, 950)
    pl_limit = np.clip(np.round(np.exp(np.log(20_000) + 0.35 * health + 0.2 * liquidity
                                       + 0.5 * rng.standard_normal(n)), -2), 1_000, 300_000)
    bl_limit = np.clip(np.round(np.exp(np.log(100_000) + 0.6 * rng.standard_normal(n)), -3), 10_000, 2_000_000)
    return State(
        user_id=user_id, merchant=merchant, signup_day=signup_day, liquidity=liquidity,
        discipline=discipline, health_mean=health_mean, health_dev=health_dev, score_true=score_true,
        score_day=rng.integers(0, 30, n).astype(np.int16), scores=np.full((n, 4), np.nan),
        score_term=np.zeros(n),
        p_early_pl=_sigmoid(behaviour.early_logit + 1.3 * liquidity),
        p_early_bl=_sigmoid(behaviour.early_logit + 0.5 + 1.4 * liquidity),
        inquiry_base=behaviour.inquiry_rate * np.exp(-0.3 * liquidity),
        pl_draw_base=behaviour.pl_draw * np.exp(-0.5 * liquidity),
        bl_draw_base=behaviour.bl_draw * np.exp(-0.3 * liquidity),
        bl_close_base=behaviour.bl_close * np.exp(0.8 * liquidity),
        pl=Loan.empty(n, pl_limit), bl=Loan.empty(n, bl_limit),
        bl_closed_day=np.full(n, -10_000, np.int32), misuse_day=np.full(n, -1, np.int32),
        misuse_amount=np.zeros(n),
        early=Window.empty(EARLY_WINDOW, n), late=Window.empty(LATE_WINDOW, n),
        inquiries=Window.empty(INQUIRY_WINDOW, n), misuse=Window.empty(MISUSE_WINDOW, n),
        restricted=np.zeros(n, bool), restricted_day=np.full(n, -1, np.int32),
        restricted_cause=np.full(n, -1, np.int8), score_at_restriction=np.full(n, np.nan),
        late_since_restriction=np.zeros(n, np.int16), clean_since_restriction=np.zeros(n, np.int16),
        early_since_restriction=np.zeros(n, np.int16), inquiries_since_restriction=np.zeros(n, np.int16),
        bl_draws_since_restriction=np.zeros(n, np.int16),
        appeal_review_day=np.full(n, -1, np.int32), misuse_flags=np.zeros(n, np.int16),
        red_line=np.zeros(n, bool),
        sample_u=rng.random(n), hazard=np.zeros((n, len(CAUSES))), review=np.zeros((len(CAUSES), n)),
    )


class Events:
    """Accumulates events as column arrays, one block per call, without per-event Python."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, ...]] = []

    def add(self, idx: np.ndarray, day: int | np.ndarray, code: int, amount=None, dpd=None, score=None) -> None:
        k = len(idx)
        if k == 0:
            return
        nan = np.full(k, np.nan)
        self.blocks.append((
            idx.astype(np.int64), np.broadcast_to(np.asarray(day, np.int32), (k,)).copy(),
            np.full(k, code, np.int8),
            nan if amount is None else np.asarray(amount, float),
            nan if dpd is None else np.asarray(dpd, float),
            nan if score is None else np.asarray(score, float),
        ))

    def columns(self) -> tuple[np.ndarray, ...]:
        if not self.blocks:
            return tuple(np.empty(0, t) for t in (np.int64, np.int32, np.int8, float, float, float))
        return tuple(np.concatenate(c) for c in zip(*self.blocks))


class Draws:
    """The day's random numbers over one Generator (the main run, the oracle's futures): each draw is
    made for exactly the rows that need it, in the order the step asks, so worlds stay as they were.
    `key` names the mechanism; only `Paired` uses it."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def _gen(self, key: str) -> np.random.Generator:
        return self.rng

    def _size(self, rows: np.ndarray | int) -> int:
        return rows if isinstance(rows, (int, np.integer)) else len(rows)

    def _pick(self, values: np.ndarray, rows: np.ndarray | int) -> np.ndarray:
        return values

    def random(self, key: str, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).random(self._size(rows)), rows)

    def integers(self, key: str, low: int, high: int, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).integers(low, high, self._size(rows)), rows)

    def uniform(self, key: str, low: float, high: float, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).uniform(low, high, self._size(rows)), rows)

    def beta(self, key: str, a: float, b: float, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).beta(a, b, self._size(rows)), rows)

    def choice(self, key: str, values: np.ndarray, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).choice(values, self._size(rows)), rows)

    def standard_normal(self, key: str, rows: np.ndarray | int) -> np.ndarray:
        return self._pick(self._gen(key).standard_normal(self._size(rows)), rows)

    def poisson(self, key: str, lam: np.ndarray) -> np.ndarray:
        return self._gen(key).poisson(lam)

    def rare(self, key: str, n: int, p: float) -> np.ndarray:
        """Indices hit by an event of small constant probability p, without drawing n uniforms."""
        g = self._gen(key)
        return np.unique(g.integers(0, n, g.binomial(n, p)))


# The mechanisms that draw random numbers: each has its own stream in `Paired`.
DRAW_KEYS = ("health", "shock", "score", "inquiry", "early", "plan", "miss", "cure", "pl_draw", "bl_draw",
             "misuse", "close", "limit", "appeal")


class Paired(Draws):
    """Common random numbers for the intervention mode: one stream per mechanism, and every draw is made
    for all `n` rows and then indexed, so two runs from one seed give each row the same numbers for the
    same mechanism whatever either run's state (a plan's effect is then not noise)."""

    def __init__(self, seed: int | np.random.SeedSequence, n: int) -> None:
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self.gens = {k: np.random.default_rng(x) for k, x in zip(DRAW_KEYS, seq.spawn(len(DRAW_KEYS)))}
        self.n = n

    def _gen(self, key: str) -> np.random.Generator:
        return self.gens[key]

    def _size(self, rows: np.ndarray | int) -> int:
        return self.n

    def _pick(self, values: np.ndarray, rows: np.ndarray | int) -> np.ndarray:
        return values if isinstance(rows, (int, np.integer)) else values[rows]


def draws(rng: np.random.Generator | Draws) -> Draws:
    return rng if isinstance(rng, Draws) else Draws(rng)


# Behaviours a plan can impose (the intervention mode; data/intervene.py builds them from a plan).
BEHAVIOURS = ("no_inquiries", "repay_on_time", "no_early_repayment", "no_fund_misuse", "business_loan_use",
              "utilisation_cap", "appeal")
NORMAL_BL_USE = 1 / 15  # daily chance that a merchant keeping to normal business-loan use draws when nothing is owed


@dataclass
class Overrides:
    """Behaviour imposed on rows of the state from day `start`: behaviour b is kept while day < until[b]
    (until = start: not kept); `cap` is the utilisation the personal line is held under while kept.
    `appeal` acts once, on the first day (the user contacts the platform)."""

    start: int
    until: np.ndarray  # (len(BEHAVIOURS), n) int
    cap: np.ndarray    # (n,)

    def kept(self, name: str, day: int) -> np.ndarray:
        return self.until[BEHAVIOURS.index(name)] > day


def _kept(ov: Overrides | None, name: str, day: int, n: int) -> np.ndarray:
    return np.zeros(n, bool) if ov is None else ov.kept(name, day)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def open_products(s: State, day: int, ev: Events | None, at_or_before: bool = False) -> None:
    """Open the personal line (and the business loan for merchants) on the signup day."""
    new = s.signup_day <= day if at_or_before else s.signup_day == day
    new &= ~s.pl.opened
    idx = np.flatnonzero(new)
    s.pl.opened[idx] = True
    bl_idx = idx[s.merchant[idx]]
    s.bl.opened[bl_idx] = True
    if ev is not None:
        ev.add(idx, s.signup_day[idx], CODE["pl_open"], amount=s.pl.limit[idx])
        ev.add(bl_idx, s.signup_day[bl_idx], CODE["bl_open"], amount=s.bl.limit[bl_idx])


def _plan(loan: Loan, idx: np.ndarray, day: int, p_early: np.ndarray, rng: Draws) -> None:
    """Decide, for loans with a new instalment due, whether the user will pay it early."""
    early = rng.random("plan", idx) < p_early
    lead = rng.integers("plan", 3, 26, idx)
    plan = np.maximum(loan.due[idx] - lead, day + 1)
    loan.pay_early[idx] = np.where(early & (plan < loan.due[idx]), plan, -1)


def _settle(loan: Loan, idx: np.ndarray, amount: np.ndarray, day: int, p_early: np.ndarray, rng: Draws) -> None:
    """Apply a payment: reduce the balance, move the schedule on, plan the next instalment."""
    loan.balance[idx] = np.maximum(loan.balance[idx] - amount, 0.0)
    loan.remaining[idx] -= 1
    done = (loan.remaining[idx] <= 0) | (loan.balance[idx] < 0.005)
    loan.balance[idx[done]] = 0.0
    loan.remaining[idx[done]] = 0
    loan.due[idx[done]] = -1
    loan.pay_early[idx] = -1
    loan.overdue_since[idx] = -1
    go = idx[~done]
    loan.due[go] = np.maximum(loan.due[go] + 30, day + 15)
    _plan(loan, go, day, p_early[~done], rng)


def _repayments(s: State, loan: Loan, product: str, day: int, p_early: np.ndarray, health: np.ndarray,
                rng: Draws, ev: Events | None, b: Behaviour, hz: Hazards, on_time: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One day of repayments for one product; returns (user idx, days past due, paid) of payments made.
    Rows `on_time` (a plan) miss no instalment and clear arrears today; rows with `p_early` 0 pay nothing early."""
    code = CODE[f"{product}_repayment"]
    # Early payments planned for today (a quarter of them pay the whole balance off).
    e = np.flatnonzero((loan.pay_early == day) & (loan.overdue_since < 0) & (loan.balance > 0))
    e = e[p_early[e] > 0]
    payoff = rng.random("early", e) < 0.25
    e_amt = np.where(payoff, loan.balance[e], np.minimum(loan.instalment[e], loan.balance[e]))
    e_dpd = (day - loan.due[e]).astype(float)
    loan.remaining[e[payoff]] = 1
    _settle(loan, e, e_amt, day, p_early[e], rng)
    # Instalments due today: paid on time or missed.
    d = np.flatnonzero((loan.due == day) & (loan.overdue_since < 0) & (loan.balance > 0))
    miss = rng.random("miss", d) < _sigmoid(b.miss_logit - 1.3 * health[d] - 0.8 * s.discipline[d])
    miss &= ~on_time[d]
    loan.overdue_since[d[miss]] = day
    o = d[~miss]
    o_amt = np.minimum(loan.instalment[o], loan.balance[o])
    _settle(loan, o, o_amt, day, p_early[o], rng)
    # Overdue instalments: cured each day with a probability that falls with poor health.
    od = np.flatnonzero((loan.overdue_since >= 0) & (loan.overdue_since < day))
    # The red line: the day a loan passes red_line_dpd days past due the lender marks a default.
    red = od[(day - loan.overdue_since[od]) == hz.red_line_dpd + 1]
    s.red_line[red] = True
    if ev is not None:
        ev.add(red, day, CODE[f"{product}_default"], amount=np.round(loan.balance[red], 2),
               dpd=np.full(len(red), hz.red_line_dpd + 1.0))
    cure = rng.random("cure", od) < _sigmoid(b.cure_logit + 1.4 * health[od] + 0.6 * s.discipline[od])
    cure |= on_time[od]
    c = od[cure]
    c_dpd = (day - loan.overdue_since[c]).astype(float)
    c_amt = np.minimum(loan.instalment[c], loan.balance[c])
    _settle(loan, c, c_amt, day, p_early[c], rng)

    idx = np.concatenate([e, o, c])
    dpd = np.concatenate([e_dpd, np.zeros(len(o)), c_dpd])
    amt = np.round(np.concatenate([e_amt, o_amt, c_amt]), 2)
    if ev is not None:
        ev.add(idx, day, code, amount=amt, dpd=dpd)
    return idx, dpd, amt


def _draw(loan: Loan, idx: np.ndarray, amount: np.ndarray, terms: np.ndarray, day: int,
          p_early: np.ndarray, rng: Draws) -> None:
    """A drawdown merges into the current loan and restarts its instalment schedule."""
    loan.balance[idx] += amount
    loan.remaining[idx] = terms
    loan.instalment[idx] = np.round(loan.balance[idx] / terms, 2)
    loan.due[idx] = day + 30
    loan.overdue_since[idx] = -1
    _plan(loan, idx, day, p_early, rng)


def _pay_down(loan: Loan, idx: np.ndarray, cap: np.ndarray, day: int, p_early: np.ndarray, rng: Draws,
              ev: Events | None) -> tuple[np.ndarray, np.ndarray]:
    """A plan's utilisation cap: rows `idx` with a personal-line balance above `cap` x limit (and no
    arrears) pay it down to the cap today, one early repayment each (the platform sees it as one);
    the schedule keeps its instalments left. Returns (rows, days past due) of the payments."""
    over = idx[(loan.balance[idx] >= cap[idx] * loan.limit[idx] + 1.0) & (loan.overdue_since[idx] < 0)]
    amount = np.ceil((loan.balance[over] - cap[over] * loan.limit[over]) * 100.0) / 100.0  # to the cent, not past
    dpd = (day - loan.due[over]).astype(float)
    loan.balance[over] -= amount
    loan.instalment[over] = np.round(loan.balance[over] / np.maximum(loan.remaining[over], 1), 2)
    done = over[loan.balance[over] < 0.005]
    loan.balance[done], loan.remaining[done], loan.due[done], loan.pay_early[done] = 0.0, 0, -1, -1
    if ev is not None:
        ev.add(over, day, CODE["pl_repayment"], amount=amount, dpd=dpd)
    return over, dpd


def step(s: State, day: int, rng: np.random.Generator | Draws, ev: Events | None,
         b: Behaviour = Behaviour(), hz: Hazards = Hazards(), ov: Overrides | None = None) -> np.ndarray:
    """Advance every user one day; record events into `ev` (None: oracle futures); return hazards.

    Returns the (n, len(CAUSES)) hazard components in force at the end of the day: the
    review's smoothed components (`s.review`, which keep following behaviour while the line is
    restricted), zero where the line is not active; also stores them on the state.
    `ov`: behaviour a plan imposes on some rows (the intervention mode); `rng` a Generator or `Draws`.
    """
    n = s.n
    rng = draws(rng)
    open_products(s, day, ev)
    alive = s.pl.opened
    # Latent health: AR(1) around the user's mean, with rare adverse shocks.
    s.health_dev *= b.health_rho
    s.health_dev += b.health_sd * np.sqrt(1 - b.health_rho ** 2) * rng.standard_normal("health", n)
    s.health_dev[rng.rare("shock", n, b.shock_rate)] -= b.shock_size
    health = s.health
    # Stress multipliers exp(0.4 k * stress) for k = 1, 2, 3, from a single exp.
    x1 = np.exp(0.4 * np.maximum(-health, 0.0))
    x2 = x1 * x1

    # The credit score follows health, discipline, current overdue and recent inquiries; it is
    # reported monthly, and moves most of the way to that target between reports.
    rep = np.flatnonzero(alive & ((day - s.score_day) % 30 == 0))
    overdue_now = (s.pl.overdue_since[rep] >= 0) | (s.bl.overdue_since[rep] >= 0)
    target = (650 + 45 * health[rep] + 20 * s.discipline[rep] - 60 * overdue_now
              - 5 * s.inquiries.total[rep])
    s.score_true[rep] += 0.75 * (target - s.score_true[rep]) + 10.0 * rng.standard_normal("score", rep)
    reported = np.clip(np.round(s.score_true[rep] + 6 * rng.standard_normal("score", rep)), 350, 950)
    s.scores[rep] = np.column_stack([s.scores[rep, 1:], reported])
    change = np.nan_to_num(s.scores[rep, 3] - s.scores[rep, 0])
    s.score_term[rep] = _sigmoid((580 - reported) / 15.0) + np.maximum(-change - 10.0, 0.0) / 40.0
    if ev is not None:
        ev.add(rep, day, CODE["credit_score"], score=reported)

    # Credit inquiries elsewhere: more when stressed, less when cash-rich.
    k = rng.poisson("inquiry", s.inquiry_base * (x2 * x1))
    k[~alive | _kept(ov, "no_inquiries", day, n)] = 0
    inq = np.flatnonzero(k)
    if ev is not None and len(inq):
        rep_idx = np.repeat(inq, k[inq])
        ev.add(rep_idx, day, CODE["credit_inquiry"])

    # Early-repayment propensity: cash-rich users pay ahead, merchants more so on bl.
    p_early_pl, p_early_bl = s.p_early_pl, s.p_early_bl
    on_time_pl = on_time_bl = normal_bl = capped = None
    paid_down = (np.empty(0, np.int64), np.empty(0))
    if ov is not None:  # a plan: its rows keep to the behaviours it names
        normal_bl = ov.kept("business_loan_use", day)
        on_time_pl = ov.kept("repay_on_time", day)
        on_time_bl = on_time_pl | normal_bl
        no_early = ov.kept("no_early_repayment", day)
        p_early_pl = np.where(no_early, 0.0, p_early_pl)
        p_early_bl = np.where(no_early | normal_bl, 0.0, p_early_bl)
        capped = ov.kept("utilisation_cap", day)
        paid_down = _pay_down(s.pl, np.flatnonzero(capped), ov.cap, day, p_early_pl, rng, ev)

    pl_idx, pl_dpd, _ = _repayments(s, s.pl, "pl", day, p_early_pl, health, rng, ev, b, hz,
                                    np.zeros(n, bool) if on_time_pl is None else on_time_pl)
    bl_idx, bl_dpd, _ = _repayments(s, s.bl, "bl", day, p_early_bl, health, rng, ev, b, hz,
                                    np.zeros(n, bool) if on_time_bl is None else on_time_bl)
    pl_idx, pl_dpd = np.concatenate([pl_idx, paid_down[0]]), np.concatenate([pl_dpd, paid_down[1]])

    # Drawdowns: by need (stress), less when cash-rich; pl only while the line is active.
    avail = s.pl.limit - s.pl.balance
    if capped is not None:  # a plan holding utilisation under its cap draws only the room below it
        avail = np.where(capped, np.minimum(avail, ov.cap * s.pl.limit - s.pl.balance), avail)
    can_pl = alive & ~s.restricted & (s.pl.overdue_since < 0) & (avail >= 0.1 * s.pl.limit)
    dp = np.flatnonzero(can_pl & (rng.random("pl_draw", n) < s.pl_draw_base * x2))
    amt = np.minimum(avail[dp], np.round(s.pl.limit[dp] * rng.beta("pl_draw", 2.0, 5.0, dp) * np.sqrt(x2[dp]), -2))
    amt = np.maximum(amt, 100.0)
    _draw(s.pl, dp, amt, rng.choice("pl_draw", np.array([3, 6, 12], np.int16), dp), day, p_early_pl[dp], rng)
    if ev is not None:
        ev.add(dp, day, CODE["pl_drawdown"], amount=amt)

    bl_live = s.bl.opened & (s.bl_closed_day < 0)
    can_bl = bl_live & (s.bl.balance == 0)
    bl_rate = s.bl_draw_base * x1
    if normal_bl is not None:
        bl_rate = np.where(normal_bl, np.maximum(bl_rate, NORMAL_BL_USE), bl_rate)
    db = np.flatnonzero(can_bl & (rng.random("bl_draw", n) < bl_rate))
    bamt = np.round(s.bl.limit[db] * rng.uniform("bl_draw", 0.2, 0.9, db), -2)
    _draw(s.bl, db, bamt, rng.choice("bl_draw", np.array([3, 6], np.int16), db), day, p_early_bl[db], rng)
    if ev is not None:
        ev.add(db, day, CODE["bl_drawdown"], amount=bamt)
    # Some business drawdowns are later flagged as misused funds (never those of a plan keeping to the rules).
    mis = db[rng.random("misuse", db) < _sigmoid(b.misuse_logit - 1.0 * s.discipline[db] - 0.6 * health[db])]
    if ov is not None:
        mis = mis[~(ov.kept("no_fund_misuse", day) | normal_bl)[mis]]
    s.misuse_day[mis] = day + rng.integers("misuse", 10, 61, mis)
    s.misuse_amount[mis] = np.round(bamt[np.isin(db, mis)] * rng.uniform("misuse", 0.2, 0.8, mis), -2)
    flagged = np.flatnonzero(s.misuse_day == day)
    s.misuse_day[flagged] = -1
    if ev is not None:
        ev.add(flagged, day, CODE["bl_fund_misuse"], amount=s.misuse_amount[flagged])

    # Business-loan closure: merchants with nothing owed, likelier when cash-rich.
    cl = np.flatnonzero(bl_live & (s.bl.balance == 0) & (s.misuse_day < 0)
                        & (rng.random("close", n) < s.bl_close_base))
    s.bl_closed_day[cl] = day
    if ev is not None:
        ev.add(cl, day, CODE["bl_close"])

    # Occasional personal-line limit reviews, following health.
    lc = rng.rare("limit", n, b.limit_change)
    lc = lc[alive[lc] & ~s.restricted[lc]]
    new_limit = np.clip(np.round(s.pl.limit[lc] * np.exp(0.03 + 0.08 * health[lc] + 0.12 * rng.standard_normal("limit", lc)), -2),
                        1_000, 300_000)
    s.pl.limit[lc] = new_limit
    if ev is not None:
        ev.add(lc, day, CODE["pl_limit_change"], amount=new_limit)

    # Today's observable statistics into the ring buffers.
    early_half = np.zeros(n, np.int16)
    late = np.zeros(n, np.int16)
    np.add.at(early_half, pl_idx[pl_dpd < 0], 1)
    np.add.at(early_half, bl_idx[bl_dpd < 0], 2)
    np.add.at(late, pl_idx[pl_dpd > 0], np.minimum(pl_dpd[pl_dpd > 0], 120).astype(np.int16))
    np.add.at(late, bl_idx[bl_dpd > 0], np.minimum(bl_dpd[bl_dpd > 0], 120).astype(np.int16))
    misused = np.zeros(n, np.int16)
    misused[flagged] = 1
    s.early.push(day, early_half)
    s.late.push(day, late)
    s.inquiries.push(day, k.astype(np.int16))
    s.misuse.push(day, misused)
    s.misuse_flags[flagged] += 1
    s.red_line[flagged[s.misuse_flags[flagged] >= hz.red_line_misuse_flags]] = True
    _count_since(s, pl_idx, pl_dpd, bl_idx, bl_dpd, k, db)

    review_update(s, hazards(s, day, hz), hz)
    s.hazard = (s.review * ~s.restricted).T
    return s.hazard


def _count_since(s: State, pl_idx, pl_dpd, bl_idx, bl_dpd, inquiries, bl_draws) -> None:
    """Behaviour since the restriction (reset when one fires), capped well inside int16."""
    cap = np.int16(1000)
    for counter, idx in ((s.late_since_restriction, np.concatenate([pl_idx[pl_dpd > 0], bl_idx[bl_dpd > 0]])),
                         (s.clean_since_restriction, np.concatenate([pl_idx[pl_dpd <= 0], bl_idx[bl_dpd <= 0]])),
                         (s.early_since_restriction, np.concatenate([pl_idx[pl_dpd < 0], bl_idx[bl_dpd < 0]])),
                         (s.bl_draws_since_restriction, bl_draws)):
        np.add.at(counter, idx, 1)
        np.minimum(counter, cap, out=counter)
    s.inquiries_since_restriction += np.minimum(inquiries, cap).astype(np.int16)
    np.minimum(s.inquiries_since_restriction, cap, out=s.inquiries_since_restriction)


def review_update(s: State, h: np.ndarray, hz: Hazards = Hazards()) -> None:
    """The platform re-evaluates on refreshed data: its view of each component follows the
    instantaneous hazard `h` (len(CAUSES), n) with a lag of `review_lag_days` (exponential
    smoothing, so a behaviour pulse keeps its integral but acts later and for longer)."""
    if hz.review_lag_days <= 1.0:
        s.review[...] = h
        return
    s.review *= 1.0 - 1.0 / hz.review_lag_days
    h *= 1.0 / hz.review_lag_days
    s.review += h


def hazards(s: State, day: int, hz: Hazards = Hazards()) -> np.ndarray:
    """The instantaneous restriction hazard's components per cause (cause-major, (len(CAUSES), n)),
    from observable history (latent aside), for every open line (restricted or not)."""
    h = np.zeros((len(CAUSES), s.n))  # cause-major so each component is one contiguous row
    late = np.flatnonzero(s.late.total)
    h[0, late] = hz.overdue * (s.late.total[late] / 30.0) ** 1.3
    h[1] = hz.early_repayment * np.maximum(s.early.total / 2.0 - 1.5, 0.0)
    h[2] = hz.fund_misuse * np.minimum(s.misuse.total, 2)
    h[3] = hz.credit_score * s.score_term
    h[4] = hz.multi_borrowing * np.maximum(s.inquiries.total - 1.0, 0.0)
    util = np.flatnonzero(s.pl.balance > 0.7 * s.pl.limit)
    h[5, util] = hz.utilisation * np.minimum((s.pl.balance[util] / s.pl.limit[util] - 0.7) / 0.3, 1.0) ** 2
    h[6] = hz.bl_closure * ((day - s.bl_closed_day) < 60)
    h[7] = hz.latent * np.exp(-s.health)
    h *= s.pl.opened
    return h


RESTORE_FACTORS = ("base", "arrears", "score", "behaviour", "health", "hazard", "appeal_lift")
CHANNELS = ("auto", "appeal")


def restore_factors(s: State, idx: np.ndarray, day: int, rs: Restoration = Restoration()) -> dict[str, np.ndarray]:
    """The restoration hazard's factors for restricted lines `idx` on `day` (world.md, Restoration).

    `hazard` is their product (the daily auto-lift hazard, 0 past the red line); `health` is the
    unobserved part (latent-caused lines only); `appeal_lift` is the chance an appeal review lifts.
    """
    cause = s.restricted_cause[idx].astype(np.intp)
    cooled = (day - s.restricted_day[idx]) >= np.asarray(rs.cooling_days)[cause]
    base = np.asarray(rs.lift)[cause] * cooled
    overdue = (s.pl.overdue_since[idx] >= 0) | (s.bl.overdue_since[idx] >= 0)
    arrears = np.where(overdue, np.where(cause == CAUSES.index("overdue"), 0.0, rs.arrears_other), 1.0)
    score = s.scores[idx, 3]
    change = np.nan_to_num(np.clip((score - s.score_at_restriction[idx]) / 20.0, -3.0, 3.0))
    level = np.nan_to_num(np.clip((score - 650.0) / 50.0, -3.0, 3.0))
    score_f = np.exp(np.asarray(rs.score_change)[cause] * change + rs.score_level * level)
    behaviour = np.exp(rs.clean * np.minimum(s.clean_since_restriction[idx], 8)
                       - rs.late * s.late_since_restriction[idx]
                       - rs.inquiry * np.minimum(s.inquiries_since_restriction[idx], 6)
                       + rs.bl_use * np.minimum(s.bl_draws_since_restriction[idx], 4)
                       - rs.early * np.minimum(s.early_since_restriction[idx], 6)
                       * ((cause == CAUSES.index("early_repayment")) & (s.bl_draws_since_restriction[idx] == 0)))
    health = np.where(cause == CAUSES.index("latent"), np.exp(s.health[idx]), 1.0)
    open_ = ~s.red_line[idx]
    return {"base": base, "arrears": arrears, "score": score_f, "behaviour": behaviour, "health": health,
            "hazard": base * arrears * score_f * behaviour * health * open_,
            "appeal_lift": np.asarray(rs.appeal_lift)[cause] * open_}


def restore_hazard(s: State, day: int, rs: Restoration = Restoration()) -> tuple[np.ndarray, np.ndarray]:
    """The daily auto-lift hazard where it is not 0: (line indices, hazard). Only restricted lines
    past their cause's cooling-off and short of the red line are evaluated."""
    cooled_day = s.restricted_day + np.asarray(rs.cooling_days, np.int32)[s.restricted_cause]
    idx = np.flatnonzero(s.restricted & ~s.red_line & (cooled_day <= day))
    return idx, restore_factors(s, idx, day, rs)["hazard"]


def appeals(s: State, day: int, rng: np.random.Generator | Draws, ev: Events | None,
            rs: Restoration = Restoration(), ov: Overrides | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Restricted users contact the platform (`pl_appeal`) now and then (a plan's `appeal`: on its
    first day); a review lands some days later. Returns the restricted lines whose review lands today
    and the chance it lifts each (drawn by `restrict_and_restore`; the oracle's futures keep the chance
    instead of drawing)."""
    rng = draws(rng)
    waiting = np.flatnonzero(s.restricted & (s.appeal_review_day < 0))
    p = rs.appeal_rate * (1.0 + (day - s.restricted_day[waiting]) / 90.0) * np.exp(0.4 * s.discipline[waiting])
    asked = rng.random("appeal", waiting) < p
    if ov is not None and day == ov.start:
        asked |= ov.kept("appeal", day)[waiting]
    filed = waiting[asked]
    s.appeal_review_day[filed] = day + rng.integers("appeal", rs.review_days[0], rs.review_days[1] + 1, filed)
    if ev is not None:
        ev.add(filed, day, CODE["pl_appeal"])
    due = np.flatnonzero(s.appeal_review_day == day)
    s.appeal_review_day[due] = -1
    due = due[s.restricted[due]]
    return due, restore_factors(s, due, day, rs)["appeal_lift"]


def restrict_and_restore(s: State, day: int, rng: np.random.Generator, ev: Events,
                         reviews: tuple[np.ndarray, np.ndarray], rs: Restoration = Restoration()
                         ) -> tuple[np.ndarray, ...]:
    """Fire restrictions from today's hazard (cause drawn by share), the appeal reviews landing
    today (`reviews`: lines and their chance, from `appeals`) and auto lifts from the restoration
    hazard; record them.

    Returns (indices restricted, their cause codes, indices restored, their channel codes).
    """
    n = s.n
    total = s.hazard.sum(axis=1)
    fired = np.flatnonzero(rng.random(n) < -np.expm1(-total))
    share = np.cumsum(s.hazard[fired], axis=1) / total[fired, None]
    cause = (rng.random(len(fired))[:, None] > share).sum(axis=1)
    cause = np.minimum(cause, len(CAUSES) - 1)
    due, chance = reviews
    lifted = due[rng.random(len(due)) < chance]
    s.restricted[lifted] = False
    auto, h = restore_hazard(s, day, rs)
    auto = auto[rng.random(len(auto)) < -np.expm1(-h)]
    s.restricted[auto] = False
    restored = np.concatenate([auto, lifted])
    channel = np.repeat(np.arange(2, dtype=np.int8), [len(auto), len(lifted)])
    s.restricted[fired] = True
    s.restricted_day[fired] = day
    s.restricted_cause[fired] = cause
    s.score_at_restriction[fired] = s.scores[fired, 3]
    s.appeal_review_day[fired] = -1
    for counter in (s.late_since_restriction, s.clean_since_restriction, s.early_since_restriction,
                    s.inquiries_since_restriction, s.bl_draws_since_restriction):
        counter[fired] = 0
    ev.add(fired, day, CODE["pl_restricted"])
    ev.add(restored, day, CODE["pl_restored"])
    return fired, cause, restored, channel
