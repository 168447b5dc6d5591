"""Synthetic data in the Olist layout, at any size.

`generate_olist(out_dir, customers, orders)` writes the eight Olist CSVs (customers, orders,
items, payments, reviews, products, sellers, category translation) with the shapes of the
real data (`storage.olist_shapes`): most people buy once with a heavy tail of repeaters,
Brazil's state mix, a growth trend with a Black Friday peak and the weekday and hour
pattern, card instalments, a long tail of categories, estimated and late deliveries with
review scores that follow lateness, and statuses that stop at the end date.

It is vectorised and works in chunks of people, so memory stays flat at any size (about
1 s per 100k orders on one core); the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import lzma
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from storage import olist_shapes as shapes
from storage.geography import region_of_state

CHUNK_ORDERS = 100_000  # orders per chunk; part of the output's definition (seeds per chunk)
DAY = 86_400

# Estimated delivery days by the customer's macro-region (Olist median 23 days overall).
EST_DAYS_BY_REGION = {"Sudeste": 21, "Sul": 26, "Centro-Oeste": 27, "Nordeste": 32, "Norte": 35}
# Freight multiplier by distance between seller and customer.
FREIGHT_SAME_STATE, FREIGHT_SAME_REGION, FREIGHT_FAR = 1.0, 1.3, 1.8

# Status rates before the end-date cut (which turns late-running orders into shipped etc.).
BASE_STATUS = {
    "delivered": 0.9831, "shipped": 0.0040, "canceled": 0.0063, "unavailable": 0.0061,
    "invoiced": 0.0030, "processing": 0.0015, "created": 0.00005, "approved": 0.00002,
}

# Short review texts (no commas or quotes: files are written unquoted).
TITLES = {
    "good": ("Recomendo", "Ótimo", "Muito bom", "Excelente", "Super recomendo"),
    "mid": ("Razoável", "Bom", "Poderia ser melhor"),
    "bad": ("Não recebi", "Péssimo", "Produto com defeito", "Não recomendo"),
}
MESSAGES = {
    "good": (
        "Produto chegou antes do prazo e bem embalado",
        "Gostei muito do produto",
        "Entrega rápida e produto de qualidade",
        "Tudo certo com a compra",
        "Produto conforme o anunciado",
    ),
    "mid": (
        "Produto bom mas a entrega demorou",
        "Chegou no prazo mas a qualidade deixa a desejar",
        "Esperava mais do produto",
    ),
    "bad": (
        "Ainda não recebi o produto",
        "Produto veio com defeito e ninguém responde",
        "Entrega muito atrasada",
        "Recebi o produto errado",
        "Comprei dois e só chegou um",
    ),
}


@dataclass(frozen=True)
class _Catalog:
    """Products and sellers, indexed by position; ids of all, written only when sold."""

    product_id: np.ndarray
    category: np.ndarray  # index into categories (last = uncategorised)
    price: np.ndarray
    weight: np.ndarray
    freight_base: np.ndarray
    seller: np.ndarray
    popularity_cdf: np.ndarray
    seller_id: np.ndarray
    seller_state: np.ndarray  # index into STATES


STATES = tuple(shapes.STATE_SHARES)
_REGIONS = tuple(EST_DAYS_BY_REGION)
_REGION_CODE = np.array([_REGIONS.index(region_of_state(s)) for s in STATES])
_SELLER_STATES = np.array([STATES.index(s) for s in shapes.SELLER_STATE_SHARES])
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_CATS = tuple(shapes.CATEGORIES)


def generate_olist(
    out_dir: Path | str,
    customers: int,
    orders: int | None = None,
    seed: int = 7,
    start: str = "2016-09-01",
    end: str = "2018-08-31",
    compress: bool | str = False,
    *,
    repeat_share: float | None = None,
) -> dict:
    """Write Olist-shaped CSVs for `customers` people and `orders` orders to `out_dir`.

    `orders` defaults to Olist's ratio (about 1.035 per person) and must be at least
    `customers` (everyone has an order). Repeat buyers are `repeat_share` of the people
    (Olist: 3.1%; by default raised so repeaters average about 20 orders when `orders` is
    much larger than `customers`). Purchases fall in `start`..`end` (inclusive) and nothing
    after `end` has happened yet (late orders are still shipped, reviews not written).
    `compress`: False for .csv, True or "gz" for .csv.gz, "xz" for .csv.xz. Files of an
    earlier run in `out_dir` are replaced. The same arguments (and numpy and pyarrow
    versions) give byte-identical files. Returns the file paths, rows per file, the share
    of one-order people and the time taken.
    """
    t0 = time.perf_counter()
    if customers < 1:
        raise ValueError("customers must be at least 1")
    orders = round(customers * shapes.ORDERS_PER_CUSTOMER) if orders is None else int(orders)
    if orders < customers:
        raise ValueError(f"orders ({orders}) must be at least customers ({customers})")
    first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    suffix = {False: ".csv", True: ".csv.gz", "gz": ".csv.gz", "xz": ".csv.xz"}.get(compress)
    if suffix is None:
        raise ValueError(f"compress must be False, True, 'gz' or 'xz', not {compress!r}")
    if repeat_share is not None and not 0 < repeat_share <= 1:
        raise ValueError(f"repeat_share must be in (0, 1], not {repeat_share}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stem in shapes.OLIST_COLUMNS:  # an earlier run's files, whatever their compression
        for old in (".csv", ".csv.gz", ".csv.xz"):
            (out / f"{stem}{old}").unlink(missing_ok=True)
    per_person = _orders_per_person(
        np.random.default_rng([seed, 0]), customers, orders, repeat_share)
    catalog = _catalog(np.random.default_rng([seed, 1]), orders)
    calendar = _Calendar(first, last)

    paths = {stem: out / f"{stem}{suffix}" for stem in shapes.OLIST_COLUMNS}
    rows = dict.fromkeys(shapes.OLIST_COLUMNS, 0)
    sold = np.zeros(len(catalog.product_id), dtype=bool)
    sinks = {stem: _CsvSink(path) for stem, path in paths.items()}
    try:
        ends = np.cumsum(per_person)
        bounds = [0]
        while bounds[-1] < customers:
            target = (ends[bounds[-1] - 1] if bounds[-1] else 0) + CHUNK_ORDERS
            bounds.append(max(bounds[-1] + 1, int(np.searchsorted(ends, target, side="right"))))
        for k, (p0, p1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            rng = np.random.default_rng([seed, 2, k])
            tables = _chunk(rng, per_person[p0:p1], catalog, calendar, sold)
            for stem, table in tables.items():
                sinks[stem].write(table)
                rows[stem] += table.num_rows
        for stem, table in _reference_tables(np.random.default_rng([seed, 3]), catalog, sold).items():
            sinks[stem].write(table)
            rows[stem] += table.num_rows
    finally:
        for sink in sinks.values():
            sink.close()
    return {
        "out_dir": str(out),
        "files": {stem: str(path) for stem, path in paths.items()},
        "rows": rows,
        "customers": customers,
        "orders": orders,
        "one_order_share": float(np.mean(per_person == 1)),
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# --- people and catalogue ----------------------------------------------------------------


def _orders_per_person(
    rng: np.random.Generator, customers: int, orders: int, repeat_share: float | None
) -> np.ndarray:
    """Orders of each person: one each, plus the extra orders spread over a few repeaters
    with heavy-tailed weights, so the total is exactly `orders`."""
    counts = np.ones(customers, dtype=np.int64)
    extra = orders - customers
    if extra == 0:
        return counts
    if repeat_share is None:
        repeat_share = min(0.5, max(shapes.REPEAT_SHARE, extra / customers / 20))
    repeaters = min(extra, max(1, round(customers * repeat_share)))
    who = rng.choice(customers, size=repeaters, replace=False)
    weight = np.minimum(rng.pareto(1.5, size=repeaters) + 1.0, 100.0)
    more = rng.multinomial(extra - repeaters, weight / weight.sum())
    counts[who] += 1 + more
    return counts


def _catalog(rng: np.random.Generator, orders: int) -> _Catalog:
    """Products and sellers; at Olist's size about 33k products and 3.1k sellers sell.

    The catalogue grows slower than the orders (a shop ten times bigger does not sell ten
    times as many different things), which also keeps memory flat at large sizes.
    """
    scale = (orders / 99_441) ** 0.75
    n_products = max(50, round(100_000 * scale))
    n_sellers = max(10, round(4_000 * scale))
    item_counts = np.array([c[2] for c in _CATS], dtype=float)
    cat_share = np.append(item_counts / item_counts.sum() * (1 - shapes.UNCATEGORISED_ITEM_SHARE),
                          shapes.UNCATEGORISED_ITEM_SHARE)
    category = _draw(rng, cat_share, n_products)
    median_price = np.append([c[3] for c in _CATS], shapes.UNCATEGORISED_PRICE)
    median_weight = np.append([c[4] for c in _CATS], shapes.UNCATEGORISED_WEIGHT)
    raw_price = median_price[category] * rng.lognormal(0.0, 0.85, n_products)
    endings = np.array([0.0, 0.5, 0.9, 0.99])[_draw(rng, [0.25, 0.1, 0.4, 0.25], n_products)]
    price = np.maximum(np.floor(raw_price) + endings, 0.85).round(2)
    weight = np.clip(np.round(median_weight[category] * rng.lognormal(0.0, 0.9, n_products), -1),
                     50, 40_000)
    seller_state = _SELLER_STATES[_draw(rng, _shares(shapes.SELLER_STATE_SHARES), n_sellers)]
    seller_weight = rng.lognormal(0.0, 1.8, n_sellers)
    # Heavy-tailed: half the products sold sell once, the best seller about 0.4% of items.
    popularity = rng.pareto(1.3, n_products)
    popularity = np.minimum(popularity, 0.004 * popularity.sum())
    return _Catalog(
        product_id=_hex_ids(rng, n_products),
        category=category,
        price=price,
        weight=weight,
        freight_base=8.0 + 0.0035 * weight,
        seller=_draw(rng, seller_weight / seller_weight.sum(), n_products),
        popularity_cdf=_cdf(popularity),
        seller_id=_hex_ids(rng, n_sellers),
        seller_state=seller_state,
    )


def _reference_tables(
    rng: np.random.Generator, catalog: _Catalog, sold: np.ndarray
) -> dict[str, pa.Table]:
    """Products and sellers that were sold, and the category translation."""
    idx = np.flatnonzero(sold)
    n = len(idx)
    cat = catalog.category[idx]
    has_cat = cat < len(_CATS)
    names = pa.array([c[0] for c in _CATS] + [None], pa.string())
    weight = catalog.weight[idx]
    side = 2.2 * np.cbrt(weight)
    dims = {
        "product_length_cm": np.clip(side * 1.3 * rng.lognormal(0, 0.25, n), 7, 105),
        "product_height_cm": np.clip(side * 0.7 * rng.lognormal(0, 0.35, n), 2, 105),
        "product_width_cm": np.clip(side * 1.0 * rng.lognormal(0, 0.25, n), 6, 118),
    }
    products = pa.table({
        "product_id": _strings(catalog.product_id[idx]),
        "product_category_name": names.take(pa.array(cat)),
        "product_name_lenght": pa.array(
            np.clip(rng.normal(48, 10, n), 5, 76).round().astype(np.int64), mask=~has_cat),
        "product_description_lenght": pa.array(
            np.clip(rng.lognormal(np.log(595), 0.8, n), 4, 3992).round().astype(np.int64),
            mask=~has_cat),
        "product_photos_qty": pa.array(
            np.minimum(rng.geometric(0.55, n), 20).astype(np.int64), mask=~has_cat),
        "product_weight_g": weight.astype(np.int64),
        **{k: v.round().astype(np.int64) for k, v in dims.items()},
    })
    sellers_idx = np.unique(catalog.seller[idx])
    state = catalog.seller_state[sellers_idx]
    zips, cities = _places(rng, state)
    sellers = pa.table({
        "seller_id": _strings(catalog.seller_id[sellers_idx]),
        "seller_zip_code_prefix": zips,
        "seller_city": cities,
        "seller_state": _labels(STATES, state),
    })
    named = [c for c in _CATS if c[1] is not None]
    translation = pa.table({
        "product_category_name": [c[0] for c in named],
        "product_category_name_english": [c[1] for c in named],
    })
    return {
        "olist_products_dataset": products,
        "olist_sellers_dataset": sellers,
        "product_category_name_translation": translation,
    }


# --- time ------------------------------------------------------------------------------------


class _Calendar:
    """Purchase-time distribution over `first`..`last`: trend, weekday, Black Friday, hour."""

    def __init__(self, first: pd.Timestamp, last: pd.Timestamp) -> None:
        days = pd.date_range(first, last, freq="D")
        self.start = int(first.value // 10**9)
        self.cutoff = int((last + pd.Timedelta(days=1)).value // 10**9)  # exclusive
        x = np.arange(len(days)) / max(len(days) - 1, 1)
        trend = 0.04 + 1.0 / (1.0 + np.exp(-(x - 0.4) / 0.11))
        weekday = np.array(shapes.WEEKDAY_ORDERS, dtype=float)[days.day_of_week]
        season = np.ones(len(days))
        self.busy = np.zeros(len(days), dtype=bool)  # Black Friday to New Year: slower delivery
        for year in sorted(set(days.year)):
            nov1 = pd.Timestamp(year=year, month=11, day=1)
            black_friday = nov1 + pd.Timedelta(days=(4 - nov1.day_of_week) % 7 + 21)
            offset = (days - black_friday).days.to_numpy()
            season[offset == 0] *= 4.5
            season[(offset >= 1) & (offset <= 4)] *= 2.0
            season[(offset >= -7) & (offset < 0)] *= 1.25
            self.busy |= (offset >= -3) & (days <= pd.Timestamp(year=year, month=12, day=31))
        season[(days.month == 12) & (days.day >= 20)] *= 0.75
        self.day_cdf = _cdf(trend * weekday * season)
        self.hour_cdf = _cdf(np.array(shapes.HOUR_ORDERS, dtype=float))

    def purchases(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` purchase times (epoch seconds) and their day index."""
        day = np.searchsorted(self.day_cdf, rng.random(n), side="right")
        hour = np.searchsorted(self.hour_cdf, rng.random(n), side="right")
        return self.start + day * DAY + hour * 3600 + rng.integers(0, 3600, n), day


# --- one chunk of people -------------------------------------------------------------------


def _chunk(
    rng: np.random.Generator,
    per_person: np.ndarray,
    catalog: _Catalog,
    calendar: _Calendar,
    sold: np.ndarray,
) -> dict[str, pa.Table]:
    n_people = len(per_person)
    n = int(per_person.sum())
    person_uid = _hex_ids(rng, n_people)
    person_state = _draw(rng, _shares(shapes.STATE_SHARES), n_people)
    person_zip, person_city = _places(rng, person_state)

    owner = np.repeat(np.arange(n_people), per_person)
    purchase, day = calendar.purchases(rng, n)
    order = np.lexsort((purchase, owner))
    purchase, day = purchase[order], day[order]
    state = person_state[owner]
    order_id, customer_id = _hex_ids(rng, n), _hex_ids(rng, n)

    customers = pa.table({
        "customer_id": _strings(customer_id),
        "customer_unique_id": _strings(person_uid[owner]),
        "customer_zip_code_prefix": person_zip.take(pa.array(owner)),
        "customer_city": person_city.take(pa.array(owner)),
        "customer_state": _labels(STATES, state),
    })
    life = _lifecycle(rng, purchase, day, state, calendar)
    items, totals = _items(rng, life, state, catalog, sold, order_id, purchase)
    return {
        "olist_customers_dataset": customers,
        "olist_orders_dataset": _orders_table(order_id, customer_id, purchase, life),
        "olist_order_items_dataset": items,
        "olist_order_payments_dataset": _payments(rng, order_id, totals, life["pay_type"]),
        "olist_order_reviews_dataset": _reviews(rng, order_id, life, calendar.cutoff),
    }


def _lifecycle(
    rng: np.random.Generator,
    purchase: np.ndarray,
    day: np.ndarray,
    state: np.ndarray,
    calendar: _Calendar,
) -> dict[str, np.ndarray]:
    """Status and the approved, carrier, delivered and estimated times of each order."""
    n = len(purchase)
    pay_type = _draw(rng, _shares(shapes.PAYMENT_TYPES), n)
    boleto = pay_type == list(shapes.PAYMENT_TYPES).index("boleto")
    # Cards clear in minutes (some reviewed for hours); boleto takes a day or three.
    card_delay = np.where(rng.random(n) < 0.85, rng.lognormal(np.log(900), 1.0, n),
                          rng.uniform(3600, 36 * 3600, n))
    boleto_delay = rng.lognormal(np.log(30 * 3600), 0.5, n)
    approved = purchase + np.where(boleto, boleto_delay, card_delay).astype(np.int64)
    carrier = approved + (rng.lognormal(np.log(1.8), 0.9, n) * DAY).astype(np.int64)

    busy = calendar.busy[day]
    region_days = np.array(list(EST_DAYS_BY_REGION.values()))[_REGION_CODE[state]]
    est_days = np.clip(np.round(region_days + 5 * busy + rng.normal(0, 4, n)), 7, 60)
    estimated = (purchase // DAY + est_days.astype(np.int64)) * DAY  # midnight, like Olist
    late_rate = np.array([shapes.LATE_BY_STATE[s] for s in STATES])[state]
    late = rng.random(n) < late_rate * np.where(busy, 2.0, 1.0) / 1.08
    on_time_at = purchase + ((estimated - purchase) * rng.beta(2.2, 2.8, n)).astype(np.int64)
    late_at = estimated + (rng.exponential(9.5, n) * DAY).astype(np.int64) + 60
    delivered = np.where(late, late_at, on_time_at)
    delivered = np.maximum(delivered, approved + (0.6 * DAY + rng.random(n) * DAY).astype(np.int64))
    # The carrier picks the parcel up before it arrives.
    carrier = np.minimum(carrier, approved + (delivered - approved) * 3 // 10)

    labels = tuple(BASE_STATUS)
    status = _draw(rng, np.array(list(BASE_STATUS.values())), n)
    s = {name: status == i for i, name in enumerate(labels)}
    has_approved = ~s["created"] & ~(s["canceled"] & (rng.random(n) < 0.15))
    has_carrier = s["delivered"] | s["shipped"] | (s["canceled"] & (rng.random(n) < 0.2))
    has_delivered = s["delivered"].copy()
    # Nothing after the end date has happened yet.
    cutoff = calendar.cutoff
    progressing = ~(s["canceled"] | s["unavailable"])
    status[progressing & has_delivered & (delivered >= cutoff)] = labels.index("shipped")
    status[progressing & has_carrier & (carrier >= cutoff)] = labels.index("processing")
    status[progressing & has_approved & (approved >= cutoff)] = labels.index("created")
    has_approved &= approved < cutoff
    has_carrier &= carrier < cutoff
    has_delivered &= delivered < cutoff
    return {
        "status": status,
        "status_labels": np.array(labels, dtype=object),
        "pay_type": pay_type,
        "approved": approved, "has_approved": has_approved,
        "carrier": carrier, "has_carrier": has_carrier,
        "delivered": delivered, "has_delivered": has_delivered,
        "estimated": estimated,
        "late": has_delivered & (delivered > estimated),
    }


def _orders_table(
    order_id: np.ndarray, customer_id: np.ndarray, purchase: np.ndarray,
    life: dict[str, np.ndarray],
) -> pa.Table:
    return pa.table({
        "order_id": _strings(order_id),
        "customer_id": _strings(customer_id),
        "order_status": _labels(tuple(life["status_labels"]), life["status"]),
        "order_purchase_timestamp": _times(purchase),
        "order_approved_at": _times(life["approved"], life["has_approved"]),
        "order_delivered_carrier_date": _times(life["carrier"], life["has_carrier"]),
        "order_delivered_customer_date": _times(life["delivered"], life["has_delivered"]),
        "order_estimated_delivery_date": _times(life["estimated"]),
    })


def _items(
    rng: np.random.Generator,
    life: dict[str, np.ndarray],
    state: np.ndarray,
    catalog: _Catalog,
    sold: np.ndarray,
    order_id: np.ndarray,
    purchase: np.ndarray,
) -> tuple[pa.Table, np.ndarray]:
    """Order items (none for unavailable orders) and each order's total in cents."""
    n = len(order_id)
    sizes = np.array(list(shapes.ITEMS_PER_ORDER))
    n_items = sizes[_draw(rng, _shares(shapes.ITEMS_PER_ORDER), n)]
    unavailable = life["status"] == list(BASE_STATUS).index("unavailable")
    n_items[unavailable] = 0
    of = np.repeat(np.arange(n), n_items)
    starts = np.cumsum(n_items) - n_items
    seq = np.arange(len(of)) - starts[of] + 1
    product = np.searchsorted(catalog.popularity_cdf, rng.random(len(of)), side="right")
    same = rng.random(n) < shapes.SAME_PRODUCT_SHARE
    product = np.where(same[of], product[starts[of]], product)
    sold[product] = True
    seller = catalog.seller[product]
    seller_state = catalog.seller_state[seller]
    cust_state = state[of]
    distance = np.where(seller_state == cust_state, FREIGHT_SAME_STATE,
                        np.where(_REGION_CODE[seller_state] == _REGION_CODE[cust_state],
                                 FREIGHT_SAME_REGION, FREIGHT_FAR))
    freight = (catalog.freight_base[product] * distance * rng.lognormal(0, 0.2, len(of))).round(2)
    price = catalog.price[product]
    ready = np.where(life["has_approved"], life["approved"], purchase)[of]
    limit = ready + ((6 + rng.integers(0, 3, len(of))) * DAY + rng.integers(-3600, 3600, len(of)))

    cents = np.round((price + freight) * 100).astype(np.int64)
    totals = np.bincount(of, weights=cents, minlength=n).astype(np.int64)
    # Unavailable orders were still paid for: what one typical item would have cost.
    guess = np.round(rng.lognormal(np.log(95), 0.8, n) * 100).astype(np.int64)
    totals = np.where(n_items == 0, guess, totals)
    table = pa.table({
        "order_id": _strings(order_id[of]),
        "order_item_id": seq.astype(np.int64),
        "product_id": _strings(catalog.product_id[product]),
        "seller_id": _strings(catalog.seller_id[seller]),
        "shipping_limit_date": _times(limit),
        "price": price,
        "freight_value": freight,
    })
    return table, totals


def _payments(
    rng: np.random.Generator, order_id: np.ndarray, totals: np.ndarray, pay_type: np.ndarray
) -> pa.Table:
    """One payment per order, a few orders split with vouchers; values sum to the total."""
    n = len(order_id)
    multi_share = sum(shapes.EXTRA_PAYMENT_ROWS.values()) / 99_440
    extra = np.where(rng.random(n) < multi_share,
                     np.array(list(shapes.EXTRA_PAYMENT_ROWS))[
                         _draw(rng, _shares(shapes.EXTRA_PAYMENT_ROWS), n)], 0)
    rows = 1 + extra
    of = np.repeat(np.arange(n), rows)
    starts = np.cumsum(rows) - rows
    seq = np.arange(len(of)) - starts[of] + 1
    voucher_total = np.where(extra > 0, (totals * rng.uniform(0.1, 0.9, n)).astype(np.int64), 0)
    share = voucher_total // np.maximum(extra, 1)
    value = np.where(seq == 1, totals[of] - voucher_total[of], share[of])
    last = seq == rows[of]
    value = value + np.where(last & (seq > 1), voucher_total[of] - share[of] * extra[of], 0)

    types = list(shapes.PAYMENT_TYPES)
    method = np.where(seq == 1, pay_type[of], types.index("voucher"))
    card = method == types.index("credit_card")
    plans = np.array(list(shapes.CARD_INSTALMENTS))
    instalments = plans[_draw(rng, _shares(shapes.CARD_INSTALMENTS), len(of))]
    # Instalments of at least about R$5.
    instalments = np.where(card, np.clip(instalments, 1, np.maximum(value // 500, 1)), 1)
    return pa.table({
        "order_id": _strings(order_id[of]),
        "payment_sequential": seq.astype(np.int64),
        "payment_type": _labels(tuple(types), method),
        "payment_installments": instalments.astype(np.int64),
        "payment_value": value / 100,
    })


def _reviews(
    rng: np.random.Generator, order_id: np.ndarray, life: dict[str, np.ndarray], cutoff: int
) -> pa.Table:
    """At most one review per order; scores fall when the delivery was late or never came."""
    n = len(order_id)
    kind = np.where(life["has_delivered"], np.where(life["late"], 1, 0), 2)
    cdfs = np.array([_cdf(np.array(list(d.values()), dtype=float)) for d in
                     (shapes.SCORES_ON_TIME, shapes.SCORES_LATE, shapes.SCORES_UNDELIVERED)])
    score = (rng.random(n)[:, None] >= cdfs[kind]).sum(axis=1) + 1
    sent = np.where(life["has_delivered"], life["delivered"], life["estimated"])
    created = (sent // DAY + 1 + rng.geometric(0.7, n) - 1) * DAY
    answered = created + (rng.lognormal(np.log(1.5), 0.9, n) * DAY).astype(np.int64)
    keep = (rng.random(n) < shapes.REVIEWED_SHARE) & (created < cutoff)
    mood = np.where(score >= 4, 0, np.where(score == 3, 1, 2))
    review_id = _hex_ids(rng, n)
    title = _texts(rng, TITLES, mood, 0.12)
    message = _texts(rng, MESSAGES, mood, 0.41)
    idx = pa.array(np.flatnonzero(keep))
    return pa.table({
        "review_id": _strings(review_id[keep]),
        "order_id": _strings(order_id[keep]),
        "review_score": score[keep].astype(np.int64),
        "review_comment_title": title.take(idx),
        "review_comment_message": message.take(idx),
        "review_creation_date": _times(created[keep]),
        "review_answer_timestamp": _times(answered[keep]),
    })


# --- helpers ---------------------------------------------------------------------------------


def _shares(weights: dict) -> np.ndarray:
    return np.array(list(weights.values()), dtype=float)


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.asarray(weights, dtype=float))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def _draw(rng: np.random.Generator, weights: np.ndarray | list[float], n: int) -> np.ndarray:
    """`n` indices drawn with probability proportional to `weights`."""
    cdf = _cdf(np.asarray(weights, dtype=float))
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random 32-character lowercase hex ids (bytes), like Olist's."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return np.ascontiguousarray(_HEX[raw]).view("S32").ravel()


def _strings(ids: np.ndarray) -> pa.Array:
    return pa.array(ids, pa.binary(32)).cast(pa.string())


def _labels(labels: tuple[str, ...], idx: np.ndarray) -> pa.Array:
    return pa.array(labels, pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64)))


def _times(seconds: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    values = np.asarray(seconds, dtype=np.int64).astype("datetime64[s]")
    return pa.array(values, mask=None if present is None else ~present)


def _texts(rng: np.random.Generator, texts: dict[str, tuple[str, ...]], mood: np.ndarray,
           share: float) -> pa.Array:
    """A canned text of the review's mood for `share` of the reviews, else null."""
    flat = [t for group in texts.values() for t in group]
    offsets = np.cumsum([0] + [len(g) for g in texts.values()])
    sizes = np.diff(offsets)
    pick = offsets[mood] + (rng.random(len(mood)) * sizes[mood]).astype(np.int64)
    return pa.array(flat, pa.string()).take(pa.array(pick, mask=rng.random(len(mood)) >= share))


_CITY_TABLE = [(s, c) for s in STATES for c in shapes.CITIES[s]]
_CITY_NAMES = pa.array([c[0] for _, c in _CITY_TABLE], pa.string())
_CITY_LO = np.array([c[1] for _, c in _CITY_TABLE])
_CITY_HI = np.array([c[2] for _, c in _CITY_TABLE])
# Cumulative city weight within its state, shifted by the state's index: one searchsorted
# then finds every person's city.
_CITY_KEY = np.concatenate([
    i + _cdf(np.array([c[3] for c in shapes.CITIES[s]])) for i, s in enumerate(STATES)
])


def _places(rng: np.random.Generator, state: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """A zip prefix (5 characters) and a city for each state index."""
    city = np.searchsorted(_CITY_KEY, state + rng.random(len(state)), side="right")
    zips = rng.integers(_CITY_LO[city], _CITY_HI[city] + 1)
    zip_text = pc.utf8_lpad(pa.array(zips).cast(pa.string()), width=5, padding="0")
    return zip_text, _CITY_NAMES.take(pa.array(city))


class _CsvSink:
    """One output CSV (plain, gzip or xz), written table by table, unquoted like Olist's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Closed in close(): the files stay open across chunks.
        if path.suffix == ".gz":
            self.fh: BinaryIO = gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115
        elif path.suffix == ".xz":
            self.fh = lzma.open(path, "wb", preset=1)  # noqa: SIM115
        else:
            self.fh = open(path, "wb")  # noqa: SIM115
        self.writer: pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            # The header is written here because pyarrow would quote it.
            self.fh.write((",".join(table.column_names) + "\n").encode())
            options = pacsv.WriteOptions(
                include_header=False, quoting_style="none", batch_size=65_536)
            self.writer = pacsv.CSVWriter(self.fh, table.schema, write_options=options)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.fh.close()
