"""KPIs overview: a hand-made store worked out by hand, and the full Olist against pandas."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from analytics_data import (
    AS_OF_OLIST,
    AS_OF_SHOP,
    Shop,
    build_shop,
    loaded_store,
    olist_purchases,
    olist_raw,
    person_state,
)

from analytics.kpis import overview
from analytics.periods import month_is_partial
from storage.geography import ALL, Place, resolve_place
from storage.store import open_store

AS_OF = AS_OF_SHOP


@pytest.fixture
def shop(store):  # noqa: ANN001
    build_shop(store)
    return store


def test_headline_figures_by_hand(shop) -> None:  # noqa: ANN001 - runs on SQLite and PostgreSQL
    r = overview(shop, AS_OF, min_category_orders=1)
    assert (r.as_of, r.label) == (AS_OF, "all customers")
    # purchases o1 o2 o3 o4 o6 o9 o10 o11: 110+55+220+60+44+15+10+1
    assert r.orders == 8 and r.customers == 7
    assert r.revenue == pytest.approx(515.0)
    assert r.average_order_value == pytest.approx(515 / 8)
    assert r.repeat_customers == 1 and r.repeat_rate == pytest.approx(1 / 7)
    assert r.new_revenue == pytest.approx(460.0) and r.returning_revenue == pytest.approx(55.0)
    # o5 is canceled and o6's review is written after as_of
    assert r.average_review == pytest.approx(4.0) and r.reviews == 2
    assert r.data_start == dt.date(2024, 1, 1)

    m = r.monthly.set_index("month")
    assert list(m.index) == ["2024-01", "2024-02", "2024-03"]
    assert list(m["revenue"]) == pytest.approx([330, 115, 70])
    assert list(m["active_customers"]) == [2, 2, 4]
    assert list(m["new_customers"]) == [2, 1, 4]
    assert list(m["new_ratio"]) == pytest.approx([1.0, 0.5, 1.0])
    assert list(m["partial"]) == [False, False, True]
    assert m.loc["2024-02", "mom_change"] == pytest.approx(115 / 330 - 1)
    assert pd.isna(m.loc["2024-01", "mom_change"]) and pd.isna(m.loc["2024-03", "mom_change"])
    assert r.last_complete_month == "2024-02" and r.mom_change == pytest.approx(115 / 330 - 1)
    assert (m["new_customers"] <= m["active_customers"]).all()

    states = r.by_state.set_index("state")
    assert list(states.index) == ["SP", "RJ", "RS", "MG", "BA", "PE"]
    assert states.loc["SP", "revenue"] == pytest.approx(385) and states.loc["SP", "customers"] == 2
    assert r.top5_state_share == pytest.approx(514 / 515)
    regions = r.by_region.set_index("region")
    assert regions.loc["Sudeste", "revenue"] == pytest.approx(460)
    assert regions.loc["Sudeste", "customers"] == 4
    assert regions.loc["Nordeste", "revenue"] == pytest.approx(11)

    cats = r.by_category.set_index("category")
    assert list(cats.index) == ["books", "toys", "garden"]
    assert list(cats["revenue"]) == pytest.approx([251, 205, 59])
    assert list(cats["orders"]) == [3, 4, 2]
    assert r.categories == 3 and r.categories_for_80pct == 2

    wh = r.weekday_hour
    assert wh.shape == (7, 24) and wh.values.sum() == pytest.approx(515)
    assert wh.loc["Mon", 0] == pytest.approx(110) and wh.loc["Sat", 10] == pytest.approx(220)
    assert wh.loc["Wed", 11] == pytest.approx(10) and wh.loc["Sun"].sum() == 0

    lift = r.category_lift.set_index(["group", "category"])["lift"]
    assert r.lift_level == "region"
    assert lift[("Sul", "garden")] == pytest.approx(1 / (2 / 9))
    assert lift[("Sudeste", "toys")] == pytest.approx((3 / 6) / (4 / 9))
    assert lift[("Nordeste", "books")] == pytest.approx((1 / 2) / (3 / 9))


def test_long_tail_and_lift_threshold(shop) -> None:  # noqa: ANN001
    r = overview(shop, AS_OF, top_categories=1, min_category_orders=2)
    assert list(r.by_category["category"]) == ["books", "other (2 categories)"]
    assert r.by_category["revenue"].tolist() == pytest.approx([251, 264])
    assert r.categories == 3  # the count is over all categories, not the rows shown
    kept = set(map(tuple, r.category_lift[["group", "category"]].to_numpy()))
    assert kept == {("Sudeste", "toys"), ("Sudeste", "books")}


def test_region_filter(shop) -> None:  # noqa: ANN001
    r = overview(shop, AS_OF, resolve_place("nordeste"), min_category_orders=1)
    assert r.label == "region Nordeste"
    assert (r.customers, r.orders) == (2, 2) and r.revenue == pytest.approx(11)
    assert r.lift_level == "state"
    # the baseline is the whole store: PE buys only books (3 of 9 pairs overall)
    lift = r.category_lift.set_index(["group", "category"])["lift"]
    assert lift[("PE", "books")] == pytest.approx(1 / (3 / 9))


@pytest.mark.parametrize("place", [resolve_place("AM"), Place("state", "XX", "XX")])
def test_place_without_purchases_is_empty_not_an_error(shop, place) -> None:  # noqa: ANN001
    r = overview(shop, AS_OF, place)
    assert (r.customers, r.orders, r.revenue) == (0, 0, 0.0)
    assert r.average_order_value is None and r.repeat_rate is None and r.average_review is None
    assert r.top5_state_share is None and r.by_state.empty and r.by_category.empty
    assert r.monthly["revenue"].sum() == 0 and len(r.monthly) == 3
    assert r.weekday_hour.values.sum() == 0 and r.category_lift.empty


def test_first_purchase_ties_break_on_order_id(default_store_url) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine).customer("A")
    s.order("b", "A", "2024-01-05 10:00", [("x", 30, 0)])
    s.order("a", "A", "2024-01-05 10:00", [("x", 70, 0)])
    r = overview(engine, dt.date(2024, 1, 31))
    assert r.customers == 1 and r.repeat_rate == 1.0
    assert r.new_revenue == pytest.approx(70) and r.returning_revenue == pytest.approx(30)
    assert r.monthly["new_customers"].tolist() == [1]


def test_month_is_partial() -> None:
    assert month_is_partial(dt.date(2024, 3, 20), "2024-03")
    assert not month_is_partial(dt.date(2024, 3, 31), "2024-03")
    assert not month_is_partial(dt.date(2024, 2, 29), dt.date(2024, 2, 10))  # leap year
    assert month_is_partial(dt.date(2024, 5, 1), "2024-01", data_start=dt.date(2024, 1, 2))
    assert not month_is_partial(dt.date(2024, 5, 1), "2024-01", data_start=dt.date(2024, 1, 1))
    assert not month_is_partial(dt.date(2024, 5, 1), "2024-02", data_start=dt.date(2024, 1, 2))


def test_data_starting_mid_month_has_no_mom(default_store_url) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine).customer("A")
    s.order("o1", "A", "2024-01-10", [("x", 100, 0)])
    s.order("o2", "A", "2024-02-10", [("x", 150, 0)])
    s.order("o3", "A", "2024-03-10", [("x", 300, 0)])
    r = overview(engine, dt.date(2024, 3, 31))
    assert r.monthly["partial"].tolist() == [True, False, False]
    assert pd.isna(r.monthly["mom_change"].iloc[1])  # January was partial
    assert r.mom_change == pytest.approx(1.0) and r.last_complete_month == "2024-03"


# --- the full Olist ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def olist_overview(olist):  # noqa: ANN001
    return overview(olist, AS_OF_OLIST)


@pytest.mark.realdata
def test_olist_headline_figures(olist_overview) -> None:  # noqa: ANN001
    p = olist_purchases()
    per_person = p.groupby("person").size()
    r = olist_overview
    assert r.customers == p["person"].nunique()
    assert r.orders == len(p)
    assert r.revenue == pytest.approx(p["revenue"].sum(), rel=1e-9)
    assert r.average_order_value == pytest.approx(p["revenue"].sum() / len(p), rel=1e-9)
    assert r.repeat_rate == pytest.approx((per_person >= 2).mean(), rel=1e-9)
    first = p.sort_values(["order_purchase_timestamp", "order_id"]).drop_duplicates("person")
    assert r.new_revenue == pytest.approx(first["revenue"].sum(), rel=1e-9)


@pytest.mark.realdata
def test_olist_average_review(olist_overview) -> None:  # noqa: ANN001
    rv = olist_raw()["reviews"]
    rv = rv[rv["order_id"].isin(olist_purchases()["order_id"])]
    rv = rv[rv["review_creation_date"] < pd.Timestamp(AS_OF_OLIST + dt.timedelta(days=1))]
    assert olist_overview.reviews == len(rv)
    assert olist_overview.average_review == pytest.approx(rv["review_score"].mean(), rel=1e-9)


@pytest.mark.realdata
def test_olist_top5_state_share_and_monthly(olist_overview) -> None:  # noqa: ANN001
    p = olist_purchases()
    state = p["person"].map(person_state(olist_raw()))
    by_state = p.groupby(state)["revenue"].sum().sort_values(ascending=False)
    assert olist_overview.top5_state_share == pytest.approx(
        by_state.head(5).sum() / by_state.sum(), rel=1e-9
    )
    months = p.groupby(p["order_purchase_timestamp"].dt.strftime("%Y-%m"))["revenue"].sum()
    got = olist_overview.monthly.set_index("month")["revenue"]
    assert got[got > 0].to_dict() == pytest.approx(months.to_dict(), rel=1e-9)
    assert olist_overview.monthly["partial"].iloc[-1]  # August 2018 ends after as_of
    assert olist_overview.last_complete_month == "2018-07"


@pytest.mark.realdata
def test_olist_state_filter_matches_subset(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    rj = p[p["person"].map(person_state(olist_raw())) == "RJ"]
    r = overview(olist, AS_OF_OLIST, resolve_place("rio de janeiro"))
    assert r.customers == rj["person"].nunique()
    assert r.revenue == pytest.approx(rj["revenue"].sum(), rel=1e-9)


# --- UCI Online Retail ------------------------------------------------------------------


@pytest.fixture(scope="module")
def uci(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "online-retail", "online-retail")
    yield engine
    engine.dispose()


@pytest.mark.realdata
def test_uci_headline_figures(uci) -> None:  # noqa: ANN001
    from analytics_data import AS_OF_UCI, uci_purchases

    lines = uci_purchases()
    per_invoice = lines.groupby("InvoiceNo").agg(customer=("CustomerID", "first"), value=("value", "sum"))
    per_customer = per_invoice.groupby("customer").size()
    r = overview(uci, AS_OF_UCI)
    assert r.customers == per_invoice["customer"].nunique()
    assert r.orders == len(per_invoice)
    assert r.revenue == pytest.approx(per_invoice["value"].sum(), rel=1e-9)
    assert r.repeat_rate == pytest.approx((per_customer >= 2).mean(), rel=1e-9)
    assert r.average_review is None and r.by_category.empty
    assert r.by_state["state"].iloc[0] == "United Kingdom"


def test_overview_is_all_by_default(shop) -> None:  # noqa: ANN001
    assert overview(shop, AS_OF).place == ALL
