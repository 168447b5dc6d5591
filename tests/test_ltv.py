"""LTV by geography: quadrants, outliers and small groups worked out by hand; Olist vs pandas."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from analytics_data import AS_OF_OLIST, Shop, loaded_store, olist_purchases, olist_raw, person_state
from sqlalchemy import Engine

from analytics.ltv import TOO_FEW, ltv_by_geography
from storage import schema
from storage.geography import ALL, Place, resolve_place
from storage.store import open_store

AS_OF = dt.date(2024, 6, 30)


def build_states(engine: Engine, spend: dict[str, list[list[float]]]) -> None:
    """spend[state] = one list of order values per customer."""
    s = Shop(engine)
    for state, customers in spend.items():
        for i, orders in enumerate(customers):
            cid = f"{state}{i}"
            s.customer(cid, state)
            for j, value in enumerate(orders):
                s.order(f"{cid}-{j}", cid, f"2024-0{j + 1}-10", [("x", value, 0)])


QUADRANT_SHOP = {
    "SP": [[50, 50], [100], [100], [100]],  # 4 customers, average 100, one repeater
    "RJ": [[300]] * 4,  # 4 customers, average 300
    "MG": [[500]] * 2,  # 2 customers, average 500
    "BA": [[50]] * 2,  # 2 customers, average 50
    "PE": [[1000]],  # 1 customer: too few
}


def test_quadrants_by_hand(store) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    build_states(store, QUADRANT_SHOP)
    r = ltv_by_geography(store, AS_OF, min_customers=2)
    g = r.groups.set_index("group")
    assert (r.as_of, r.label, r.level) == (AS_OF, "all customers", "state")
    assert r.customers == 13 and r.revenue == pytest.approx(400 + 1200 + 1000 + 100 + 1000)
    assert g.loc["SP", "average_ltv"] == pytest.approx(100) and g.loc["SP", "repeat_rate"] == 0.25
    assert g.loc["SP", "orders"] == 5
    # thresholds: medians over the four classified states
    assert r.volume_threshold == 3.0 and r.ltv_threshold == pytest.approx(200)
    assert g.loc["SP", "quadrant"] == "high volume / low LTV"
    assert g.loc["RJ", "quadrant"] == "high volume / high LTV"
    assert g.loc["MG", "quadrant"] == "low volume / high LTV"
    assert g.loc["BA", "quadrant"] == "early-stage"
    assert g.loc["PE", "quadrant"] == TOO_FEW and np.isnan(g.loc["PE", "z_score"])
    assert not g["outlier"].any()
    assert list(r.groups["group"]) == ["RJ", "MG", "PE", "SP", "BA"]  # by revenue, ties by name


def test_outlier_flagged(default_store_url) -> None:
    engine = open_store(default_store_url)
    spend = {s: [[100], [100]] for s in ("SP", "RJ", "MG", "BA", "PE", "PR")}
    spend["RS"] = [[1000], [1000]]
    build_states(engine, spend)
    r = ltv_by_geography(engine, AS_OF, min_customers=2)
    g = r.groups.set_index("group")
    values = np.array([100] * 6 + [1000])
    assert g.loc["RS", "z_score"] == pytest.approx((1000 - values.mean()) / values.std())
    assert g["outlier"].tolist().count(True) == 1 and g.loc["RS", "outlier"]


def test_region_level_and_filter(default_store_url) -> None:
    engine = open_store(default_store_url)
    build_states(engine, QUADRANT_SHOP)
    r = ltv_by_geography(engine, AS_OF, level="region", min_customers=2)
    g = r.groups.set_index("group")
    assert g.loc["Sudeste", "customers"] == 10 and g.loc["Nordeste", "customers"] == 3
    assert g.loc["Nordeste", "average_ltv"] == pytest.approx(1100 / 3)
    only = ltv_by_geography(engine, AS_OF, resolve_place("nordeste"), min_customers=2)
    assert set(only.groups["group"]) == {"BA", "PE"}
    assert only.groups.set_index("group").loc["PE", "quadrant"] == TOO_FEW
    none = ltv_by_geography(engine, AS_OF, resolve_place("AM"))
    assert none.groups.empty and none.customers == 0 and none.average_ltv is None
    assert none.volume_threshold is None
    with pytest.raises(ValueError):
        ltv_by_geography(engine, AS_OF, level="city")


def test_reads_customer_features_when_refreshed_for_as_of(default_store_url) -> None:
    engine = open_store(default_store_url)
    build_states(engine, {"SP": [[100], [200]]})
    f = schema.customer_features
    with engine.begin() as conn:  # a refresh made for another date is ignored
        conn.execute(f.insert(), [
            {"customer_id": "SP0", "as_of": dt.date(2024, 1, 1), "orders": 9, "revenue": 9.0, "state": "SP", "region": "Sudeste"},
        ])
    assert ltv_by_geography(engine, AS_OF).revenue == pytest.approx(300)
    with engine.begin() as conn:
        conn.execute(f.delete())
        conn.execute(f.insert(), [
            {"customer_id": "SP0", "as_of": AS_OF, "orders": 2, "revenue": 150.0, "state": "SP", "region": "Sudeste"},
            {"customer_id": "SP1", "as_of": AS_OF, "orders": 1, "revenue": 200.0, "state": "SP", "region": "Sudeste"},
        ])
    r = ltv_by_geography(engine, AS_OF)
    assert r.revenue == pytest.approx(350) and r.groups["repeat_rate"].iloc[0] == 0.5


def test_features_path_matches_orders_path(default_store_url) -> None:
    """With a customer_features refresh for as_of, LTV and finance answer the same."""
    from analytics.features import build_features
    from analytics.filters import features_ready
    from analytics.finance import finance_report

    engine = open_store(default_store_url)
    build_states(engine, QUADRANT_SHOP)
    Shop(engine).order("late", "SP0", "2024-07-02", [("x", 999, 0)])  # after as_of
    Shop(engine).order("void", "RJ0", "2024-05-02", [("x", 999, 0)], status="canceled")
    before, fin_before = ltv_by_geography(engine, AS_OF, min_customers=2), finance_report(engine, AS_OF)
    features = build_features(engine, AS_OF)
    cols = ["customer_id", "as_of", "orders", "revenue", "state", "region", "first_purchase", "last_purchase"]
    rows = features[cols].astype(object).to_dict("records")
    for row in rows:
        row["first_purchase"] = row["first_purchase"].to_pydatetime()
        row["last_purchase"] = row["last_purchase"].to_pydatetime()
    with engine.begin() as conn:
        conn.execute(schema.customer_features.insert(), rows)
    assert features_ready(engine, AS_OF)
    after, fin_after = ltv_by_geography(engine, AS_OF, min_customers=2), finance_report(engine, AS_OF)
    pd.testing.assert_frame_equal(before.groups, after.groups)
    assert fin_after.gini == pytest.approx(fin_before.gini) and fin_after.customers == 13


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


@pytest.mark.realdata
def test_olist_ltv_by_state(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    p = p.assign(state=p["person"].map(person_state(olist_raw())))
    per_person = p.groupby(["state", "person"])["revenue"].agg(["sum", "size"]).reset_index()
    expected = per_person.groupby("state").agg(
        customers=("person", "size"), revenue=("sum", "sum"), repeat=("size", lambda s: (s >= 2).mean())
    )
    r = ltv_by_geography(olist, AS_OF_OLIST)
    g = r.groups.set_index("group")
    assert len(g) == 27 and (g["quadrant"] != TOO_FEW).all()
    for state in ("SP", "PB", "RR"):
        assert g.loc[state, "customers"] == expected.loc[state, "customers"]
        assert g.loc[state, "average_ltv"] == pytest.approx(
            expected.loc[state, "revenue"] / expected.loc[state, "customers"], rel=1e-9
        )
        assert g.loc[state, "repeat_rate"] == pytest.approx(expected.loc[state, "repeat"], rel=1e-9)
    avg = expected["revenue"] / expected["customers"]
    assert r.ltv_threshold == pytest.approx(avg.median(), rel=1e-9)
    assert r.volume_threshold == expected["customers"].median()


@pytest.mark.realdata
@pytest.mark.slow
def test_olist_ltv_adds_up_from_the_refresh_facts(olist, tmp_path_factory) -> None:  # noqa: ANN001
    """After a refresh, LTV by geography adds up from agg_customers: the same groups as the
    customers' totals give, and the per-state figures pandas computes from the raw data."""
    from conftest import copy_store

    from analytics.filters import customer_facts
    from analytics.ltv import _groups_from_store
    from analytics.refresh import refresh

    olist.dispose()
    engine = copy_store(olist, tmp_path_factory.mktemp("olist-ltv"))
    refresh(engine, AS_OF_OLIST, k=2)
    assert customer_facts(engine) is not None
    for place, level in ((ALL, "state"), (ALL, "region"), (Place("region", "Sudeste", "Sudeste"), "state")):
        r = ltv_by_geography(engine, AS_OF_OLIST, place, level=level)
        raw = _groups_from_store(engine, AS_OF_OLIST, place, level).set_index("group").sort_index()
        got = r.groups.set_index("group").sort_index()
        assert list(got.index) == list(raw.index)
        assert (got["customers"] == raw["customers"]).all()
        assert got["revenue"].to_numpy() == pytest.approx(raw["revenue"].to_numpy(), rel=1e-12)
        assert (got["repeat_rate"] == raw["repeaters"] / raw["customers"]).all()
    p = olist_purchases()
    p = p.assign(state=p["person"].map(person_state(olist_raw())))
    per_person = p.groupby(["state", "person"])["revenue"].agg(["sum", "size"]).reset_index()
    expected = per_person.groupby("state").agg(customers=("person", "size"), revenue=("sum", "sum"))
    g = ltv_by_geography(engine, AS_OF_OLIST).groups.set_index("group")
    assert (g.loc[expected.index, "customers"] == expected["customers"]).all()
    assert g.loc[expected.index, "revenue"].to_numpy() == pytest.approx(expected["revenue"].to_numpy(), rel=1e-9)
    engine.dispose()
