"""Trained models in the store: a joblib blob plus a JSON model card, one row per name.

The `models` table keeps the latest model of each name ("churn" for the supervised churn
model, "clv" for the BG/NBD + Gamma-Gamma fit, which has a card and no blob). A card is
plain JSON: what was trained, on which data (range and fingerprint), the cutoffs, the
metrics and the features; `save_model` adds `version`, `trained_at` and
`data_fingerprint`. The blob is a joblib (pickle) dump: load it only from your own store.

`data_fingerprint` is the cheap summary that decides whether the data changed since a
model was trained (the refresh retrains only then); it is also written to `meta` under
`FINGERPRINT_META_KEY`. Its queries are `read_fingerprint`, which the refresh runs once
and derives both its own summary and the models' hash from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import joblib
from sqlalchemy import Connection, Engine, Select, Table, case, func, select

from storage import schema
from storage.engine import sqlite_file, unmapped
from storage.store import NON_PURCHASE_STATUSES, set_meta

M = schema.models
FINGERPRINT_META_KEY = "churn_model_fingerprint"


@dataclass(frozen=True)
class DataFingerprint:
    """The canonical tables in a few aggregates (`read_fingerprint`): row counts, the order
    time range, revenue, purchases, review points and delivered orders."""

    counts: dict[str, int]  # rows per canonical table
    first_purchase: Any  # min/max of orders.purchased_at as the driver returns them
    last_purchase: Any
    revenue: float
    purchases: int
    review_points: int
    delivered: int

    @property
    def digest(self) -> str:
        """The short hash that models record (`data_fingerprint`)."""
        parts = {
            **self.counts, "first": _iso(self.first_purchase), "last": _iso(self.last_purchase),
            "revenue": round(self.revenue, 2), "purchases": self.purchases,
            "review_points": self.review_points, "delivered": self.delivered,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _count(table: Table) -> Select:
    return select(func.count()).select_from(table)


def row_counts(conn: Connection, tables: Sequence[Table]) -> dict[str, int]:
    """Rows per table (by name)."""
    return {t.name: int(conn.execute(_count(t)).scalar()) for t in tables}


def read_fingerprint(engine: Engine) -> DataFingerprint:
    """The aggregates behind both fingerprints (this module's hash and the refresh's summary).

    Loading, deleting or changing orders (status or value) changes them; they cost a few
    aggregate queries, not a read of the data. The queries run two at a time, each on a
    connection of its own (each is a scan of a table: at 10M orders, seconds apiece); they
    were separate statements before too, each seeing the store as it was when it ran.
    """
    orders = schema.orders
    queries: dict[str, Select] = {t.name: _count(t) for t in schema.CANONICAL_TABLES}
    # min and max each alone, where the purchase-time index answers them; beside the sums
    # they cost the scan a text comparison per row (0.7 s of its 2.7 s at 10M orders)
    queries["orders:first"] = select(func.min(orders.c.purchased_at))
    queries["orders:last"] = select(func.max(orders.c.purchased_at))
    queries["orders:aggregates"] = select(
        func.sum(orders.c.items_value + orders.c.freight_value),
        func.sum(case((orders.c.status.in_(NON_PURCHASE_STATUSES), 0), else_=1)),
        func.count(orders.c.delivered_at),
    )
    queries["reviews:points"] = select(func.sum(schema.reviews.c.score))

    def run(query: Select) -> tuple:
        with unmapped(engine) as conn:
            return tuple(conn.execute(query).one())

    # the orders' aggregate (the longest scan) first, so the counts fill the other thread
    names = ["orders:aggregates", *[n for n in queries if n != "orders:aggregates"]]
    if engine.dialect.name == "sqlite" and sqlite_file(engine) is None:
        # an in-memory SQLite store is one connection's own: every query on that one
        rows = dict(zip(names, map(run, [queries[n] for n in names]), strict=True))
    else:
        with ThreadPoolExecutor(2, thread_name_prefix="pulse-fingerprint") as pool:
            rows = dict(zip(names, pool.map(run, [queries[n] for n in names]), strict=True))
    (lo,), (hi,) = rows["orders:first"], rows["orders:last"]
    revenue, purchases, delivered = rows["orders:aggregates"]
    reviews = rows["reviews:points"][0]
    return DataFingerprint(
        counts={t.name: int(rows[t.name][0]) for t in schema.CANONICAL_TABLES},
        first_purchase=lo, last_purchase=hi, revenue=float(revenue or 0.0),
        purchases=int(purchases or 0), review_points=int(reviews or 0),
        delivered=int(delivered or 0),
    )


def data_fingerprint(engine: Engine) -> str:
    """A short hash of the canonical tables (`read_fingerprint(engine).digest`)."""
    return read_fingerprint(engine).digest


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)[:19]


def save_model(engine: Engine, name: str, card: dict[str, Any], model: Any = None,
               *, fingerprint: str | None = None) -> dict[str, Any]:
    """Store `model` (joblib) and `card` under `name`, replacing the previous one.

    Returns the card as stored, with `version`, `trained_at` and `data_fingerprint` set.
    """
    fingerprint = fingerprint or data_fingerprint(engine)
    now = dt.datetime.now().replace(microsecond=0)
    card = dict(card)
    card.setdefault("name", name)
    card["data_fingerprint"] = fingerprint
    card["trained_at"] = now.isoformat()
    card["version"] = model_version(name, card, fingerprint)
    blob = None
    if model is not None:
        buffer = io.BytesIO()
        joblib.dump(model, buffer, compress=3)
        blob = buffer.getvalue()
    text = json.dumps(card, sort_keys=False, default=_json_default)
    with engine.begin() as conn:
        conn.execute(M.delete().where(M.c.name == name))
        conn.execute(M.insert().values(name=name, version=card["version"], created_at=now,
                                       card=text, blob=blob))
        if name == "churn":
            set_meta(conn, FINGERPRINT_META_KEY, fingerprint)
    return json.loads(text)


def model_version(name: str, card: dict[str, Any], fingerprint: str) -> str:
    """"churn-logistic-2018-08-29-1a2b3c4d": name, kind, as-of and data fingerprint."""
    parts = [name, str(card.get("kind") or card.get("status") or "model"), str(card.get("as_of") or ""),
             fingerprint[:8]]
    return "-".join(p for p in parts if p)[:64]


def load_card(engine: Engine, name: str) -> dict[str, Any] | None:
    """The stored card of model `name`, or None."""
    with engine.connect() as conn:
        text = conn.execute(select(M.c.card).where(M.c.name == name)).scalar()
    return None if text is None else json.loads(text)


def load_model(engine: Engine, name: str) -> tuple[dict[str, Any], Any] | None:
    """(card, model) of `name`, or None when there is none (or it has no blob)."""
    with engine.connect() as conn:
        row = conn.execute(select(M.c.card, M.c.blob).where(M.c.name == name)).first()
    if row is None or row.blob is None:
        return None
    return json.loads(row.card), joblib.load(io.BytesIO(bytes(row.blob)))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
