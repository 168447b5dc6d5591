"""Delivery report: a hand-made store worked out by hand, and Olist's SLA against pandas."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from analytics_data import AS_OF_OLIST, Shop, loaded_store, olist_purchases, olist_raw, person_state

from analytics.delivery import delivery_report
from analytics.errors import NotAvailable
from storage.geography import resolve_place
from storage.store import open_store

AS_OF = dt.date(2024, 3, 20)


def build_shop(engine) -> None:  # noqa: ANN001
    s = Shop(engine)
    for cid, state in [("A", "SP"), ("B", "SP"), ("C", "RJ"), ("D", "BA"), ("E", "AM")]:
        s.customer(cid, state)
    # on time by 5 days; 4.0 days
    s.order("d1", "A", "2024-01-01 10:00", [("x", 100, 10)], delivered="2024-01-05 10:00",
            estimated="2024-01-10", reviews=[(5, "2024-01-06")])
    # delivered at noon on the promised day: on time; 10.5 days
    s.order("d2", "A", "2024-02-01 00:00", [("x", 100, 20)], delivered="2024-02-11 12:00",
            estimated="2024-02-11", reviews=[(4, "2024-02-12")])
    # 5 days late; 10 days
    s.order("d3", "B", "2024-01-10 00:00", [("x", 100, 30)], delivered="2024-01-20 00:00",
            estimated="2024-01-15", reviews=[(1, "2024-01-21")])
    # 1 day late; 2 days
    s.order("d4", "C", "2024-01-05 00:00", [("x", 100, 40)], delivered="2024-01-07 00:00",
            estimated="2024-01-06", reviews=[(2, "2024-01-08")])
    s.order("d5", "C", "2024-03-01 00:00", [("x", 100, 50)], status="shipped", estimated="2024-03-30")
    # delivered after as_of: not delivered yet as of 2024-03-20
    s.order("d6", "D", "2024-03-10 00:00", [("x", 100, 60)], delivered="2024-03-25",
            estimated="2024-03-30")
    s.order("d7", "B", "2024-03-01 00:00", [("x", 100, 70)], status="canceled",
            delivered="2024-03-02", estimated="2024-03-05")
    s.order("d8", "E", "2024-03-01 00:00", [("x", 100, 0)], status="canceled")


@pytest.fixture
def shop(store):  # noqa: ANN001
    build_shop(store)
    return store


def test_delivery_by_hand(shop) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    r = delivery_report(shop, AS_OF, min_orders=1, bands=2)
    assert (r.as_of, r.label) == (AS_OF, "all customers")
    assert r.delivered_orders == 4 and r.not_delivered == 2 and r.orders_with_estimate == 4
    assert r.mean_days == pytest.approx((4 + 10.5 + 10 + 2) / 4)
    assert r.median_days == pytest.approx(7.0)
    assert r.p90_days == pytest.approx(10 + 0.7 * 0.5)  # linear interpolation on 2, 4, 10, 10.5
    assert r.on_time_share == 0.5 and r.late_share == 0.5
    assert r.mean_days_late == pytest.approx(3.0)

    states = r.by_state.set_index("state")
    assert states.loc["SP", "orders"] == 3 and states.loc["SP", "on_time_share"] == pytest.approx(2 / 3)
    assert states.loc["RJ", "on_time_share"] == 0.0 and states.loc["RJ", "mean_days_late"] == 1.0
    assert r.best_states == ["SP"] and r.worst_states == ["RJ"]
    assert r.by_region.set_index("region").loc["Sudeste", "orders"] == 4

    bands = r.freight_bands
    assert bands["orders"].tolist() == [2, 2]
    assert bands["on_time_share"].tolist() == [1.0, 0.0]  # freight 10, 20 vs 30, 40
    assert bands["freight_max"].tolist() == [20, 40]

    assert r.review_on_time == pytest.approx(4.5) and r.review_late == pytest.approx(1.5)
    assert (r.reviews_on_time, r.reviews_late) == (2, 2)

    # A: first order on time, bought again. B: first late, later order canceled.
    # C: first late, bought again (d5). D: first order not delivered yet: left out.
    rep = r.repeat_after_first.set_index("first_order")
    assert rep.loc["on time", "customers"] == 1 and rep.loc["on time", "repeat_rate"] == 1.0
    assert rep.loc["late", "customers"] == 2 and rep.loc["late", "repeat_rate"] == 0.5


def test_min_orders_hides_small_groups(shop) -> None:  # noqa: ANN001
    r = delivery_report(shop, AS_OF, min_orders=2)
    assert r.best_states == [] and r.worst_states == []  # only SP has 2+, one group can't rank


def test_place_filter_and_empty_place(shop) -> None:  # noqa: ANN001
    r = delivery_report(shop, AS_OF, resolve_place("RJ"))
    assert r.delivered_orders == 1 and r.on_time_share == 0.0 and r.not_delivered == 1
    empty = delivery_report(shop, AS_OF, resolve_place("AM"))
    assert empty.delivered_orders == 0 and empty.not_delivered == 0
    assert empty.mean_days is None and empty.on_time_share is None and empty.p90_days is None
    assert empty.by_state.empty and empty.freight_bands.empty
    assert empty.review_late is None and empty.repeat_after_first["customers"].sum() == 0


def test_no_delivery_dates_is_not_available(default_store_url) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine, source="online-retail").customer("A", "United Kingdom")
    s.order("i1", "A", "2011-01-01", [("x", 10, 0)], status="invoiced")
    with pytest.raises(NotAvailable, match="online-retail.*delivery dates"):
        delivery_report(engine, dt.date(2011, 12, 9))


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


def _sla(p: pd.DataFrame) -> tuple[int, float]:
    end = pd.Timestamp(AS_OF_OLIST + dt.timedelta(days=1))
    d = p[p["order_delivered_customer_date"].notna() & (p["order_delivered_customer_date"] < end)]
    on_time = d["order_delivered_customer_date"].dt.normalize() <= d["order_estimated_delivery_date"].dt.normalize()
    return len(d), on_time.mean()


@pytest.mark.realdata
def test_olist_sla_overall_and_region(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    r = delivery_report(olist, AS_OF_OLIST)
    n, share = _sla(p)
    assert r.delivered_orders == n
    assert r.on_time_share == pytest.approx(share, rel=1e-12)
    nordeste = ["AL", "BA", "CE", "MA", "PB", "PE", "PI", "RN", "SE"]
    ne = p[p["person"].map(person_state(olist_raw())).isin(nordeste)]
    n_ne, share_ne = _sla(ne)
    region = r.by_region.set_index("region").loc["Nordeste"]
    assert region["orders"] == n_ne and region["on_time_share"] == pytest.approx(share_ne, rel=1e-12)
    only = delivery_report(olist, AS_OF_OLIST, resolve_place("northeast"))
    assert only.on_time_share == pytest.approx(share_ne, rel=1e-12)
    # lateness hurts reviews
    assert r.review_late < r.review_on_time


@pytest.mark.realdata
def test_uci_has_no_deliveries(tmp_path_factory) -> None:  # noqa: ANN001
    from analytics_data import AS_OF_UCI

    engine = loaded_store(tmp_path_factory, "online-retail", "online-retail")
    with pytest.raises(NotAvailable, match="no delivery dates"):
        delivery_report(engine, AS_OF_UCI)
    engine.dispose()


def test_freight_bands_by_group_are_each_groups_own_bands() -> None:
    """Every group's bands equal `freight_bands` of its rows alone: groups whose ties leave
    duplicate quantile edges, one freight value, one row; a missing key and an unobserved
    category left out; missing on-time flags and days skipped by the means."""
    import numpy as np

    from analytics.delivery import freight_bands, freight_bands_by

    rng = np.random.default_rng(8)
    n = 4_000
    frame = pd.DataFrame({
        "state": pd.Categorical(rng.choice(["AC", "BA", "MG", "RJ", "SP", None], size=n, p=[.05, .15, .2, .2, .3, .1]),
                                categories=["AC", "AM", "BA", "MG", "RJ", "SP"]),
        "freight": rng.gamma(2.0, 10.0, size=n).round(1),
        "on_time": rng.choice([1.0, 0.0, np.nan], size=n, p=[.7, .2, .1]),
        "days": rng.normal(12, 4, size=n).round(),
    })
    frame.loc[frame["state"] == "BA", "freight"] = rng.choice([5.0, 5.0, 5.0, 9.5, 20.0], size=(frame["state"] == "BA").sum())
    frame.loc[frame["state"] == "MG", "freight"] = 7.25  # one value: one band
    frame.loc[frame["state"] == "AC", "days"] = np.nan
    frame = pd.concat([frame, pd.DataFrame({"state": pd.Categorical(["AM"], categories=frame["state"].cat.categories),
                                            "freight": [3.0], "on_time": [1.0], "days": [4.0]})], ignore_index=True)
    got = freight_bands_by(frame, "state", 5)
    want = [(value, freight_bands(rows, 5)) for value, rows in frame.groupby("state", sort=True, observed=True)]
    assert [v for v, _ in got] == [v for v, _ in want] == ["AC", "AM", "BA", "MG", "RJ", "SP"]
    for (_, mine), (_, theirs) in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    bands = dict(got)
    assert len(bands["MG"]) == 1 and len(bands["AM"]) == 1 and 1 < len(bands["BA"]) < 5 and len(bands["SP"]) == 5
    assert bands["SP"]["orders"].sum() == (frame["state"] == "SP").sum()
    assert freight_bands_by(frame.iloc[:0], "state", 5) == []
    with pytest.raises(ValueError):
        freight_bands_by(frame.assign(freight=np.nan), "state", 5)


@pytest.mark.parametrize("categorical", [True, False])
def test_grouped_stats_are_each_groups_order_stats(categorical: bool) -> None:
    """Each group's row equals `order_stats` of that group's own frame (as pandas' groupby
    gives it: missing keys a group, last), with categorical keys numbered from their codes
    (an unobserved category left out) and with object keys."""
    import numpy as np

    from analytics.delivery import STATS, grouped_stats, order_stats

    rng = np.random.default_rng(21)
    n = 3_000
    days_late = rng.normal(-3, 6, size=n).round()
    frame = pd.DataFrame({
        "state": rng.choice(["BA", "RJ", "SP", None], size=n, p=[.2, .3, .4, .1]),
        "region": rng.choice(["Nordeste", "Sudeste", None], size=n, p=[.4, .5, .1]),
        "days": rng.gamma(3.0, 4.0, size=n).round(),
        "days_late": np.where(rng.random(n) < .15, np.nan, days_late),
    })
    frame["on_time"] = (frame["days_late"] <= 0).where(frame["days_late"].notna()).astype(float)
    if categorical:
        frame["state"] = pd.Categorical(frame["state"], categories=["AC", "BA", "RJ", "SP"])
        frame["region"] = pd.Categorical(frame["region"], categories=["Nordeste", "Sudeste"])
    for keys in (["state", "region"], ["region"]):
        got = grouped_stats(frame, keys)
        want = pd.DataFrame(
            [{**dict(zip(keys, k if isinstance(k, tuple) else (k,), strict=True)), **order_stats(g)}
             for k, g in frame.groupby(keys, dropna=False, sort=True, observed=True)],
            columns=keys + STATS)
        want["orders"] = want["orders"].astype(int)
        want = want.sort_values(["orders", keys[0]], ascending=[False, True], ignore_index=True)
        assert len(got) == len(want) == {2: 12, 1: 3}[len(keys)]
        assert got[keys].isna().any().all()  # missing keys are groups of their own
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_freight_bands_are_pandas_qcut_bands() -> None:
    """`quantile_bands` cuts as pd.qcut does (ties leaving duplicate edges dropped), and
    `freight_bands` counts each band as pandas' group-by of the qcut codes: orders without
    freight in no band, missing on-time flags and days left out of the means."""
    import numpy as np

    from analytics.delivery import freight_bands, quantile_bands

    rng = np.random.default_rng(21)
    for values in (rng.gamma(2.0, 10.0, 5_000).round(1), rng.choice([5.0, 5.0, 5.0, 9.5, 20.0], 999),
                   np.array([1.0, 2.0]), np.array([3.0, 3.0, 3.0, 4.0]), rng.normal(size=7)):
        for bands in (1, 4, 5, 10):
            want = pd.qcut(values, bands, labels=False, duplicates="drop")
            assert quantile_bands(values, bands).tolist() == want.tolist()
    df = pd.DataFrame({"freight": rng.gamma(2.0, 10.0, 3_000).round(1),
                       "on_time": rng.choice([1.0, 0.0, np.nan], 3_000), "days": rng.normal(12, 4, 3_000)})
    df.loc[::17, "freight"] = np.nan
    df.loc[::5, "days"] = np.nan
    codes = pd.qcut(df["freight"], 5, labels=False, duplicates="drop")
    g = df.assign(band=codes + 1).dropna(subset=["band"]).astype({"band": int}).groupby("band")
    want = pd.DataFrame({"freight_min": g["freight"].min(), "freight_max": g["freight"].max(), "orders": g.size(),
                         "mean_freight": g["freight"].mean(), "on_time_share": g["on_time"].mean(),
                         "mean_days": g["days"].mean()}).reset_index()
    got = freight_bands(df, 5)
    assert got["orders"].sum() == df["freight"].notna().sum()
    pd.testing.assert_frame_equal(got, want[got.columns], check_dtype=False, rtol=1e-12)
