"""Shared pieces of the digest tests: a small store ready for a digest, the raw sample CSVs
for computing expected figures independently, Slack settings for the emulator, and a
fake clock for APScheduler.

The store: the bundled Olist sample (storage/sample), refreshed as of AS_OF with a fixed
k, then given churn scores by a simple documented rule (the digest reads whatever the
churn scorer wrote; its own tests live elsewhere), a recorded risk figure for the week
before, and the weekly snapshots of the last two weeks (backfill). Built once per test run
(shared by the xdist workers) on the default store (a SQLite file, or PostgreSQL when the run
has PULSE_DATABASE_URL, see conftest); every test gets its own copy.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import copy_store_url, shared_store_url
from sqlalchemy import Engine, bindparam, select, update

from bot.settings import DigestSchedule, Settings
from storage import schema
from storage.store import open_store, set_meta

AS_OF = dt.date(2018, 8, 29)
TOKEN = "xoxb-digest-0000000000-1111111111-abcdefGHIJKLmnop"
GENERAL, ADMIN = "C0GENERAL", "C0ADMINS01"
HIGH = 0.70
# Recorded risk figures of the week before (what the nightly job would have noted).
LAST_WEEK = dt.date(2018, 8, 22)
LAST_WEEK_FACTOR = 0.8  # last week's revenue at risk = this × this week's


def churn_rule(recency_days: pd.Series, revenue: pd.Series) -> pd.DataFrame:
    """Test churn scores: p = min(recency / 400, 0.99); band high ≥ 0.7, medium ≥ 0.4;
    value at risk = p × lifetime revenue."""
    p = np.minimum(recency_days.to_numpy(dtype=float) / 400.0, 0.99)
    band = np.where(p >= HIGH, "high", np.where(p >= 0.4, "medium", "low"))
    return pd.DataFrame({"churn_prob": p, "risk_band": band,
                         "value_at_risk": p * revenue.to_numpy(dtype=float)})


def _build(engine: Engine) -> None:
    from analytics.backfill import backfill_snapshots
    from analytics.facts import build_facts
    from analytics.refresh import refresh
    from storage.loaders import load_path
    from storage.sample_data import sample_dir

    load_path(engine, str(sample_dir()), "olist")
    refresh(engine, as_of=AS_OF, k=4)
    F, S = schema.customer_features, schema.customer_scores
    with engine.connect() as conn:
        feats = pd.DataFrame(conn.execute(select(F.c.customer_id, F.c.recency_days, F.c.revenue)).all(),
                             columns=["customer_id", "recency_days", "revenue"])
    scores = churn_rule(feats["recency_days"], feats["revenue"])
    rows = [{"cid": c, "p": float(p), "b": b, "v": float(v)} for c, p, b, v in zip(
        feats["customer_id"], scores["churn_prob"], scores["risk_band"], scores["value_at_risk"],
        strict=True)]
    with engine.begin() as conn:
        conn.execute(update(S).where(S.c.customer_id == bindparam("cid")).values(
            churn_prob=bindparam("p"), risk_band=bindparam("b"), value_at_risk=bindparam("v"),
            churn_source="test"), rows)
        high = scores["risk_band"] == "high"
        set_meta(conn, "risk_history:all:", {LAST_WEEK.isoformat(): {
            "at_risk": int(high.sum()) - 100,
            "revenue_at_risk": float(scores.loc[high, "value_at_risk"].sum()) * LAST_WEEK_FACTOR}})
    build_facts(engine, AS_OF)  # as a refresh that wrote these scores would
    backfill_snapshots(engine, AS_OF, weeks=2)


def digest_store(folder: Path) -> tuple[Engine, str]:
    """(engine, url) of a fresh copy of the digest-ready sample store (in `folder` on SQLite)."""
    url = copy_store_url(shared_store_url("digest", _build), folder)
    return open_store(url), url


def slack_settings(base_url: str, **changes) -> Settings:  # noqa: ANN003
    """Settings for the emulator: fixed as-of, one digest to #general, admin channel."""
    s = Settings(
        as_of=AS_OF.isoformat(), slack_api_url=base_url, slack_bot_token=TOKEN,
        admin_channel=ADMIN, digests=(DigestSchedule(GENERAL, "0 9 * * mon", "America/Sao_Paulo", ""),),
        refresh_cron="0 3 1 1 *",  # Jan 1 only: keeps the nightly refresh out of the clock tests
        export_allowed_users=("U0ALICE01",),
    )
    return replace(s, **changes)


def emulator_channels():  # noqa: ANN201
    from slack_emulator import Channel

    return [Channel(GENERAL, "general"), Channel("C0RANDOM01", "random", is_member=False),
            Channel(ADMIN, "pulse-admin")]


# --- the raw sample, read with plain pandas ----------------------------------------------------


@functools.cache
def sample_purchases() -> pd.DataFrame:
    """Sample purchases: order_id, person, state, purchased_at, revenue (Σ item price + freight)."""
    from storage.sample_data import sample_dir

    d = Path(sample_dir())
    orders = pd.read_csv(d / "olist_orders_dataset.csv.xz", parse_dates=["order_purchase_timestamp"])
    customers = pd.read_csv(d / "olist_customers_dataset.csv.xz", dtype=str)
    items = pd.read_csv(d / "olist_order_items_dataset.csv.xz")
    o = orders.merge(customers, on="customer_id")
    o = o[~o["order_status"].isin(["canceled", "unavailable"])]
    rev = (items["price"] + items["freight_value"]).groupby(items["order_id"]).sum()
    return pd.DataFrame({
        "order_id": o["order_id"], "person": o["customer_unique_id"], "state": o["customer_state"],
        "purchased_at": o["order_purchase_timestamp"],
        "revenue": o["order_id"].map(rev).fillna(0.0),
    }).reset_index(drop=True)


# --- a clock for APScheduler ---------------------------------------------------------------------


class FakeClock:
    """The time APScheduler reads: `datetime.now` in its scheduler and executor modules.

    Patch with `clock.install(monkeypatch)`; move it with `advance` and call the
    scheduler's `wakeup()` so it looks at the jobs again. Triggers, the job store, coalescing
    and misfire checks are APScheduler's own; only the time source is replaced.
    """

    def __init__(self, start: dt.datetime):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.now = start
        self._lock = threading.Lock()

    def advance(self, **delta: float) -> dt.datetime:
        with self._lock:
            self.now = self.now + dt.timedelta(**delta)
            return self.now

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self.now = when

    def install(self, monkeypatch) -> None:  # noqa: ANN001 - pytest.MonkeyPatch
        import apscheduler.executors.base as executors_base
        import apscheduler.schedulers.base as schedulers_base

        clock = self

        class FrozenDatetime(dt.datetime):
            @classmethod
            def now(cls, tz=None):  # noqa: ANN001, ANN206
                with clock._lock:
                    current = clock.now
                return current.astimezone(tz) if tz else current.astimezone().replace(tzinfo=None)

        monkeypatch.setattr(schedulers_base, "datetime", FrozenDatetime)
        monkeypatch.setattr(executors_base, "datetime", FrozenDatetime)


# --- RFM segments by hand, from the rules documented in analytics/rfm.py -------------------------

SEGMENT_ORDER = ("Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
                 "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost")
_GRID = (("Champions", r"5[4-5]"), ("Loyal", r"[3-4][4-5]"), ("Potential Loyalist", r"[4-5][2-3]"),
         ("New", r"51"), ("Promising", r"41"), ("Need Attention", r"33"),
         ("About to Sleep", r"3[1-2]"), ("At Risk", r"[1-2][3-4]"), ("Can't Lose Them", r"[1-2]5"),
         ("Hibernating", r"(?!11)[1-2][1-2]"), ("Lost", r"11"))


def _quintiles(values: pd.Series, higher_is_better: bool) -> pd.Series:
    beaten = (values if higher_is_better else -values).rank(method="min") - 1
    return np.minimum(1 + np.floor(5 * beaten / len(values)), 5).astype(int)


def segments_by_hand(purchases: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """person → orders, revenue, recency, r, f, segment as of `day`, from purchase rows
    (person, purchased_at, revenue): quintiles of rank(min), the documented fallbacks and
    the R×F grid."""
    import re

    p = purchases[purchases["purchased_at"] < pd.Timestamp(day + dt.timedelta(days=1))]
    g = p.groupby("person").agg(orders=("revenue", "size"), revenue=("revenue", "sum"),
                                last=("purchased_at", "max"))
    g["recency"] = (pd.Timestamp(day) - g["last"].dt.normalize()).dt.days
    r = _quintiles(g["recency"], higher_is_better=False)
    if r.nunique() < 5:
        r = pd.Series(np.select([g["recency"] <= 30, g["recency"] <= 90, g["recency"] <= 180,
                                 g["recency"] <= 365], [5, 4, 3, 2], 1), index=g.index)
    f = _quintiles(g["orders"], higher_is_better=True)
    if f.nunique() < 5:
        f = g["orders"].map(lambda n: {1: 1, 2: 3, 3: 4}.get(n, 5))
    names = {f"{a}{b}": next(n for n, pat in _GRID if re.fullmatch(pat, f"{a}{b}"))
             for a in range(1, 6) for b in range(1, 6)}
    g["r"], g["f"] = r, f
    g["segment"] = [names[f"{a}{b}"] for a, b in zip(r, f, strict=True)]
    return g
