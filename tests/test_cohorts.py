"""Cohort retention: hand-made stores worked out by hand, and Olist's 2017-01 cohort."""

from __future__ import annotations

import datetime as dt

import numpy as np
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

from analytics.cohorts import cohort_retention
from storage.geography import resolve_place
from storage.store import open_store

AS_OF = AS_OF_SHOP


@pytest.fixture
def shop(store):  # noqa: ANN001
    build_shop(store)
    return store


def test_monthly_cohorts_by_hand(shop) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    # Cohorts: Jan {A, B}, Feb {C}, Mar {D, F, G, H}; A buys again in Feb; C's March
    # order is canceled; B's April order is after as_of (2024-03-20, so March is partial).
    r = cohort_retention(shop, AS_OF, max_periods=3)
    assert (r.as_of, r.label, r.period) == (AS_OF, "all customers", "month")
    assert list(r.retention.index) == ["2024-01", "2024-02", "2024-03"]
    assert list(r.retention.columns) == [0, 1, 2, 3]
    assert r.retention.loc["2024-01"].tolist()[:3] == [1.0, 0.5, 0.0]
    assert r.retention.loc["2024-02"].tolist()[:2] == [1.0, 0.0]  # a one-customer cohort
    assert np.isnan(r.retention.loc["2024-02", 2]) and np.isnan(r.retention.loc["2024-03", 1])
    assert (r.retention[0] == 1.0).all()
    assert r.cohorts["size"].tolist() == [2, 1, 4]
    assert r.cohorts["revenue"].tolist() == pytest.approx([385, 60, 70])
    assert r.cohorts["revenue_per_customer"].tolist() == pytest.approx([192.5, 60, 17.5])
    # March (the period holding as_of) is marked incomplete on each cohort's row
    assert r.current_period == "2024-03" and r.current_period_partial
    assert r.incomplete.loc["2024-01", 2] and r.incomplete.loc["2024-02", 1]
    assert r.incomplete.loc["2024-03", 0] and r.incomplete.to_numpy().sum() == 3
    # M1 is complete only for January's cohort; M2 for none
    assert r.average[1] == pytest.approx(0.5) and r.average_cohorts[1] == 1
    assert r.average[2] is None and r.average_cohorts[2] == 0
    assert r.revenue_matrix.loc["2024-01", 1] == pytest.approx(55)


def test_as_of_on_the_last_day_completes_the_month(shop) -> None:  # noqa: ANN001
    r = cohort_retention(shop, dt.date(2024, 2, 29))
    assert not r.current_period_partial and not r.incomplete.to_numpy().any()
    assert list(r.retention.index) == ["2024-01", "2024-02"]
    assert r.average[1] == pytest.approx(0.5) and r.average_cohorts[1] == 1


def test_weekly_cohorts(shop) -> None:  # noqa: ANN001
    r = cohort_retention(shop, AS_OF, period="week", max_periods=6)
    # A: first purchase Mon 2024-01-01, again Mon 2024-02-05 = 5 weeks later
    row = r.retention.loc["2024-01-01"]
    assert row.tolist() == [1.0, 0, 0, 0, 0, 1.0, 0]
    assert r.current_period == "2024-03-18" and r.current_period_partial  # as_of is a Wednesday
    assert "2024-01-15" in r.retention.index  # B's Saturday purchase, Monday-based week


def test_place_filter_and_empty_place(shop) -> None:  # noqa: ANN001
    r = cohort_retention(shop, AS_OF, resolve_place("SP"))
    assert r.cohorts["size"].tolist() == [2] and r.retention.loc["2024-01", 1] == 0.5
    empty = cohort_retention(shop, AS_OF, resolve_place("AM"))
    assert empty.retention.empty and empty.cohorts.empty
    assert empty.average == {1: None, 2: None, 3: None}


def test_weighted_average_over_cohorts(default_store_url) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine)
    # Jan cohort: 4 customers, 1 back in Feb. Feb cohort: 1 customer, back in Mar.
    for i in range(4):
        s.customer(f"j{i}").order(f"j{i}", f"j{i}", "2024-01-10", [("x", 10, 0)])
    s.order("j0b", "j0", "2024-02-10", [("x", 10, 0)])
    s.customer("f").order("f1", "f", "2024-02-03", [("x", 10, 0)])
    s.order("f2", "f", "2024-03-03", [("x", 10, 0)])
    r = cohort_retention(engine, dt.date(2024, 3, 31))
    assert r.retention.loc["2024-01", 1] == 0.25 and r.retention.loc["2024-02", 1] == 1.0
    assert r.average[1] == pytest.approx((1 + 1) / (4 + 1))  # weighted, not (0.25 + 1) / 2
    assert r.average[2] == pytest.approx(0 / 4)


def test_bad_period() -> None:
    with pytest.raises(ValueError):
        cohort_retention(None, AS_OF, period="year")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


def _expected_retention(p: pd.DataFrame, cohort: str, k: int) -> float:
    month = p["order_purchase_timestamp"].dt.to_period("M")
    first = month.groupby(p["person"]).transform("min")
    members = p.loc[first == pd.Period(cohort, "M"), "person"].unique()
    later = p[(first == pd.Period(cohort, "M")) & (month == pd.Period(cohort, "M") + k)]
    return later["person"].nunique() / len(members)


@pytest.mark.realdata
def test_olist_2017_01_cohort(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    r = cohort_retention(olist, AS_OF_OLIST)
    size = (p.groupby("person")["order_purchase_timestamp"].min().dt.strftime("%Y-%m") == "2017-01").sum()
    assert r.cohorts.set_index("cohort").loc["2017-01", "size"] == size
    for k in (1, 2, 3):
        assert r.retention.loc["2017-01", k] == pytest.approx(_expected_retention(p, "2017-01", k))
    assert r.current_period == "2018-08" and r.current_period_partial


@pytest.mark.realdata
def test_olist_region_cohort(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    sul = p[p["person"].map(person_state(olist_raw())).isin(["PR", "SC", "RS"])]
    r = cohort_retention(olist, AS_OF_OLIST, resolve_place("south"))
    assert r.retention.loc["2017-05", 1] == pytest.approx(_expected_retention(sul, "2017-05", 1))


@pytest.mark.parametrize("period", ["month", "week"])
def test_cohorts_from_a_dataset_equal_the_sql(shop, period: str) -> None:  # noqa: ANN001
    # the refresh and the benchmark compute cohorts from the store read once (analytics.dataset)
    from analytics.dataset import read_dataset

    data = read_dataset(shop, full=False)
    for place in (resolve_place("SP"), resolve_place("sudeste"), resolve_place("AM")):
        for as_of in (AS_OF, dt.date(2024, 2, 29)):
            sql = cohort_retention(shop, as_of, place, period=period, max_periods=8)
            fast = cohort_retention(shop, as_of, place, period=period, max_periods=8, dataset=data)
            for name in ("retention", "active", "incomplete", "revenue_matrix", "cohorts"):
                pd.testing.assert_frame_equal(getattr(fast, name), getattr(sql, name), check_dtype=False,
                                              obj=f"{place.label} {as_of} {name}")
            assert fast.average == pytest.approx(sql.average) and fast.average_cohorts == sql.average_cohorts
    everyone = cohort_retention(shop, AS_OF, period=period, dataset=data)
    pd.testing.assert_frame_equal(everyone.active, cohort_retention(shop, AS_OF, period=period).active,
                                  check_dtype=False)
