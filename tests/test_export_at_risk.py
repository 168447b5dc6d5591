"""`/export-at-risk` and `pulse export-at-risk`: the CSV, its safety, who may export, the audit
trail — on a small shop, and on the whole of Olist."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analytics_data import AS_OF_OLIST, loaded_store
from churn_data import AS_OF, HORIZON, insert, synthetic_shop
from click.testing import CliRunner
from conftest import copy_store, new_store_url, store_url_of
from sqlalchemy import Engine, select, text

from analytics import risk
from analytics.refresh import refresh
from analytics.risk import EXPORT_COLUMNS, RiskFilter, iter_at_risk_csv, neutralise
from bot.cli import cli
from bot.commands import churn_risk, export_at_risk, model
from bot.router import CommandContext, Requester, Router
from bot.settings import Settings
from storage import schema
from storage.store import open_store

NASTY = {"c0000": "=HYPERLINK(\"http://x\",\"y\")", "c0001": "+1+1", "c0002": "-2+3",
         "c0003": "@SUM(A1:A2)", "c0004": "\tx", "c0005": "\rx"}


def router(engine: Engine, **settings) -> Router:  # noqa: ANN003
    r = Router(engine, Settings(**settings))
    for cmd in (churn_risk.COMMAND, export_at_risk.COMMAND, model.COMMAND):
        r.commands[cmd.name] = cmd
    return r


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """(The URL of) a refreshed synthetic shop whose first customers have formula-like ids."""
    path = new_store_url(tmp_path_factory.mktemp("export"), "shop.db")
    engine = open_store(path)
    tables = synthetic_shop(customers=300, seed=9)
    for name in ("customers", "orders"):
        tables[name]["customer_id"] = tables[name]["customer_id"].replace(NASTY)
    insert(engine, tables)
    refresh(engine, AS_OF, scorers=risk.default_scorers(HORIZON, 42), k=2)
    engine.dispose()
    return path


@pytest.fixture
def shop(db_path: str, tmp_path: Path) -> Engine:
    return copy_store(db_path, tmp_path, "shop.db")


def audit(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(select(schema.export_audit), conn)


def read_csv(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), dtype={"customer_id": str}, keep_default_na=False)


# --- formula injection ------------------------------------------------------------------------


def test_neutralise() -> None:
    for bad in ("=1+1", "+1", "-1", "@A1", "\t=1", "\r=1"):
        assert neutralise(bad) == "'" + bad
    for ok in ("SP", "c001", "", "1-2", " =x", "'=x"):
        assert neutralise(ok) == ok
    assert neutralise(-3.5) == -3.5 and neutralise(None) is None


def test_csv_cells_that_look_like_formulas_are_neutralised(shop: Engine) -> None:
    answer = router(shop).handle("/export-at-risk min-prob 0")
    assert not answer.is_error, answer.summary
    rows = list(csv.reader(io.StringIO(answer.export.content.decode("utf-8"))))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    ids = {r[0] for r in rows[1:]}
    for nasty in NASTY.values():
        assert "'" + nasty in ids and nasty not in ids
    for row in rows[1:]:
        for cell in (row[0], row[1], row[2], row[3], row[9]):
            assert not cell.startswith(risk.FORMULA_PREFIXES)


# --- who may export, and the audit trail ----------------------------------------------------------


def test_slack_user_not_on_the_allowlist_is_refused_and_audited(shop: Engine) -> None:
    who = Requester("U_BOB", "C_GENERAL", source="slack")
    answer = router(shop, export_allowed_users=("U_ALICE",)).handle("/export-at-risk SP limit 10", who)
    assert answer.is_error and answer.export is None
    assert "allowlist" in answer.summary and "Sorry" in answer.summary
    (row,) = audit(shop).to_dict("records")
    assert (row["user_id"], row["channel_id"], row["allowed"], row["row_count"]) == ("U_BOB", "C_GENERAL", False, 0)
    assert row["filter"] == "SP limit 10" and row["command"] == "export-at-risk (slack)"
    assert isinstance(row["created_at"], dt.datetime | pd.Timestamp)


def test_allowlisted_user_or_channel_may_export_and_is_audited(shop: Engine) -> None:
    by_user = router(shop, export_allowed_users=("U_ALICE",)).handle(
        "/export-at-risk min-prob 0.5", Requester("U_ALICE", "C_GENERAL", source="slack"))
    by_channel = router(shop, export_allowed_channels=("C_RISK",)).handle(
        "/export-at-risk min-prob 0.5", Requester("U_BOB", "C_RISK", source="slack"))
    console = router(shop).handle("/export-at-risk min-prob 0.5")  # local: no allowlist needed
    for answer in (by_user, by_channel, console):
        assert not answer.is_error and answer.export.rows > 10
    assert by_user.export.content == by_channel.export.content == console.export.content
    rows = audit(shop)
    assert list(rows["allowed"]) == [True, True, True]
    assert list(rows["user_id"].fillna("-")) == ["U_ALICE", "U_BOB", "-"]
    assert (rows["row_count"] == console.export.rows).all() and (rows["filter"] == "min-prob 0.5").all()


# --- the file ---------------------------------------------------------------------------------


def test_export_is_ranked_by_value_at_risk_with_the_documented_columns(shop: Engine) -> None:
    answer = router(shop).handle("/export-at-risk min-prob 0.3")
    frame = read_csv(answer.export.content)
    assert tuple(frame.columns) == EXPORT_COLUMNS == answer.export.columns
    assert len(frame) == answer.export.rows == risk.count_at_risk(shop, RiskFilter(min_prob=0.3))
    assert (np.diff(frame["expected_value_at_risk"].to_numpy()) <= 0).all()
    assert (frame["churn_probability"] >= 0.3).all()
    assert frame["recommended_action"].str.len().gt(10).all()
    pd.to_datetime(frame["last_purchase"], format="%Y-%m-%d")  # plain dates
    assert answer.export.filename == f"at-risk-{AS_OF.isoformat()}-min-prob-0.3.csv"


def test_export_is_capped_by_limit_and_by_the_setting(shop: Engine) -> None:
    n = risk.count_at_risk(shop, RiskFilter(min_prob=0.3))
    limited = router(shop).handle("/export-at-risk min-prob 0.3 limit 7")
    assert limited.export.rows == 7 == len(read_csv(limited.export.content))
    assert "the `limit` you gave" in limited.summary and f"{n:,} match" in limited.summary
    capped = router(shop, export_max_rows=5).handle("/export-at-risk min-prob 0.3 limit 5")
    assert capped.export.rows == 5 and "export limit of 5 rows" in capped.summary
    assert router(shop, export_max_rows=5).handle("/export-at-risk limit 6").is_error
    full = read_csv(router(shop).handle("/export-at-risk min-prob 0.3").export.content)
    pd.testing.assert_frame_equal(read_csv(limited.export.content), full.head(7))


def test_csv_is_generated_in_chunks(shop: Engine) -> None:
    f = RiskFilter(min_prob=0.2)
    chunks = list(iter_at_risk_csv(shop, f, chunk_rows=10))
    n = risk.count_at_risk(shop, f)
    assert len(chunks) >= n // 10 and max(c.count(b"\n") for c in chunks) <= 11
    assert b"".join(chunks) == b"".join(iter_at_risk_csv(shop, f, chunk_rows=100_000))


def test_cli_writes_the_same_csv_and_audits(shop: Engine, tmp_path: Path) -> None:
    out = tmp_path / "risk.csv"
    result = CliRunner().invoke(cli, ["--db", str(shop.url), "export-at-risk", "--out", str(out),
                                      "--min-prob", "0.5", "--segment", "new"])
    assert result.exit_code == 0, result.output
    answer = router(shop).handle("/export-at-risk min-prob 0.5 segment new")
    assert out.read_bytes() == answer.export.content
    assert f"wrote {answer.export.rows:,} rows" in result.output
    rows = audit(shop)
    assert list(rows["command"]) == ["export-at-risk (cli)", "export-at-risk (console)"]
    assert list(rows["filter"]) == ["segment new min-prob 0.5"] * 2
    bad = CliRunner().invoke(cli, ["--db", str(shop.url), "export-at-risk", "--out", str(out),
                                   "--segment", "nobody"])
    assert bad.exit_code != 0 and "segment" in bad.output


def test_export_button_repeats_the_churn_risk_filter(shop: Engine) -> None:
    r = router(shop)
    shown = r.handle("/churn-risk sudeste min-prob 0.45 top 3")
    figures = {f.label: f.raw for f in shown.figures}
    (button,) = shown.buttons
    assert button.command == "/export-at-risk Sudeste min-prob 0.45"
    exported = r.handle(button.command)
    frame = read_csv(exported.export.content)
    assert len(frame) == figures["Customers at risk"]
    assert frame["expected_value_at_risk"].sum() == pytest.approx(
        figures["Value at risk (next 90 days)"], abs=0.005 * len(frame) + 1e-9)
    assert set(frame["region"]) == {"Sudeste"}
    assert list(frame["customer_id"].head(3)) == list(shown.tables[0].frame["customer"])


# --- the whole of Olist --------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_olist_export_matches_churn_risk(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    shared = loaded_store(tmp_path_factory, "olist", "olist")
    engine = copy_store(shared, tmp_path, "olist.db")
    report = refresh(engine, AS_OF_OLIST, scorers=risk.default_scorers(90, 42), k=4)
    assert not report.scorer_errors and report.customers == 94_990
    shown = router(engine).handle("/churn-risk")
    figures = {f.label: f.raw for f in shown.figures}
    out = tmp_path / "at-risk.csv"
    result = CliRunner().invoke(cli, ["--db", store_url_of(engine), "export-at-risk", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype={"customer_id": str})
    assert tuple(frame.columns) == EXPORT_COLUMNS
    assert len(frame) == figures["Customers at risk"] > 90_000  # nearly nobody comes back in 90 days
    assert frame["customer_id"].is_unique and frame["state"].notna().all()
    assert (np.diff(frame["expected_value_at_risk"].to_numpy()) <= 0).all()
    assert frame["expected_value_at_risk"].sum() == pytest.approx(
        figures["Value at risk (next 90 days)"], abs=0.005 * len(frame))
    assert frame["revenue"].sum() == pytest.approx(figures["Revenue to date of those at risk"],
                                                   abs=0.005 * len(frame))
    assert (frame["churn_probability"] >= 0.70).all()
    with engine.connect() as conn:
        sp = conn.execute(text("SELECT COUNT(*) FROM customer_scores s JOIN customer_features f "
                               "USING (customer_id) WHERE f.state = 'SP' AND s.risk_band = 'high'")).scalar()
    assert (frame["state"] == "SP").sum() == sp


@pytest.mark.parametrize("text", ["min-prob 0", "min-prob 0 limit 7", "", "sudeste min-prob 0.2",
                                  "segment at-risk min-prob 0"])
def test_the_export_file_is_the_streamed_csv_byte_for_byte(shop: Engine, text: str) -> None:
    r = router(shop)
    answer = r.handle(f"/export-at-risk {text}")
    assert not answer.is_error, answer.summary
    ra = churn_risk.parse_risk_args(
        CommandContext(shop, r.settings), text.split(), with_limit=True)
    expected = b"".join(iter_at_risk_csv(shop, ra.filter, ra.limit or r.settings.export_max_rows))
    assert answer.export.content == expected
    rows = list(csv.DictReader(io.StringIO(expected.decode("utf-8"))))
    assert answer.export.rows == len(rows)
    total = {f.label: f.raw for f in answer.figures}["Value at risk in the file"]
    assert total == sum(float(row["expected_value_at_risk"] or 0) for row in rows)
