"""The bundled Olist sample and the synthetic Olist generator."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from storage import olist_shapes as shapes
from storage.generate import generate_olist
from storage.loaders import load_path
from storage.sample_data import LICENCE_FILE, build_sample, find_source_file, sample_dir
from tests.conftest import data_path

STEMS = tuple(shapes.OLIST_COLUMNS)
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TIMES = ("order_purchase_timestamp", "order_approved_at", "order_delivered_carrier_date",
         "order_delivered_customer_date", "order_estimated_delivery_date")


def read(folder: Path, stem: str) -> pd.DataFrame:
    """One Olist table of `folder`, all text (as the raw files are)."""
    (path,) = [p for p in folder.iterdir() if p.name.split(".")[0] == stem]
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                       encoding="utf-8-sig")


def orders_per_person(orders: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    return orders.merge(customers, on="customer_id").groupby("customer_unique_id").size()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


# --- bundled sample ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> dict[str, pd.DataFrame]:
    return {stem: read(sample_dir(), stem) for stem in STEMS}


@pytest.fixture(scope="module")
def full() -> dict[str, pd.DataFrame]:
    """The full Olist tables the sample was drawn from (../shared/data/olist)."""
    folder = data_path("olist")
    return {
        stem: pd.read_csv(find_source_file(folder, stem), dtype=str, keep_default_na=False,
                          na_values=[""], encoding="utf-8-sig")
        for stem in STEMS[:5]
    }


def test_sample_folder_has_every_olist_file_under_3_mb() -> None:
    folder = sample_dir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{stem}.csv.xz" for stem in STEMS] + [LICENCE_FILE])
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3 * 1024 * 1024


def test_sample_carries_licence_and_attribution() -> None:
    text = (sample_dir() / LICENCE_FILE).read_text(encoding="utf-8")
    for needed in ("Olist", "olistbr/brazilian-ecommerce", "CC BY-NC-SA 4.0",
                   "creativecommons.org/licenses/by-nc-sa/4.0", "10% customer sample",
                   "20180829", "shipping_limit_date", "review_comment_message"):
        assert needed in text


def test_sample_has_kaggle_columns(sample: dict[str, pd.DataFrame]) -> None:
    for stem, frame in sample.items():
        assert tuple(frame.columns) == shapes.OLIST_COLUMNS[stem], stem


def test_sample_keys_are_consistent(sample: dict[str, pd.DataFrame]) -> None:
    orders, customers = sample["olist_orders_dataset"], sample["olist_customers_dataset"]
    items = sample["olist_order_items_dataset"]
    assert orders["order_id"].is_unique and customers["customer_id"].is_unique
    assert set(orders["customer_id"]) == set(customers["customer_id"])
    for stem in ("olist_order_items_dataset", "olist_order_payments_dataset",
                 "olist_order_reviews_dataset"):
        assert sample[stem]["order_id"].isin(orders["order_id"]).all(), stem
    assert set(items["product_id"]) == set(sample["olist_products_dataset"]["product_id"])
    assert set(items["seller_id"]) == set(sample["olist_sellers_dataset"]["seller_id"])
    assert len(sample["product_category_name_translation"]) == 71


@pytest.mark.realdata
def test_sample_people_keep_their_complete_history(
    sample: dict[str, pd.DataFrame], full: dict[str, pd.DataFrame]
) -> None:
    full_orders = full["olist_orders_dataset"]
    full_customers = full["olist_customers_dataset"]
    people = set(sample["olist_customers_dataset"]["customer_unique_id"])
    theirs = full_customers[full_customers["customer_unique_id"].isin(people)]
    full_ids = set(full_orders.loc[full_orders["customer_id"].isin(theirs["customer_id"]),
                                   "order_id"])
    sample_ids = set(sample["olist_orders_dataset"]["order_id"])
    assert sample_ids == full_ids
    assert set(sample["olist_customers_dataset"]["customer_id"]) == set(theirs["customer_id"])
    for stem in ("olist_order_items_dataset", "olist_order_payments_dataset",
                 "olist_order_reviews_dataset"):
        expected = full[stem][full[stem]["order_id"].isin(sample_ids)]
        assert len(sample[stem]) == len(expected), stem
    # Rows are copied unchanged.
    merged = sample["olist_orders_dataset"].merge(full_orders, on="order_id",
                                                  suffixes=("", "_full"))
    for column in shapes.OLIST_COLUMNS["olist_orders_dataset"][1:]:
        assert merged[column].fillna("").eq(merged[column + "_full"].fillna("")).all(), column


@pytest.mark.realdata
def test_sample_is_a_tenth_of_people_with_the_full_repeat_rate(
    sample: dict[str, pd.DataFrame], full: dict[str, pd.DataFrame]
) -> None:
    everyone = orders_per_person(full["olist_orders_dataset"], full["olist_customers_dataset"])
    part = orders_per_person(sample["olist_orders_dataset"], sample["olist_customers_dataset"])
    assert part.size / everyone.size == pytest.approx(0.10, abs=0.002)
    assert part.index.isin(everyone.index).all()
    assert abs((part > 1).mean() - (everyone > 1).mean()) < 0.01
    assert part.sum() / everyone.sum() == pytest.approx(0.10, abs=0.01)


@pytest.mark.realdata
@pytest.mark.slow
def test_sample_rebuilds_byte_for_byte(tmp_path: Path) -> None:
    figures = build_sample(data_path("olist"), tmp_path / "sample")
    assert digests(tmp_path / "sample") == digests(sample_dir())
    assert figures["customers"] == round(figures["full_customers"] * 0.10)


# --- synthetic generator --------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("olist5k")
    return out, generate_olist(out, customers=5_000, seed=11)


@pytest.fixture(scope="module")
def gen(generated: tuple[Path, dict]) -> dict[str, pd.DataFrame]:
    return {stem: read(generated[0], stem) for stem in STEMS}


def test_generator_is_deterministic(tmp_path: Path, generated: tuple[Path, dict]) -> None:
    generate_olist(tmp_path / "again", customers=5_000, seed=11)
    assert digests(tmp_path / "again") == digests(generated[0])
    generate_olist(tmp_path / "other", customers=5_000, seed=12)
    other = digests(tmp_path / "other")
    assert other["olist_orders_dataset.csv"] != digests(generated[0])["olist_orders_dataset.csv"]


def test_generator_writes_kaggle_layout(gen: dict[str, pd.DataFrame],
                                        generated: tuple[Path, dict]) -> None:
    for stem, frame in gen.items():
        assert tuple(frame.columns) == shapes.OLIST_COLUMNS[stem], stem
        assert generated[1]["rows"][stem] == len(frame), stem
    # Headers are unquoted, like the Kaggle orders file.
    first = (generated[0] / "olist_orders_dataset.csv").read_text().split("\n", 1)[0]
    assert first == ",".join(shapes.OLIST_COLUMNS["olist_orders_dataset"])


def test_generator_row_counts(gen: dict[str, pd.DataFrame]) -> None:
    orders, customers = gen["olist_orders_dataset"], gen["olist_customers_dataset"]
    assert len(orders) == round(5_000 * shapes.ORDERS_PER_CUSTOMER)
    assert len(customers) == len(orders)  # one customer row per order, as in Olist
    assert customers["customer_unique_id"].nunique() == 5_000


def test_generator_hits_requested_orders_with_heavy_repeaters(tmp_path: Path) -> None:
    result = generate_olist(tmp_path, customers=1_000, orders=5_000, seed=3)
    per = orders_per_person(read(tmp_path, "olist_orders_dataset"),
                            read(tmp_path, "olist_customers_dataset"))
    assert per.size == 1_000 and per.sum() == 5_000
    assert result["orders"] == 5_000
    assert (per == 1).mean() >= 0.5  # most still buy once
    assert per.max() > 40  # so a few buy a lot


def test_generator_mostly_one_order_customers(gen: dict[str, pd.DataFrame]) -> None:
    per = orders_per_person(gen["olist_orders_dataset"], gen["olist_customers_dataset"])
    assert (per == 1).mean() == pytest.approx(1 - shapes.REPEAT_SHARE, abs=0.01)
    assert per.max() >= 3


def test_generator_state_shares(gen: dict[str, pd.DataFrame]) -> None:
    people = gen["olist_customers_dataset"].drop_duplicates("customer_unique_id")
    shares = people["customer_state"].value_counts(normalize=True)
    assert set(shares.index) <= set(shapes.STATE_SHARES)
    for state, target in shapes.STATE_SHARES.items():
        assert abs(shares.get(state, 0.0) - target) < 0.025, state
    # Everyone keeps one place.
    assert (gen["olist_customers_dataset"].groupby("customer_unique_id")["customer_state"]
            .nunique() == 1).all()


def test_generator_keys_are_consistent(gen: dict[str, pd.DataFrame]) -> None:
    orders, customers = gen["olist_orders_dataset"], gen["olist_customers_dataset"]
    items, payments = gen["olist_order_items_dataset"], gen["olist_order_payments_dataset"]
    reviews = gen["olist_order_reviews_dataset"]
    assert orders["order_id"].is_unique and customers["customer_id"].is_unique
    assert reviews["review_id"].is_unique
    assert set(orders["customer_id"]) == set(customers["customer_id"])
    assert items["order_id"].isin(orders["order_id"]).all()
    assert set(payments["order_id"]) == set(orders["order_id"])  # every order was paid
    assert reviews["order_id"].isin(orders["order_id"]).all()
    assert set(items["product_id"]) == set(gen["olist_products_dataset"]["product_id"])
    assert set(items["seller_id"]) == set(gen["olist_sellers_dataset"]["seller_id"])
    named = set(gen["product_category_name_translation"]["product_category_name"])
    used = set(gen["olist_products_dataset"]["product_category_name"].dropna())
    assert len(used - named) <= 2  # Olist's two untranslated categories
    for column in ("order_id", "customer_id"):
        assert orders[column].str.match(HEX32).all()
    for frame, column in ((customers, "customer_unique_id"), (items, "product_id"),
                          (items, "seller_id"), (reviews, "review_id")):
        assert frame[column].str.match(HEX32).all(), column
    assert customers["customer_zip_code_prefix"].str.fullmatch(r"\d{5}").all()


def test_generator_item_sequences_and_payment_totals(gen: dict[str, pd.DataFrame]) -> None:
    items = gen["olist_order_items_dataset"].astype({"order_item_id": int, "price": float,
                                                     "freight_value": float})
    payments = gen["olist_order_payments_dataset"].astype({"payment_value": float,
                                                           "payment_installments": int})
    seq = items.groupby("order_id")["order_item_id"].agg(["min", "max", "size"])
    assert (seq["min"] == 1).all() and (seq["max"] == seq["size"]).all()
    due = items.groupby("order_id")[["price", "freight_value"]].sum().sum(axis=1)
    paid = payments.groupby("order_id")["payment_value"].sum()
    assert (paid.reindex(due.index) - due).abs().max() < 0.005
    assert (payments["payment_installments"] >= 1).all()
    mix = payments["payment_type"].value_counts(normalize=True)
    assert mix["credit_card"] == pytest.approx(0.74, abs=0.04)
    assert mix["boleto"] == pytest.approx(0.19, abs=0.03)
    cards = payments[payments["payment_type"] == "credit_card"]
    assert (cards["payment_installments"] > 1).mean() > 0.5


def test_generator_dates_are_within_range_and_ordered(gen: dict[str, pd.DataFrame]) -> None:
    orders = gen["olist_orders_dataset"].copy()
    for column in TIMES:
        orders[column] = pd.to_datetime(orders[column], format="%Y-%m-%d %H:%M:%S")
    start, cutoff = pd.Timestamp("2016-09-01"), pd.Timestamp("2018-09-01")
    bought = orders["order_purchase_timestamp"]
    assert bought.min() >= start and bought.max() < cutoff
    estimated = orders["order_estimated_delivery_date"]
    assert estimated.notna().all() and (estimated == estimated.dt.normalize()).all()
    assert (estimated > bought).all()
    chain = ["order_purchase_timestamp", "order_approved_at", "order_delivered_carrier_date",
             "order_delivered_customer_date"]
    for earlier, later in zip(chain, chain[1:], strict=False):
        both = orders[[earlier, later]].dropna()
        assert (both[later] >= both[earlier]).all(), later
    for column in chain[1:]:
        assert (orders[column].dropna() < cutoff).all(), column  # nothing after the end yet
    delivered = orders["order_status"] == "delivered"
    assert delivered.mean() > 0.9
    assert orders.loc[delivered, "order_delivered_customer_date"].notna().all()
    assert orders.loc[~delivered, "order_delivered_customer_date"].isna().all()
    reviews = gen["olist_order_reviews_dataset"]
    assert (pd.to_datetime(reviews["review_creation_date"]) < cutoff).all()


def test_generator_seasonality(gen: dict[str, pd.DataFrame]) -> None:
    bought = pd.to_datetime(gen["olist_orders_dataset"]["order_purchase_timestamp"])
    by_day = bought.dt.normalize().value_counts()
    assert pd.Timestamp("2017-11-24") <= by_day.idxmax() <= pd.Timestamp("2017-11-28")
    by_month = bought.dt.to_period("M").value_counts()
    assert by_month[pd.Period("2018-03")] > 3 * by_month[pd.Period("2016-12")]  # growth
    weekday = bought.dt.day_of_week.value_counts()
    assert weekday[0] > weekday[5]  # Mondays beat Saturdays
    night = bought.dt.hour.isin([2, 3, 4, 5]).mean()
    assert night < 0.03


def test_generator_late_deliveries_get_worse_reviews(gen: dict[str, pd.DataFrame]) -> None:
    orders = gen["olist_orders_dataset"]
    delivered = orders[orders["order_status"] == "delivered"]
    late = pd.to_datetime(delivered["order_delivered_customer_date"]) > pd.to_datetime(
        delivered["order_estimated_delivery_date"])
    assert 0.05 < late.mean() < 0.11
    reviews = gen["olist_order_reviews_dataset"].astype({"review_score": int})
    scored = reviews.merge(delivered.assign(late=late.to_numpy()), on="order_id")
    means = scored.groupby("late")["review_score"].mean()
    assert means[False] - means[True] > 1.0
    assert len(reviews) / len(orders) > 0.9


def test_generator_categories_have_a_long_tail(gen: dict[str, pd.DataFrame]) -> None:
    items = gen["olist_order_items_dataset"].merge(gen["olist_products_dataset"],
                                                   on="product_id")
    shares = items["product_category_name"].value_counts(normalize=True)
    assert len(shares) > 40
    assert shares.iloc[:5].sum() < 0.6 and shares.iloc[0] < 0.2


def test_generator_compresses_and_replaces_earlier_files(tmp_path: Path) -> None:
    generate_olist(tmp_path, customers=300, seed=5)
    result = generate_olist(tmp_path, customers=300, compress="gz", seed=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.csv.gz" for s in STEMS)
    assert len(read(tmp_path, "olist_orders_dataset")) == result["orders"]


def test_generator_rejects_fewer_orders_than_customers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_olist(tmp_path, customers=100, orders=99)


# --- both load with the Olist loader ---------------------------------------------------------


def expected_counts(folder: Path) -> dict[str, int]:
    """Canonical row counts computed from the raw CSVs with plain pandas."""
    tables = {stem: read(folder, stem) for stem in STEMS[:5]}
    reviews = tables["olist_order_reviews_dataset"]
    return {
        "customers": tables["olist_customers_dataset"]["customer_unique_id"].nunique(),
        "orders": len(tables["olist_orders_dataset"]),
        "order_items": len(tables["olist_order_items_dataset"]),
        "payments": len(tables["olist_order_payments_dataset"]),
        "reviews": len(reviews.drop_duplicates(["review_id", "order_id"])),
    }


@pytest.mark.parametrize("which", ["sample", "generated"])
def test_olist_loader_loads_sample_and_generated(
    which: str, store: Engine, generated: tuple[Path, dict]
) -> None:

    folder = sample_dir() if which == "sample" else generated[0]
    report = load_path(store, folder, "olist")
    assert report.rows_quarantined == 0, report.quarantined
    expected = expected_counts(folder)
    with store.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in expected}
        items_value = conn.execute(text("SELECT SUM(items_value) FROM orders")).scalar()
    assert counts == expected
    prices = read(folder, "olist_order_items_dataset")["price"].astype(float).sum()
    assert items_value == pytest.approx(prices, rel=1e-9)
