"""Finance report: the KPI hand-made store worked out by hand, and Olist against pandas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analytics_data import (
    AS_OF_OLIST,
    AS_OF_SHOP,
    AS_OF_UCI,
    build_shop,
    loaded_store,
    olist_purchases,
    olist_raw,
    uci_purchases,
)

from analytics.finance import finance_report, gini, top_share
from storage.geography import resolve_place

AS_OF = AS_OF_SHOP


@pytest.fixture
def shop(store):  # noqa: ANN001
    build_shop(store)
    return store


def test_finance_by_hand(shop) -> None:  # noqa: ANN001 - SQLite and PostgreSQL
    r = finance_report(shop, AS_OF)
    assert (r.as_of, r.label) == (AS_OF, "all customers")
    assert r.orders == 8 and r.revenue == pytest.approx(515)
    assert r.items_value == pytest.approx(456) and r.freight == pytest.approx(59)
    assert r.freight_share == pytest.approx(59 / 515)

    m = r.monthly.set_index("month")
    assert m["revenue"].tolist() == pytest.approx([330, 115, 70])
    assert m["freight"].tolist() == pytest.approx([30, 15, 14])
    assert m["partial"].tolist() == [False, False, True]

    c = r.by_category.set_index("category")
    assert c.loc["toys", "revenue"] == pytest.approx(205) and c.loc["toys", "freight"] == pytest.approx(30)
    assert c.loc["toys", "heavy_orders"] == 1 and c.loc["toys", "heavy_revenue"] == pytest.approx(10)
    assert c.loc["garden", "heavy_orders"] == 0  # freight exactly 50% of the price is not heavy
    assert r.by_state.set_index("state").loc["SP", "freight_share"] == pytest.approx(35 / 385)

    # customers: A 165, B 220, C 60, D 44, F 15, G 10, H 1
    assert r.customers == 7
    assert r.top_shares[0.01] == pytest.approx(220 / 515) and r.top_shares[0.10] == pytest.approx(220 / 515)
    assert r.top_shares[0.20] == pytest.approx(385 / 515)  # ceil(1.4) = 2 customers
    assert r.gini == pytest.approx(2024 / (7 * 515))
    assert r.heavy_orders == 1 and r.heavy_revenue == pytest.approx(10)
    assert r.heavy_order_share == pytest.approx(1 / 8)


def test_empty_place(shop) -> None:  # noqa: ANN001
    r = finance_report(shop, AS_OF, resolve_place("AM"))
    assert r.orders == 0 and r.revenue == 0 and r.freight_share is None
    assert r.customers == 0 and r.gini is None and r.top_shares[0.2] is None
    assert r.by_category.empty and r.by_state.empty and r.heavy_order_share is None
    assert r.monthly["revenue"].sum() == 0


def test_gini_and_top_share() -> None:
    assert gini(np.array([5.0, 5.0, 5.0])) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 0.0, 10.0])) == pytest.approx(0.75)  # (n-1)/n
    assert gini(np.array([])) is None and gini(np.zeros(3)) is None
    assert top_share(np.array([1.0, 2.0, 3.0, 4.0]), 0.5) == pytest.approx(7 / 10)
    assert top_share(np.array([1.0, 2.0, 3.0]), 0.01) == pytest.approx(3 / 6)


@pytest.fixture(scope="module")
def olist(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "olist", "olist")
    yield engine
    engine.dispose()


@pytest.mark.realdata
def test_olist_finance(olist) -> None:  # noqa: ANN001
    p = olist_purchases()
    items = olist_raw()["items"]
    items = items[items["order_id"].isin(p["order_id"])]
    r = finance_report(olist, AS_OF_OLIST)
    assert r.freight == pytest.approx(items["freight_value"].sum(), rel=1e-9)
    assert r.revenue == pytest.approx(p["revenue"].sum(), rel=1e-9)
    per_person = np.sort(p.groupby("person")["revenue"].sum().to_numpy())[::-1]
    k = math.ceil(0.1 * len(per_person))
    assert r.top_shares[0.10] == pytest.approx(per_person[:k].sum() / per_person.sum(), rel=1e-9)
    x = per_person[::-1]
    i = np.arange(1, len(x) + 1)
    assert r.gini == pytest.approx(((2 * i - len(x) - 1) * x).sum() / (len(x) * x.sum()), rel=1e-9)
    order = items.groupby("order_id")[["price", "freight_value"]].sum()
    heavy = order[(order["price"] > 0) & (order["freight_value"] > 0.5 * order["price"])]
    assert r.heavy_orders == len(heavy)


@pytest.fixture(scope="module")
def uci(tmp_path_factory):  # noqa: ANN001
    engine = loaded_store(tmp_path_factory, "online-retail", "online-retail")
    yield engine
    engine.dispose()


@pytest.mark.realdata
def test_uci_finance(uci) -> None:  # noqa: ANN001
    lines = uci_purchases()
    r = finance_report(uci, AS_OF_UCI)
    assert r.revenue == pytest.approx(lines["value"].sum(), rel=1e-9)
    assert r.freight == 0 and r.freight_share == 0 and r.heavy_orders == 0
    per_customer = lines.groupby("CustomerID")["value"].sum()
    assert r.customers == len(per_customer)
    k = math.ceil(0.2 * len(per_customer))
    expected = per_customer.sort_values(ascending=False).head(k).sum() / per_customer.sum()
    assert r.top_shares[0.20] == pytest.approx(expected, rel=1e-9)
