"""Payments report: a hand-made store worked out by hand, and Olist's installment share."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from analytics_data import AS_OF_OLIST, Shop, loaded_store, olist_purchases, olist_raw

from analytics.errors import NotAvailable
from analytics.payments import payments_report
from storage import schema
from storage.geography import resolve_place
from storage.store import open_store

AS_OF = dt.date(2024, 3, 20)


def build_shop(engine) -> None:  # noqa: ANN001
    s = Shop(engine)
    for cid, state in [("A", "SP"), ("B", "SP"), ("C", "RJ"), ("D", "MG"), ("E", "AM")]:
        s.customer(cid, state)
    s.order("p1", "A", "2024-01-01", [("x", 100, 0)], payments=[("credit_card", 3, 100)])
    s.order("p2", "A", "2024-01-02", [("x", 40, 10)], payments=[("boleto", 1, 50)])
    s.order("p3", "B", "2024-01-03", [("x", 180, 20)],
            payments=[("credit_card", 1, 150), ("voucher", 1, 50)])
    # paid 90 for an order worth 80: a mismatch
    s.order("p4", "C", "2024-01-04", [("x", 80, 0)], payments=[("credit_card", 10, 90)])
    # 5 over 1000 is 0.5%: within tolerance
    s.order("p5", "C", "2024-01-05", [("x", 1000, 0)], payments=[("credit_card", 2, 1005)])
    s.order("p6", "D", "2024-01-06", [("x", 30, 0)])  # no payment row
    s.order("p7", "B", "2024-01-07", [("x", 999, 0)], status="canceled",
            payments=[("credit_card", 5, 999)])
    s.order("p8", "A", "2024-04-01", [("x", 10, 0)], payments=[("credit_card", 8, 10)])  # after as_of
    s.order("p9", "E", "2024-01-01", [("x", 10, 0)], status="unavailable",
            payments=[("boleto", 1, 10)])


@pytest.fixture
def shop(store):  # noqa: ANN001
    build_shop(store)
    return store


def test_payments_by_hand(shop) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    r = payments_report(shop, AS_OF)
    assert (r.as_of, r.label) == (AS_OF, "all customers")
    assert r.payments == 6 and r.paid_orders == 5
    assert r.payment_value == pytest.approx(1445)
    # installments > 1: 100 (3x) + 90 (10x) + 1005 (2x)
    assert r.installment_share == pytest.approx(1195 / 1445)
    assert r.mean_installments == pytest.approx((3 + 1 + 1 + 1 + 10 + 2) / 6)

    m = r.by_method.set_index("method")
    assert list(m.index) == ["credit_card", "boleto", "voucher"]  # by value; boleto < voucher by name
    assert m.loc["credit_card", "payments"] == 4 and m.loc["credit_card", "value"] == pytest.approx(1345)
    assert m.loc["credit_card", "mean_installments"] == pytest.approx(16 / 4)
    assert m["value_share"].sum() == pytest.approx(1.0)

    inst = r.installments.set_index("installments")
    assert inst["payments"].to_dict() == {1: 3, 2: 1, 3: 1, 10: 1}

    st = r.by_state.set_index("state")
    assert st.loc["SP", "payments"] == 4 and st.loc["SP", "installment_share"] == pytest.approx(100 / 350)
    assert st.loc["RJ", "installment_share"] == 1.0
    assert r.by_segment is None and r.segments_as_of is None

    assert r.mismatched_orders == 1 and r.mismatch_value == pytest.approx(10)
    assert r.unpaid_orders == 1
    big = r.biggest_mismatches.iloc[0]
    assert (big["order_id"], big["customer_id"]) == ("p4", "C")
    assert big["difference"] == pytest.approx(10) and big["order_value"] == pytest.approx(80)


def test_installments_by_segment_when_scores_exist(shop) -> None:  # noqa: ANN001
    with shop.begin() as conn:
        conn.execute(schema.customer_scores.insert(), [
            {"customer_id": "A", "as_of": AS_OF, "model_version": "t", "segment": "Champions"},
            {"customer_id": "C", "as_of": AS_OF, "model_version": "t", "segment": "At Risk"},
        ])
    r = payments_report(shop, AS_OF)
    seg = r.by_segment.set_index("segment")
    assert r.segments_as_of == AS_OF
    assert seg.loc["Champions", "payments"] == 2 and seg.loc["Champions", "value"] == pytest.approx(150)
    assert seg.loc["Champions", "installment_share"] == pytest.approx(100 / 150)
    assert seg.loc["At Risk", "mean_installments"] == pytest.approx(6.0)


def test_place_filter_and_empty_place(shop) -> None:  # noqa: ANN001
    r = payments_report(shop, AS_OF, resolve_place("RJ"))
    assert r.payments == 2 and r.installment_share == 1.0 and r.mismatched_orders == 1
    empty = payments_report(shop, AS_OF, resolve_place("AM"))
    assert empty.payments == 0 and empty.payment_value == 0 and empty.installment_share is None
    assert empty.by_method.empty and empty.biggest_mismatches.empty and empty.unpaid_orders == 0


def test_no_payments_is_not_available(default_store_url) -> None:
    engine = open_store(default_store_url)
    s = Shop(engine, source="online-retail").customer("A", "France")
    s.order("i1", "A", "2011-01-01", [("x", 10, 0)], status="invoiced")
    with pytest.raises(NotAvailable, match="payments"):
        payments_report(engine, dt.date(2011, 12, 9))


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


@pytest.mark.realdata
def test_olist_installment_share(olist) -> None:  # noqa: ANN001
    pay = olist_raw()["payments"]
    pay = pay[pay["order_id"].isin(olist_purchases()["order_id"])]
    r = payments_report(olist, AS_OF_OLIST)
    assert r.payments == len(pay)
    assert r.payment_value == pytest.approx(pay["payment_value"].sum(), rel=1e-9)
    multi = pay.loc[pay["payment_installments"] > 1, "payment_value"].sum()
    assert r.installment_share == pytest.approx(multi / pay["payment_value"].sum(), rel=1e-9)
    by_method = pay.groupby("payment_type")["payment_value"].sum()
    got = r.by_method.set_index("method")["value"]
    assert got.to_dict() == pytest.approx(by_method.to_dict(), rel=1e-9)
    # mismatches: Σ payments vs Σ item price + freight, beyond 0.01 and 1%
    p = olist_purchases().set_index("order_id")
    paid = pay.groupby("order_id")["payment_value"].sum()
    gap = (paid - p["revenue"].reindex(paid.index)).abs()
    expected = ((gap > 0.01) & (gap > 0.01 * p["revenue"].reindex(paid.index).abs())).sum()
    assert r.mismatched_orders == expected
    assert r.unpaid_orders == int((~p.index.isin(pay["order_id"])).sum())
    assert isinstance(r.biggest_mismatches, pd.DataFrame) and len(r.biggest_mismatches) == 20


@pytest.mark.realdata
def test_uci_has_no_payments(tmp_path_factory) -> None:  # noqa: ANN001
    from analytics_data import AS_OF_UCI

    engine = loaded_store(tmp_path_factory, "online-retail", "online-retail")
    with pytest.raises(NotAvailable, match="no payments"):
        payments_report(engine, AS_OF_UCI)
    engine.dispose()
