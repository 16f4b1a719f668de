"""The declarative feature registry: the single source of truth for what the model sees.

Compute, monotone constraints, reason codes and recovery levers all read `FEATURES`;
nothing else in the project lists feature names.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# The world's cause families (shared/design/world.md), then families that are not causes.
CAUSE_FAMILIES = ("overdue", "early_repayment", "fund_misuse", "credit_score", "multi_borrowing",
                  "utilisation", "bl_closure")
FAMILIES = CAUSE_FAMILIES + ("activity", "tenure")


@dataclass(frozen=True)
class Feature:
    """One feature: how it is computed, how the model may use it, and how it is explained."""

    name: str
    family: str          # one of FAMILIES
    window: int | None   # look-back in days; None = all history before as_of
    aggregation: str     # e.g. count, sum, share, max, last, days_since
    direction: int       # monotone constraint for the model: +1, -1 or 0
    actionable: bool     # can the user change it by their own behaviour
    text_en: str         # reason text, `{value}` is the user's value
    text_zh: str

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"feature {self.name}: unknown family {self.family!r}")
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"feature {self.name}: direction must be -1, 0 or +1")


FEATURES: tuple[Feature, ...] = ()  # filled in by the feature-pipeline work


def feature_names() -> list[str]:
    return [f.name for f in FEATURES]


def spec_hash() -> str:
    """sha256 of the spec: a model refuses features built from another spec."""
    payload = json.dumps([asdict(f) for f in FEATURES], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
