"""Past weekly snapshots from the order history (`pulse backfill`), on a hand-made store
and on the full Olist data (the migration matrix checked against plain pandas)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from analytics_data import Shop, loaded_store, olist_purchases
from click.testing import CliRunner
from conftest import copy_store, new_store
from digest_fixtures import segments_by_hand
from sqlalchemy import func, select

from analytics.backfill import backfill_snapshots, week_ends
from analytics.features import build_features
from analytics.migration import (
    NEW_CUSTOMERS,
    Migration,
    migration_between,
    read_snapshot,
    segment_migration,
    snapshot_dates,
    stored_cells,
    transition,
)
from analytics.refresh import refresh
from analytics.rfm import rfm_scores
from bot.cli import cli
from storage.geography import ALL, Place
from storage.schema import segment_snapshots

AS_OF = dt.date(2024, 3, 31)


@pytest.fixture
def small(tmp_path):  # noqa: ANN201
    """Twelve customers buying over three months, a few of them several times."""
    engine = new_store(tmp_path, "small.db")
    shop = Shop(engine)
    states = ["SP", "RJ", "MG", "RS", "BA", "PR"]
    for i in range(12):
        shop.customer(f"c{i:02d}", states[i % len(states)])
    day = dt.date(2024, 1, 1)
    n = 0
    for i in range(12):
        for k in range(1 + i % 4):  # 1 to 4 orders each
            when = day + dt.timedelta(days=7 * i + 9 * k)
            shop.order(f"o{n:03d}", f"c{i:02d}", f"{when} 10:00", [("x", 20.0 + 7 * i + k, 5.0)])
            n += 1
    shop.order("cancel", "c00", "2024-03-30 10:00", [("x", 999.0, 0.0)], status="canceled")
    yield engine
    engine.dispose()


def _rows(engine) -> pd.DataFrame:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.execute(select(segment_snapshots).order_by(
            segment_snapshots.c.snapshot_date, segment_snapshots.c.customer_id)).all()
    return pd.DataFrame(rows)


def test_week_ends() -> None:
    assert week_ends(AS_OF, 2) == [dt.date(2024, 3, 17), dt.date(2024, 3, 24), AS_OF]
    with pytest.raises(ValueError):
        week_ends(AS_OF, -1)


def test_each_week_is_what_the_refresh_would_have_written(small) -> None:  # noqa: ANN001
    report = backfill_snapshots(small, AS_OF, weeks=8)
    assert list(report.written) == week_ends(AS_OF, 8) and report.skipped == ()
    for day in report.written:
        snap = read_snapshot(small, day).sort_values("customer_id", ignore_index=True)
        features = build_features(small, day)
        scores = rfm_scores(features)
        expected = scores[["customer_id", "segment"]].merge(
            features[["customer_id", "revenue", "state", "region"]], on="customer_id")
        expected = expected.sort_values("customer_id", ignore_index=True)
        assert snap["customer_id"].tolist() == expected["customer_id"].tolist()
        assert snap["segment"].tolist() == expected["segment"].tolist()
        assert snap["revenue"].tolist() == pytest.approx(expected["revenue"].tolist())
        assert snap["state"].tolist() == expected["state"].tolist()
    # the refresh's own snapshot of the as-of date is the same as the backfill's
    before = read_snapshot(small, AS_OF).sort_values("customer_id", ignore_index=True)
    refresh(small, as_of=AS_OF, k=2)
    after = read_snapshot(small, AS_OF).sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(before[["customer_id", "segment", "state"]],
                                  after[["customer_id", "segment", "state"]])


def test_backfill_is_idempotent_and_skips_weeks_without_customers(small) -> None:  # noqa: ANN001
    first = backfill_snapshots(small, AS_OF, weeks=14)
    # the first purchase is on 2024-01-01: week ends before it have nobody to snapshot
    assert first.skipped == tuple(d for d in week_ends(AS_OF, 14) if d < dt.date(2024, 1, 1))
    rows = _rows(small)
    again = backfill_snapshots(small, AS_OF, weeks=14)
    assert again.written == first.written
    pd.testing.assert_frame_equal(_rows(small), rows)
    quick = backfill_snapshots(small, AS_OF, weeks=14, skip_existing=True)
    assert quick.written == {} and set(quick.skipped) == set(week_ends(AS_OF, 14))
    # customers appear in the week of their first purchase and stay
    counts = rows.groupby("snapshot_date").size()
    assert counts.is_monotonic_increasing and counts.iloc[-1] == 12


def _same_migration(a: Migration, b: Migration) -> None:
    pd.testing.assert_frame_equal(a.counts, b.counts)
    pd.testing.assert_frame_equal(a.revenue, b.revenue, rtol=1e-9)
    pd.testing.assert_frame_equal(a.by_segment, b.by_segment, rtol=1e-9)
    pd.testing.assert_frame_equal(a.flows.drop(columns="revenue"), b.flows.drop(columns="revenue"))
    for name in ("customers_earlier", "customers_later", "stayed", "upgrades", "downgrades",
                 "new_customers", "not_in_later"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.upgrade_revenue == pytest.approx(b.upgrade_revenue)
    assert a.downgrade_revenue == pytest.approx(b.downgrade_revenue)


def _from_snapshots(engine, earlier: dt.date, later: dt.date, place: Place = ALL) -> Migration:  # noqa: ANN001
    return transition(read_snapshot(engine, earlier), read_snapshot(engine, later),
                      earlier=earlier, later=later, place=place)


def test_the_refresh_stores_the_migrations_the_digest_and_command_ask_for(small) -> None:  # noqa: ANN001
    backfill_snapshots(small, AS_OF, weeks=5)
    refresh(small, as_of=AS_OF, k=2)
    week, month = AS_OF - dt.timedelta(weeks=1), AS_OF - dt.timedelta(weeks=4)
    places = (ALL, Place("state", "SP", "SP"), Place("region", "Sudeste", "Sudeste"))
    for earlier in (week, month):
        assert stored_cells(small, earlier, AS_OF) is not None
        for place in places:
            _same_migration(migration_between(small, earlier, AS_OF, place),
                            _from_snapshots(small, earlier, AS_OF, place))
    assert segment_migration(small, AS_OF, weeks=1).earlier == week
    # a pair no refresh stored is computed from the snapshots
    assert stored_cells(small, AS_OF - dt.timedelta(weeks=2), AS_OF) is None
    # rewriting a snapshot drops the cells that name it
    backfill_snapshots(small, week, weeks=0)
    assert stored_cells(small, week, AS_OF) is None
    assert stored_cells(small, month, AS_OF) is not None
    _same_migration(migration_between(small, week, AS_OF), _from_snapshots(small, week, AS_OF))


def test_pulse_backfill_command(small) -> None:  # noqa: ANN001
    url = small.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["--db", url, "backfill", "--weeks", "3", "--as-of", "2024-03-31"])
    assert result.exit_code == 0, result.output
    assert "4 weekly snapshots written" in result.output
    assert snapshot_dates(small) == week_ends(AS_OF, 3)
    bad = CliRunner().invoke(cli, ["--db", url, "backfill", "--as-of", "March"])
    assert bad.exit_code != 0 and "not a date" in bad.output


# --- the acceptance test on the full Olist data --------------------------------------------------

OLIST_AS_OF = dt.date(2018, 8, 29)


@pytest.fixture(scope="module")
def olist_copy(tmp_path_factory):  # noqa: ANN201
    """A private copy of the full Olist store (loaded once per test process)."""
    shared = loaded_store(tmp_path_factory, "olist", "olist")
    shared.dispose()
    engine = copy_store(shared, tmp_path_factory.mktemp("olist-backfill"))
    yield engine
    engine.dispose()


@pytest.mark.realdata
@pytest.mark.slow
def test_backfill_26_weeks_on_olist_gives_the_migration_pandas_computes(olist_copy) -> None:  # noqa: ANN001
    engine = olist_copy
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["--db", url, "backfill", "--weeks", "26", "--as-of",
                                      OLIST_AS_OF.isoformat()])
    assert result.exit_code == 0, result.output
    weeks = week_ends(OLIST_AS_OF, 26)
    assert snapshot_dates(engine) == weeks

    purchases = olist_purchases().rename(columns={"order_purchase_timestamp": "purchased_at"})
    earlier, later = weeks[14], weeks[22]  # 2018-06-06 and 2018-08-01
    before = segments_by_hand(purchases, earlier)["segment"]
    after = segments_by_hand(purchases, later)["segment"]
    expected = pd.crosstab(before.reindex(after.index).fillna(NEW_CUSTOMERS), after)

    m = migration_between(engine, earlier, later)
    got = m.counts.loc[expected.index, expected.columns]
    assert (got.to_numpy() == expected.to_numpy()).all()
    assert int(m.counts.to_numpy().sum()) == len(after)  # nobody dropped, nobody counted twice
    assert m.new_customers == int(after.index.difference(before.index).size) > 5_000
    assert m.not_in_later == 0
    # upgrades and downgrades follow the rank order (analytics.rfm.SEGMENTS, best first)
    from digest_fixtures import SEGMENT_ORDER

    rank = {s: i for i, s in enumerate(SEGMENT_ORDER)}
    both = pd.concat({"b": before, "a": after}, axis=1).dropna()
    assert m.downgrades == int((both["a"].map(rank) > both["b"].map(rank)).sum())
    assert m.upgrades == int((both["a"].map(rank) < both["b"].map(rank)).sum())

    # the refresh of the last week stores its migration from the week before; read back,
    # it is the one pandas computes
    refresh(engine, as_of=OLIST_AS_OF, k=2)
    last, before_last = weeks[-1], weeks[-2]
    assert stored_cells(engine, before_last, last) is not None
    prev = segments_by_hand(purchases, before_last)["segment"]
    now = segments_by_hand(purchases, last)["segment"]
    expected = pd.crosstab(prev.reindex(now.index).fillna(NEW_CUSTOMERS), now)
    stored = migration_between(engine, before_last, last)
    assert (stored.counts.loc[expected.index, expected.columns].to_numpy() == expected.to_numpy()).all()
    assert int(stored.counts.to_numpy().sum()) == len(now)
    _same_migration(stored, _from_snapshots(engine, before_last, last))

    # running it again changes nothing (idempotent), and --missing-only skips every week
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(segment_snapshots)).scalar()
    quick = CliRunner().invoke(cli, ["--db", url, "backfill", "--weeks", "26", "--as-of",
                                     OLIST_AS_OF.isoformat(), "--missing-only"])
    assert quick.exit_code == 0 and "0 weekly snapshots written" in quick.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(segment_snapshots)).scalar() == total
