"""The `pulse` CLI and the console: README in step with the commands, answers on real data."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sample_store import sample_store_url

from bot.cli import cli
from storage.sample_data import sample_dir

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_COMMANDS = ["/kpis", "/segments", "/segments clusters", "/cohorts", "/cohorts weekly sul",
                    "/ltv", "/ltv region", "/delivery", "/delivery nordeste", "/payments", "/finance",
                    "/churn-risk", "/churn-risk SP top 5", "/model", "/pulse-help"]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sample_store_url(tmp_path_factory.mktemp("cli"))


def _invoke(url: str, *args: str):
    return CliRunner().invoke(cli, ["--db", url, *args], catch_exceptions=False)


def test_every_cli_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert command.help, f"`pulse {name}` has no help text"
        assert f"pulse {name}" in readme, f"README.md does not mention `pulse {name}`"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- run-command -->", "<!-- test-command -->"):
        block = readme.split(marker, 1)[1].split("```", 2)[1]
        assert block.startswith("bash\n") and len(block.strip().splitlines()) == 2
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


def test_kpis_json_matches_the_raw_sample(store_url: str, tmp_path: Path) -> None:
    result = _invoke(store_url, "ask", "--format", "json", "--out", str(tmp_path), "/kpis")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    # Independent figures from the bundled CSVs with plain pandas.
    orders = pd.read_csv(sample_dir() / "olist_orders_dataset.csv.xz")
    customers = pd.read_csv(sample_dir() / "olist_customers_dataset.csv.xz")
    items = pd.read_csv(sample_dir() / "olist_order_items_dataset.csv.xz")
    as_of = pd.Timestamp(answer["as_of"]) + pd.Timedelta(days=1)
    orders["purchased"] = pd.to_datetime(orders["order_purchase_timestamp"])
    bought = orders[~orders["order_status"].isin(["canceled", "unavailable"])
                    & (orders["purchased"] < as_of)]
    bought = bought.merge(customers[["customer_id", "customer_unique_id"]], on="customer_id")
    value = items.groupby("order_id")[["price", "freight_value"]].sum().sum(axis=1)
    revenue = bought["order_id"].map(value).fillna(0).sum()
    figures = answer["figures"]
    assert figures["Customers"] == bought["customer_unique_id"].nunique()
    assert figures["Orders"] == len(bought)
    assert figures["Revenue"] == pytest.approx(revenue, rel=1e-9)
    assert answer["as_of"] == "2018-08-28"  # the sample's last day of normal volume
    for path in answer["charts"]:
        png = Path(path)
        assert png.is_file() and png.parent == tmp_path
        with Image.open(io.BytesIO(png.read_bytes())) as img:
            assert img.format == "PNG" and img.size[0] >= 800


@pytest.mark.parametrize("text", CONSOLE_COMMANDS)
def test_every_console_command_answers(store_url: str, tmp_path: Path, text: str) -> None:
    result = _invoke(store_url, "ask", "--out", str(tmp_path), text)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Sorry" not in result.output
    if text != "/pulse-help":
        assert re.search(r"as of \d{4}-\d{2}-\d{2}", result.output)


@pytest.mark.parametrize(("text", "needle"), [
    ("/kpis atlantis", "don't know the place"),
    ("/kpis sao paolo", "São Paulo"),
    ("/churn-risk top many", "whole number"),
    ("/segmnts", "/segments"),
    ("/ltv SP", "compares states or regions"),
])
def test_bad_input_gets_a_clear_reply(store_url: str, tmp_path: Path, text: str, needle: str) -> None:
    result = _invoke(store_url, "ask", "--out", str(tmp_path), text)
    assert result.exit_code == 1
    assert needle in result.output and "Traceback" not in result.output


def test_console_reads_commands_until_eof(store_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", store_url, "console", "--out", str(tmp_path)],
                                input="/kpis RJ\n/nope\nexit\n")
    assert result.exit_code == 0
    assert "Rio de Janeiro (RJ)" in result.output and "don't know the command" in result.output


def test_export_segments_files(store_url: str, tmp_path: Path) -> None:
    result = _invoke(store_url, "export-segments", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    profiles = pd.read_csv(tmp_path / "cluster_profiles.csv")
    summary = pd.read_csv(tmp_path / "cluster_summary.csv")
    assert profiles["customer_id"].is_unique
    assert set(profiles["tier"]) <= {"Low", "Mid", "High"}
    assert summary["customers"].sum() == len(profiles)
    assert set(profiles["cluster"]) == set(summary["cluster"])


def test_db_info(store_url: str) -> None:
    result = _invoke(store_url, "db", "info")
    assert result.exit_code == 0
    assert re.search(r"orders\s+9,928", result.output)
    assert "as of: 2018-08-28" in result.output


def test_refresh_pre_renders_answers_and_ask_serves_them(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from bot.answer_cache import AnswerCache, same_answer
    from bot.router import Router
    from bot.settings import Settings
    from storage import schema
    from storage.store import open_store

    url = sample_store_url(tmp_path)
    result = _invoke(url, "refresh", "--warm", "defaults")
    assert result.exit_code == 0, result.output
    assert re.search(r"answers pre-rendered: \d+ new", result.output), result.output
    assert "read: full (no snapshot yet)" in result.output
    engine = open_store(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(schema.answer_cache)).scalar()
        assert stored >= 15
        router = Router(engine, Settings(database_url=url))
        cached = AnswerCache(router)
        key = cached.key_for("/churn-risk SP top 20")
        assert cached.contains(key) and same_answer(cached.lookup(key), router.handle("/churn-risk SP top 20"))
        out = tmp_path / "out"
        asked = _invoke(url, "ask", "--format", "json", "--out", str(out), "/churn-risk SP top 20")
        assert asked.exit_code == 0
        shown, fresh = json.loads(asked.output), router.handle("/churn-risk SP top 20")
        expected = json.loads(json.dumps(fresh.to_json(), default=str))
        assert {k: v for k, v in shown.items() if k != "charts"} == \
            {k: v for k, v in expected.items() if k != "charts"}
        assert [Path(p).read_bytes() for p in shown["charts"]] == [c.png for c in fresh.charts]
    finally:
        engine.dispose()
    bad = CliRunner().invoke(cli, ["--db", url, "refresh", "--warm", "some"])
    assert bad.exit_code != 0 and "some" in bad.output
    again = _invoke(url, "refresh", "--warm", "none")  # nothing loaded since: nothing read
    assert "read: incremental (0 orders touched by loads after run" in again.output, again.output
    whole = _invoke(url, "refresh", "--warm", "none", "--full")
    assert "read: full (a full read was asked for)" in whole.output, whole.output
