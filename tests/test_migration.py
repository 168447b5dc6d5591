"""Segment migration between two snapshots: the matrix, shares, ranks, revenue, flows."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from conftest import new_store
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.errors import NotAvailable
from analytics.migration import (
    NEW_CUSTOMERS,
    NOT_IN_LATER,
    migration_between,
    resolve_snapshots,
    snapshot_dates,
    transition,
)
from analytics.rfm import SEGMENT_NAMES
from storage.geography import ALL, Place
from storage.schema import segment_snapshots

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 8)


def frame(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    """(customer_id, segment, revenue, state) rows; region from the state."""
    region = {"SP": "Sudeste", "RJ": "Sudeste", "RS": "Sul"}
    return pd.DataFrame([{"customer_id": c, "segment": s, "revenue": r, "state": st_,
                          "region": region[st_]} for c, s, r, st_ in rows])


BEFORE = frame([
    ("a", "Champions", 100.0, "SP"), ("b", "Champions", 200.0, "SP"), ("c", "Loyal", 50.0, "RJ"),
    ("d", "At Risk", 80.0, "RS"), ("e", "Lost", 10.0, "RS"), ("g", "Lost", 7.0, "SP"),
])
AFTER = frame([
    ("a", "Champions", 120.0, "SP"), ("b", "At Risk", 200.0, "SP"), ("c", "Champions", 90.0, "RJ"),
    ("d", "Hibernating", 80.0, "RS"), ("e", "Lost", 10.0, "RS"), ("f", "New", 30.0, "RS"),
])


def test_matrix_counts_shares_and_revenue() -> None:
    m = transition(BEFORE, AFTER, earlier=D1, later=D2)
    assert list(m.counts.index) == ["Champions", "Loyal", "At Risk", "Lost", NEW_CUSTOMERS]
    assert list(m.counts.columns) == ["Champions", "New", "At Risk", "Hibernating", "Lost", NOT_IN_LATER]
    c = m.counts
    assert c.loc["Champions", "Champions"] == 1 and c.loc["Champions", "At Risk"] == 1
    assert c.loc["Loyal", "Champions"] == 1 and c.loc["At Risk", "Hibernating"] == 1
    assert c.loc["Lost", "Lost"] == 1 and c.loc["Lost", NOT_IN_LATER] == 1
    assert c.loc[NEW_CUSTOMERS, "New"] == 1  # new customers are a row, not dropped
    assert int(c.to_numpy().sum()) == 7
    assert m.shares.loc["Champions", "Champions"] == pytest.approx(0.5)
    assert m.shares.sum(axis=1).tolist() == pytest.approx([1.0] * 5)
    # revenue as of the later snapshot (the earlier one for customers gone from the later)
    assert m.revenue.loc["Champions", "Champions"] == 120.0
    assert m.revenue.loc["Loyal", "Champions"] == 90.0
    assert m.revenue.loc["Lost", NOT_IN_LATER] == 7.0
    assert (m.customers_earlier, m.customers_later) == (6, 6)
    assert (m.upgrades, m.downgrades, m.stayed, m.new_customers, m.not_in_later) == (1, 2, 2, 1, 1)
    assert m.upgrade_revenue == 90.0 and m.downgrade_revenue == 280.0
    assert m.new_revenue == 30.0


def test_flows_biggest_first_in_words() -> None:
    before = frame([(f"x{i}", "Champions", 10.0, "SP") for i in range(5)]
                   + [(f"y{i}", "Promising", 1.0, "SP") for i in range(3)])
    after = frame([(f"x{i}", "At Risk" if i < 3 else "Loyal", 10.0, "SP") for i in range(5)]
                  + [(f"y{i}", "About to Sleep", 1.0, "SP") for i in range(3)])
    m = transition(before, after, earlier=D1, later=D2)
    top = m.top_flows(3)
    assert [f.sentence() for f in top] == [
        "3 Champions became At Risk",  # 3 customers, R$ 30: beats the tie on count by revenue
        "3 Promising became About to Sleep",
        "2 Champions became Loyal",
    ]
    assert [f.direction for f in top] == ["downgrade", "downgrade", "downgrade"]
    assert top[0].share_of_source == pytest.approx(0.6)
    assert top[0].revenue == 30.0


def test_by_segment_revenue_in_and_out() -> None:
    m = transition(BEFORE, AFTER, earlier=D1, later=D2)
    seg = m.by_segment.set_index("segment")
    assert seg.loc["Champions", "earlier"] == 2 and seg.loc["Champions", "later"] == 2
    assert seg.loc["Champions", "revenue_in"] == 90.0  # c arrived from Loyal
    assert seg.loc["Champions", "revenue_out"] == 200.0  # b left for At Risk
    assert seg.loc["New", "revenue_new"] == 30.0
    assert seg.loc["Champions", "net_revenue"] == -110.0
    assert seg.loc["Lost", "later"] == 1  # g is no longer in the later snapshot


def test_place_uses_the_later_snapshot_geography() -> None:
    sul = transition(BEFORE, AFTER, earlier=D1, later=D2, place=Place("region", "Sul", "region Sul"))
    assert int(sul.counts.to_numpy().sum()) == 3  # d, e and the new f
    sp = transition(BEFORE, AFTER, earlier=D1, later=D2, place=Place("state", "SP", "SP"))
    assert sp.counts.loc["Lost", NOT_IN_LATER] == 1  # g counted by its earlier state
    assert sp.as_of == D2 and sp.label == "SP"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SEGMENT_NAMES + ("",)), st.sampled_from(SEGMENT_NAMES + ("",))),
                min_size=1, max_size=40))
def test_every_customer_is_counted_once(pairs: list[tuple[str, str]]) -> None:
    before = frame([(f"c{i}", b, 1.0, "SP") for i, (b, _) in enumerate(pairs) if b])
    after = frame([(f"c{i}", a, 2.0, "SP") for i, (_, a) in enumerate(pairs) if a])
    if before.empty:
        before = pd.DataFrame(columns=["customer_id", "segment", "revenue", "state", "region"])
    if after.empty:
        after = pd.DataFrame(columns=["customer_id", "segment", "revenue", "state", "region"])
    m = transition(before, after, earlier=D1, later=D2)
    present = sum(1 for b, a in pairs if b or a)
    assert int(m.counts.to_numpy().sum()) == present
    assert m.upgrades + m.downgrades + m.stayed + m.new_customers + m.not_in_later == present
    assert m.upgrades == sum(1 for b, a in pairs if b and a and SEGMENT_NAMES.index(a) < SEGMENT_NAMES.index(b))
    assert int(m.flows["customers"].sum()) == m.upgrades + m.downgrades


def test_choosing_snapshots(tmp_path) -> None:
    engine = new_store(tmp_path, "snap.db")
    with pytest.raises(NotAvailable, match="pulse refresh"):
        resolve_snapshots(engine, dt.date(2024, 1, 16))
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 8), dt.date(2024, 1, 15)]
    with engine.begin() as conn:
        for i, day in enumerate(days):
            conn.execute(segment_snapshots.insert(), [
                {"snapshot_date": day, "customer_id": "a", "segment": ["Champions", "Loyal", "At Risk"][i],
                 "revenue": 10.0 + i, "state": "SP", "region": "Sudeste"}])
    assert snapshot_dates(engine) == days
    assert resolve_snapshots(engine, dt.date(2024, 1, 16), 1) == (days[1], days[2])
    assert resolve_snapshots(engine, dt.date(2024, 1, 16), 2) == (days[0], days[2])
    assert resolve_snapshots(engine, dt.date(2024, 1, 12), 1) == (days[0], days[1])
    with pytest.raises(NotAvailable, match="pulse backfill"):
        resolve_snapshots(engine, dt.date(2024, 1, 16), 3)
    m = migration_between(engine, days[0], days[2], ALL)
    assert m.downgrades == 1 and m.flows.iloc[0].to_dict()["target"] == "At Risk"
    engine.dispose()
