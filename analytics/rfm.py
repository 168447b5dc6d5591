"""RFM scores and the named RFM segments.

Inputs (from `customer_features`): recency = recency_days, frequency = orders,
monetary = revenue (items + freight).

**Scores 1–5, ties kept together.** A customer's score on a dimension is set by the share
of customers they strictly beat: ``score = 1 + floor(5 · b / n)`` where b is the number of
customers with a strictly worse value (for R: more days since the last purchase; for F
and M: a smaller value) and n the number of customers — i.e. quintiles of
``rank(method="min")``. Customers with the same value always get the same score, whatever
their id or row order, and a tie group never straddles two scores.

**Fallbacks.** When ties are so large that the quintile scores of a dimension do not take
all five values (on Olist 97% of customers bought once, so F quintiles give only 1 and 5;
a base of fewer than five customers always does), that dimension is scored instead by:
- R: fixed day thresholds — ≤ 30 days → 5, ≤ 90 → 4, ≤ 180 → 3, ≤ 365 → 2, else 1;
- F: fixed order counts — 1 order → 1, 2 → 3, 3 → 4, 4 or more → 5 (2 is unused: a
  second order already puts a customer well above the one-time majority);
- M: mid-rank quintiles — ``score = 1 + floor(5 · (b + t/2) / n)`` with t the size of the
  customer's tie group (the middle of the group's span), so a lone customer, or a base
  where everyone spent the same, scores 3.
Each fallback used is reported in ``scores.attrs["fallbacks"]``.

**Segments** come from the R and F scores (the widely used R×F grid). Each pattern is a
regular expression on the two digits "RF"; together they cover the 25 cells exactly once:

====================  ==========  ==========================================
segment               R F         who
====================  ==========  ==========================================
Champions             5 [4-5]     bought recently, buy often
Loyal                 [3-4] [4-5] buy often, fairly recently
Potential Loyalist    [4-5] [2-3] recent, a few orders
New                   5 1         first order very recently
Promising             4 1         one recent order
Need Attention        3 3         average recency and frequency
About to Sleep        3 [1-2]     fading, few orders
At Risk               [1-2] [3-4] bought often, long ago
Can't Lose Them       [1-2] 5     the best buyers, gone quiet
Hibernating           [1-2] [1-2] long ago, few orders (not 1 1)
Lost                  1 1         lowest recency and frequency
====================  ==========  ==========================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storage.geography import ALL, Place

SCORE_COLUMNS = ("customer_id", "recency", "frequency", "monetary",
                 "r_score", "f_score", "m_score", "segment")
RECENCY_DAYS_BINS = (30, 90, 180, 365)  # ≤ 30 → 5 … > 365 → 1
FREQUENCY_FALLBACK = (1, 1, 3, 4, 5)  # score by order count 0, 1, 2, 3, 4+


@dataclass(frozen=True)
class Segment:
    name: str
    pattern: str  # regular expression on "RF" (the two score digits)
    description: str
    action: str


SEGMENTS: tuple[Segment, ...] = (
    Segment("Champions", r"5[4-5]", "Bought very recently and buy often.",
            "Reward them; ask for reviews; early access to new products."),
    Segment("Loyal", r"[3-4][4-5]", "Buy regularly and fairly recently.",
            "Upsell higher-value products; loyalty programme."),
    Segment("Potential Loyalist", r"[4-5][2-3]", "Recent customers with a few orders.",
            "Membership or loyalty offer; recommend related categories."),
    Segment("New", r"51", "Made their first purchase very recently.",
            "Onboarding: welcome message, delivery follow-up, second-order incentive."),
    Segment("Promising", r"41", "One fairly recent purchase.",
            "Build the relationship: brand awareness, free-shipping offer."),
    Segment("Need Attention", r"33", "Average recency and frequency.",
            "Limited-time offers based on their past purchases."),
    Segment("About to Sleep", r"3[1-2]", "Below-average recency, few orders.",
            "Reactivate with popular products and discounts before they lapse."),
    Segment("At Risk", r"[1-2][3-4]", "Bought often, but a long time ago.",
            "Personalised win-back emails; renewals; helpful resources."),
    Segment("Can't Lose Them", r"[1-2]5", "Made the most orders, but have not come back.",
            "Win them back with new products or a personal call; don't lose them to a competitor."),
    Segment("Hibernating", r"(?!11)[1-2][1-2]", "Last purchase long ago, few orders.",
            "Offer other relevant products and special discounts; recreate brand value."),
    Segment("Lost", r"11", "Lowest recency and frequency.",
            "Revive with a reach-out campaign; otherwise ignore."),
)
SEGMENT_NAMES = tuple(s.name for s in SEGMENTS)


def segment_of(r: int, f: int) -> str:
    """The segment of an R score and an F score (1–5 each)."""
    return _SEGMENT_GRID[r - 1][f - 1]


def _grid() -> list[list[str]]:
    """grid[r-1][f-1] = segment name; fails if the patterns overlap or leave a gap."""
    grid = []
    for r in range(1, 6):
        row = []
        for f in range(1, 6):
            hits = [s.name for s in SEGMENTS if re.fullmatch(s.pattern, f"{r}{f}")]
            if len(hits) != 1:
                raise ValueError(f"RF cell {r}{f} matches {hits}")
            row.append(hits[0])
        grid.append(row)
    return grid


_SEGMENT_GRID = _grid()


def quintile_scores(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Scores 1–5 from the share of customers with a strictly worse value (ties together)."""
    keyed = values if higher_is_better else -values
    beaten = keyed.rank(method="min").to_numpy() - 1
    return pd.Series(_bucket(beaten, len(values)), index=values.index)


def midrank_scores(values: pd.Series) -> pd.Series:
    """Scores 1–5 from the mid-rank share (a group of equal values sits in its middle)."""
    mid = values.rank(method="average").to_numpy() - 0.5  # b + t/2
    return pd.Series(_bucket(mid, len(values)), index=values.index)


def _bucket(position: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(1 + np.floor(5 * position / max(n, 1)), 5).astype(np.int64)


def recency_fallback(days: pd.Series) -> pd.Series:
    return pd.Series(5 - np.searchsorted(RECENCY_DAYS_BINS, days.to_numpy(), side="left"),
                     index=days.index).astype(np.int64)


def frequency_fallback(orders: pd.Series) -> pd.Series:
    lut = np.asarray(FREQUENCY_FALLBACK, dtype=np.int64)
    return pd.Series(lut[np.clip(orders.to_numpy(), 0, len(lut) - 1)], index=orders.index)


def rfm_scores(features: pd.DataFrame) -> pd.DataFrame:
    """R, F, M scores and segment per customer (columns `SCORE_COLUMNS`).

    Scores the whole base given; ``attrs["fallbacks"]`` lists the fallbacks used.
    """
    recency = features["recency_days"].astype(np.int64)
    frequency = features["orders"].astype(np.int64)
    monetary = features["revenue"].astype(float)
    fallbacks: list[str] = []

    r = quintile_scores(recency, higher_is_better=False)
    if r.nunique() < 5 and len(r):
        r = recency_fallback(recency)
        fallbacks.append(
            "R: too many customers share a recency for quintiles, so R uses fixed day "
            "thresholds (≤30 days → 5, ≤90 → 4, ≤180 → 3, ≤365 → 2, older → 1)."
        )
    f = quintile_scores(frequency)
    if f.nunique() < 5 and len(f):
        share = float((frequency == frequency.mode().iloc[0]).mean())
        f = frequency_fallback(frequency)
        fallbacks.append(
            f"F: {share:.0%} of customers have the same order count, so F uses fixed "
            "thresholds (1 order → 1, 2 → 3, 3 → 4, 4+ → 5)."
        )
    m = quintile_scores(monetary)
    if m.nunique() < 5 and len(m):
        m = midrank_scores(monetary)
        fallbacks.append(
            "M: too few distinct spend values for quintiles, so M uses mid-rank quintiles."
        )

    scores = pd.DataFrame({
        "customer_id": features["customer_id"].to_numpy(),
        "recency": recency.to_numpy(),
        "frequency": frequency.to_numpy(),
        "monetary": monetary.to_numpy(),
        "r_score": r.to_numpy(),
        "f_score": f.to_numpy(),
        "m_score": m.to_numpy(),
    })
    grid = np.array(_SEGMENT_GRID, dtype=object)
    cells = (scores["r_score"].to_numpy() - 1, scores["f_score"].to_numpy() - 1)
    scores["segment"] = pd.Series(grid[cells], dtype=object)
    scores.attrs["fallbacks"] = fallbacks
    return scores


def rfm_segments(scores: pd.DataFrame, include_empty: bool = True) -> pd.DataFrame:
    """Per segment (in `SEGMENTS` order): customers, share, revenue, revenue_share,
    mean recency (days), frequency (orders) and monetary, description and action.

    `scores` may be any subset of the scored base (e.g. one state); shares are within it.
    """
    total_customers = len(scores)
    total_revenue = float(scores["monetary"].sum()) if total_customers else 0.0
    grouped = scores.groupby("segment", sort=False).agg(
        customers=("customer_id", "size"),
        revenue=("monetary", "sum"),
        recency=("recency", "mean"),
        frequency=("frequency", "mean"),
        monetary=("monetary", "mean"),
    )
    table = grouped.reindex(list(SEGMENT_NAMES))
    table["customers"] = table["customers"].fillna(0).astype(np.int64)
    table["revenue"] = table["revenue"].fillna(0.0)
    table["share"] = table["customers"] / total_customers if total_customers else 0.0
    table["revenue_share"] = table["revenue"] / total_revenue if total_revenue else 0.0
    table["description"] = [s.description for s in SEGMENTS]
    table["action"] = [s.action for s in SEGMENTS]
    table = table.rename_axis("segment").reset_index()
    if not include_empty:
        table = table[table["customers"] > 0].reset_index(drop=True)
    return table[["segment", "customers", "share", "revenue", "revenue_share",
                  "recency", "frequency", "monetary", "description", "action"]]


def segment_summary(scores_with_geo: pd.DataFrame, place: Place = ALL,
                    include_empty: bool = True) -> pd.DataFrame:
    """`rfm_segments` of the customers in `place` (needs `state` / `region` columns).

    Scores are computed once over the whole base; a place only filters who is counted.
    """
    if not place.is_all:
        scores_with_geo = scores_with_geo[scores_with_geo[place.kind] == place.value]
    return rfm_segments(scores_with_geo, include_empty=include_empty)
