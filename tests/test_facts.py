"""Answer facts (agg_* tables): every report answers the same from the refresh's facts as
from the raw tables — on hand-made stores (SQLite and PostgreSQL) and on the full Olist —
and falls back to the raw tables when the facts are missing or made for another date."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from analytics_data import AS_OF_OLIST, AS_OF_SHOP, Shop, build_shop, loaded_store
from conftest import copy_store
from sqlalchemy import Engine, func, select

from analytics.cohorts import cohort_retention
from analytics.dataset import read_dataset
from analytics.delivery import delivery_report
from analytics.facts import _month_keys, build_facts, compute_all_facts
from analytics.filters import FACTS_META, facts_meta
from analytics.finance import finance_report
from analytics.kpis import overview
from analytics.ltv import ltv_by_geography
from analytics.payments import payments_report
from analytics.refresh import refresh
from analytics.weekly import weekly_kpis
from storage import schema
from storage.geography import ALL, Place, resolve_place
from storage.store import open_store, set_meta

REPORTS: dict[str, Callable] = {
    "overview": lambda e, d, p: overview(e, d, p, min_category_orders=1),
    "delivery": lambda e, d, p: delivery_report(e, d, p, min_orders=1),
    "payments": payments_report,
    "finance": finance_report,
    "cohorts": lambda e, d, p: cohort_retention(e, d, p, max_periods=30),
    "cohorts-week": lambda e, d, p: cohort_retention(e, d, p, period="week", max_periods=60),
    "ltv": ltv_by_geography,
    "weekly": weekly_kpis,
}


def assert_same(a, b, path: str = "result") -> None:  # noqa: ANN001
    """Equal results: same fields, frames equal (floats to 1e-9), NaN equals NaN."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), path
        if a.empty and b.empty:
            assert list(a.columns) == list(b.columns), path
            return
        pd.testing.assert_frame_equal(
            _plain(a), _plain(b), check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-9, obj=path,
        )
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-9), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as NaN whatever their spelling (None / NaN / NA)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].where(out[col].notna(), np.nan)
    return out


def answers(engine: Engine, as_of: dt.date, places: list[Place]) -> dict:
    return {(name, p.label): fn(engine, as_of, p) for name, fn in REPORTS.items() for p in places}


def assert_facts_match(engine: Engine, as_of: dt.date, places: list[Place]) -> None:
    """Answers before build_facts (raw tables) equal the answers after (facts)."""
    before = answers(engine, as_of, places)
    build_facts(engine, as_of)
    assert facts_meta(engine, as_of) is not None
    after = answers(engine, as_of, places)
    for key, result in before.items():
        assert_same(result, after[key], f"{key}")


SHOP_PLACES = [ALL, resolve_place("SP"), resolve_place("nordeste"), resolve_place("sudeste"),
               resolve_place("AM"), Place("state", "XX", "XX"), Place("region", "Nowhere", "Nowhere")]


def add_payments_and_deliveries(engine: Engine) -> None:
    """More orders on top of `build_shop`: deliveries, payments, a mismatch, an unpaid order,
    a customer with no customers row and one with no state."""
    s = Shop(engine)
    s.customer("N", None, None)
    s.order("q1", "A", "2024-03-01 09:00", [("toys", 100, 60)], delivered="2024-03-05 12:00",
            estimated="2024-03-04", payments=[("credit_card", 3, 160)], reviews=[(2, "2024-03-06")])
    s.order("q2", "B", "2024-02-10 09:00", [("books", 80, 5)], delivered="2024-02-12 08:00",
            estimated="2024-02-20", payments=[("boleto", 1, 50), ("voucher", 1, 40)],
            reviews=[(5, "2024-02-13"), (4, "2024-02-14")])
    s.order("q3", "C", "2024-01-11 10:00", [("garden", 20, 20)], delivered="2024-01-20",
            estimated="2024-01-20", payments=[("credit_card", 10, 40)])
    s.order("q4", "ghost", "2024-02-02 02:00", [(None, 30, 3)], payments=[(None, None, 33)])
    s.order("q5", "N", "2024-03-10 23:59", [("toys", 10, 1)], delivered="2024-03-19 23:00",
            estimated="2024-03-25", payments=[("credit_card", 2, 11)])
    s.order("q6", "D", "2024-03-16 10:00", [("garden", 5, 0)], delivered="2024-03-30",
            estimated="2024-03-18")  # delivered after as_of


def test_reports_answer_the_same_from_facts(store) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    build_shop(store)
    add_payments_and_deliveries(store)
    with store.begin() as conn:  # segments for the payments breakdown
        conn.execute(schema.customer_scores.insert(), [
            {"customer_id": c, "as_of": AS_OF_SHOP, "model_version": "t", "segment": seg}
            for c, seg in [("A", "Champions"), ("B", "At Risk"), ("C", None), ("N", "At Risk")]
        ])
    assert_facts_match(store, AS_OF_SHOP, SHOP_PLACES)


def test_date_without_purchases(default_store_url) -> None:
    engine = open_store(default_store_url)
    build_shop(engine)
    add_payments_and_deliveries(engine)
    assert_facts_match(engine, dt.date(2023, 12, 31), [ALL, resolve_place("SP")])


def test_facts_of_another_date_are_not_used(default_store_url) -> None:
    engine = open_store(default_store_url)
    build_shop(engine)
    build_facts(engine, dt.date(2024, 1, 31))
    assert facts_meta(engine, AS_OF_SHOP) is None
    with engine.begin() as conn:  # poison the facts: a report that read them would show 1e9
        conn.execute(schema.agg_orders_monthly.update().values(revenue=1e9))
    assert overview(engine, AS_OF_SHOP).revenue == pytest.approx(515.0)
    assert overview(engine, dt.date(2024, 1, 31)).revenue >= 1e9  # the facts of its own date


def test_refresh_writes_facts_in_its_transaction(default_store_url) -> None:
    engine = open_store(default_store_url)
    build_shop(engine)
    add_payments_and_deliveries(engine)
    before = payments_report(engine, AS_OF_SHOP)
    report = refresh(engine, AS_OF_SHOP, k=2)
    assert "facts" in report.timings
    assert facts_meta(engine, AS_OF_SHOP) is not None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.agg_orders_monthly)).scalar() > 0
    after = payments_report(engine, AS_OF_SHOP)
    # the segment breakdown now exists (scores written) and comes from the facts
    assert after.by_segment is not None and before.by_segment is None
    assert_same(dataclasses.replace(before, by_segment=None, segments_as_of=None),
                dataclasses.replace(after, by_segment=None, segments_as_of=None))
    assert after.by_segment["customers"].sum() > 0

    # the facts the refresh computed on its thread are those build_facts makes on its own
    # (from the store read again and the segments as written)
    def facts_tables() -> dict[str, pd.DataFrame]:
        with engine.connect() as conn:
            return {t.name: _sorted(pd.read_sql(select(t), conn)) for t in schema.FACT_TABLES}

    by_refresh = facts_tables()
    assert sum(map(len, by_refresh.values())) > 0
    build_facts(engine, AS_OF_SHOP)
    for name, frame in facts_tables().items():
        pd.testing.assert_frame_equal(frame, by_refresh[name], obj=name)
    computed = compute_all_facts(read_dataset(engine, full=False), AS_OF_SHOP,
                                 pd.DataFrame({"customer_id": [], "segment": []}))
    with pytest.raises(ValueError, match="computed for"):
        build_facts(engine, dt.date(2024, 1, 31), computed=computed)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), ignore_index=True, na_position="first")


@pytest.mark.realdata
def test_olist_answers_the_same_from_facts(tmp_path_factory, tmp_path) -> None:  # noqa: ANN001
    source = loaded_store(tmp_path_factory, "olist", "olist")
    engine = copy_store(source, tmp_path, "olist.db")  # the shared store stays without facts
    source.dispose()
    places = [ALL, resolve_place("RJ"), resolve_place("nordeste"), resolve_place("AC")]
    assert_facts_match(engine, AS_OF_OLIST, places)
    engine.dispose()


def test_weekly_kpis_come_from_the_facts(default_store_url) -> None:
    """After build_facts the weekly KPIs are read from meta "facts" (equal to the orders'
    figures: test_reports_answer_the_same_from_facts), not recomputed from the orders."""
    engine = open_store(default_store_url)
    build_shop(engine)
    add_payments_and_deliveries(engine)
    raw = weekly_kpis(engine, AS_OF_SHOP)
    assert raw.value("orders", "month") > 0 and raw.value("new_customers", "month") > 0
    build_facts(engine, AS_OF_SHOP)
    meta = facts_meta(engine, AS_OF_SHOP)
    meta["weekly"]["all"]["month"][0] = 10**6  # poison: only a read of the facts shows it
    with engine.begin() as conn:
        set_meta(conn, FACTS_META, meta)
    assert weekly_kpis(engine, AS_OF_SHOP).value("orders", "month") == 10**6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_join_on_codes_is_the_inner_merge(seed: int) -> None:
    """The facts' array-lookup join gives pandas' inner merge: the left frame's rows whose
    code is in the right one (each right code once), in the left frame's order, with the
    right columns and their dtypes; negative codes on either side match nothing."""
    from analytics.facts import _join_on_codes

    rng = np.random.default_rng(seed)
    left = pd.DataFrame({"k": rng.integers(-3, 50, 500), "v": rng.random(500)})
    # the largest codes and some negative ones on the right (a negative key read from
    # the end of a lookup array would meet them)
    codes = np.r_[49, 48, -1, -2, rng.permutation(np.arange(-3, 48))[:36]]
    right = pd.DataFrame({"k": codes, "name": [f"n{c}" for c in codes],
                          "cat": pd.Categorical(rng.choice(["SP", "RJ", "MG"], len(codes))),
                          "flag": rng.random(len(codes)) > 0.5})
    got = _join_on_codes(left, right, "k", ["name", "cat", "flag"])
    expected = left.merge(right[right["k"] >= 0], on="k")
    assert 0 < len(got) < len(left)
    pd.testing.assert_frame_equal(got, expected)


def test_first_of_pairs_marks_each_distinct_pair_once() -> None:
    from analytics.facts import _first_of_pairs

    rng = np.random.default_rng(3)
    a = rng.integers(0, 500, 5000)  # orders: many with several lines
    b = rng.integers(0, 4, 5000)  # categories: often repeated within an order
    first = _first_of_pairs(a, b)
    expected = ~pd.DataFrame({"a": a, "b": b}).duplicated().to_numpy()
    assert np.array_equal(first, expected)
    assert first.sum() == len(set(zip(a.tolist(), b.tolist(), strict=True)))
    assert _first_of_pairs(np.array([7]), np.array([0])).tolist() == [True]
    assert _first_of_pairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_month_keys_are_the_sorted_months_as_numpys_unique_makes_them(seed: int) -> None:
    """Each timestamp's 'YYYY-MM' and the months present, in order: counted over the days
    they span, the same as from np.unique of the months; before 1970, at its edge, over
    centuries and with NaT (np.unique itself there)."""
    rng = np.random.default_rng(seed)
    spans = [(1_470_000_000, 1_540_000_000), (-2_000_000_000, 100_000_000), (-5, 5), (-10**10, 10**10)]
    for lo, hi in spans:
        for n in (0, 1, 7, 5_000):
            stamps = (rng.integers(lo, hi, n) * 10**6 + rng.integers(0, 10**6, n)).astype("datetime64[us]")
            if seed == 2 and n:
                stamps[rng.integers(0, n)] = np.datetime64("NaT")
            months = stamps.astype("datetime64[M]")
            uniq, inverse = np.unique(months, return_inverse=True)
            got = _month_keys(pd.Series(stamps))
            assert list(got.categories) == list(np.datetime_as_string(uniq, unit="M"))
            assert np.array_equal(got.codes, inverse.ravel())
    edge = _month_keys(pd.Series(np.array(["1969-12-31T23:59:59.999999", "1970-01-01", "1969-12-01"],
                                          dtype="datetime64[us]")))
    assert list(edge.categories) == ["1969-12", "1970-01"] and edge.codes.tolist() == [0, 1, 0]
