"""The digest as data, as Block Kit, as Markdown + PNG files, and the on-demand commands.

Expected figures are computed here with plain pandas from the raw sample CSVs
(storage/sample), not with the analytics code under test.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import new_store
from digest_fixtures import (
    AS_OF,
    GENERAL,
    LAST_WEEK_FACTOR,
    SEGMENT_ORDER,
    TOKEN,
    churn_rule,
    digest_store,
    emulator_channels,
    sample_purchases,
    segments_by_hand,
    slack_settings,
)
from PIL import Image
from slack_emulator import SlackEmulator, validate_blocks

from bot.answers import fmt_int, fmt_money
from bot.digest import Digest, build_digest, digest_blocks
from bot.router import Requester, Router
from bot.settings import Settings

SETTINGS = Settings(as_of=AS_OF.isoformat())
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):  # noqa: ANN201
    engine, url = digest_store(tmp_path_factory.mktemp("digest"))
    yield engine, url
    engine.dispose()


@pytest.fixture(scope="module")
def digest(shop) -> Digest:  # noqa: ANN001
    return build_digest(shop[0], SETTINGS, "")


def _window(p: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    return p[(p["purchased_at"] >= pd.Timestamp(start)) & (p["purchased_at"] < pd.Timestamp(end + DAY))]


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + f"{x * 100:.1f}%"


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%" if abs(x) < 0.01 else f"{x * 100:.1f}%"


def test_kpis_equal_the_raw_data(digest) -> None:  # noqa: ANN001
    p = sample_purchases()
    p = p[p["purchased_at"] < pd.Timestamp(AS_OF + DAY)]
    first = p.groupby("person")["purchased_at"].min()

    def kpis(start: dt.date, end: dt.date) -> dict[str, float]:
        w = _window(p, start, end)
        new = ((first >= pd.Timestamp(start)) & (first < pd.Timestamp(end + DAY))).sum()
        return {"Revenue": w["revenue"].sum(), "Orders": len(w), "Customers who bought": w["person"].nunique(),
                "New customers": new, "Average order value": w["revenue"].sum() / len(w)}

    week = kpis(AS_OF - 6 * DAY, AS_OF)
    prev = kpis(AS_OF - 13 * DAY, AS_OF - 7 * DAY)
    month = kpis(AS_OF - 27 * DAY, AS_OF)
    prev_month = kpis(AS_OF - 55 * DAY, AS_OF - 28 * DAY)
    section = digest.section("kpis")
    assert week["Orders"] > 20  # a real week, not an empty one
    for label, value in week.items():
        fig = section.figure(label)
        assert fig.raw == pytest.approx(value)
        money = label in ("Revenue", "Average order value")
        assert fig.value.startswith(fmt_money(value) if money else fmt_int(value))
        assert f"WoW {_signed(value / prev[label] - 1)}" in fig.value
        assert f"MoM {_signed(month[label] / prev_month[label] - 1)}" in fig.value
    wow = week["Revenue"] / prev["Revenue"] - 1
    assert f"{'rose' if wow > 0 else 'fell'} {abs(wow) * 100:.1f}% week over week" in section.insight


def test_cohort_retention_equals_the_raw_data(digest) -> None:  # noqa: ANN001
    p = sample_purchases()
    p = p[p["purchased_at"] < pd.Timestamp(AS_OF + DAY)]
    month = p["purchased_at"].dt.to_period("M")
    cohort = month.groupby(p["person"]).transform("min")
    k = (month - cohort).map(lambda d: d.n)

    def m1(label: str) -> float:
        members = p.loc[cohort == pd.Period(label, "M"), "person"].unique()
        again = p.loc[(cohort == pd.Period(label, "M")) & (k == 1), "person"].nunique()
        return again / len(members)

    # as of Aug 29 August is partial, so July is the last complete month: June is the latest
    # cohort whose first month after (July) is complete
    section = digest.section("cohorts")
    latest, before = section.figure("M1 retention, latest cohort"), section.figure("M1 retention, cohort before")
    assert latest.value.endswith("(2018-06)") and before.value.endswith("(2018-05)")
    assert latest.raw == pytest.approx(m1("2018-06"))
    assert before.raw == pytest.approx(m1("2018-05"))
    assert latest.value.startswith(_pct(m1("2018-06")))
    verb = "rose" if m1("2018-06") > m1("2018-05") else "fell"
    assert f"M1 retention {verb} from {_pct(m1('2018-05'))} to {_pct(m1('2018-06'))}" in section.insight
    # the average M1 over every cohort whose M1 has ended (size-weighted = pooled)
    done = cohort <= pd.Period("2018-06", "M")
    pooled = (p.loc[done & (k == 1), "person"].nunique()) / p.loc[done, "person"].nunique()
    assert section.figure("Average M1 retention").raw == pytest.approx(pooled)


def test_churn_figures_equal_the_raw_data(digest) -> None:  # noqa: ANN001
    p = sample_purchases()
    p = p[p["purchased_at"] < pd.Timestamp(AS_OF + DAY)]
    per = p.groupby("person").agg(revenue=("revenue", "sum"), last=("purchased_at", "max"))
    recency = (pd.Timestamp(AS_OF) - per["last"].dt.normalize()).dt.days
    scores = churn_rule(recency, per["revenue"])
    high = scores["risk_band"] == "high"
    section = digest.section("churn")
    assert section.figure("Customers at risk").raw == int(high.sum())
    assert section.figure("Customers at risk").value == f"{high.sum():,} of {len(per):,}"
    revenue = float(scores.loc[high, "value_at_risk"].sum())
    assert section.figure("Revenue at risk").raw == pytest.approx(revenue)
    # last week's recorded figure was LAST_WEEK_FACTOR of this week's
    change = section.figure("Change vs last week")
    assert change.raw == pytest.approx(1 / LAST_WEEK_FACTOR - 1)
    assert change.value.startswith("+25.0% revenue · +100 customers")
    assert "rose 25.0% on last week" in section.insight
    assert section.buttons[0].command == "/export-at-risk"
    assert section.chart is not None


def test_migration_figures_equal_the_raw_data(digest) -> None:  # noqa: ANN001
    p = sample_purchases()
    before = segments_by_hand(p, AS_OF - 7 * DAY)["segment"]
    after = segments_by_hand(p, AS_OF)["segment"]
    both = pd.concat({"before": before, "after": after}, axis=1)
    rank = {name: i for i, name in enumerate(SEGMENT_ORDER)}
    old = both.dropna()
    rb, ra = old["before"].map(rank), old["after"].map(rank)
    section = digest.section("migration")
    assert section.figure("Moved up a segment").raw == int((ra < rb).sum())
    assert section.figure("Moved down a segment").raw == int((ra > rb).sum())
    assert section.figure("Arrived as new customers").raw == int(both["before"].isna().sum())
    assert section.figure("Stayed in their segment").raw == int((ra == rb).sum())
    flows = old[old["before"] != old["after"]].value_counts().reset_index(name="n")
    top = flows.sort_values("n", ascending=False).iloc[0]
    assert section.lines[0].startswith(f"{top['n']:,} {top['before']} became {top['after']}")
    assert f"the biggest flow: {top['n']:,} {top['before']} became {top['after']}" in section.insight


def test_blocks_are_valid_and_hold_every_section(digest) -> None:  # noqa: ANN001
    blocks = digest_blocks(digest)
    assert validate_blocks(blocks) == []
    assert blocks[0]["type"] == "header" and "week ending Aug 29, 2018" in blocks[0]["text"]["text"]
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    titles = [t.split("\n")[0] for t in texts if t.startswith("*")]
    assert titles == ["*Headline KPIs*", "*Cohort retention*", "*Churn risk*", "*Segment migration*"]
    fields = {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1]
              for b in blocks if b["type"] == "section" for f in b.get("fields", [])}
    for section in digest.sections:
        for fig in section.figures:
            assert fields[fig.label] == fig.value.replace("&", "&amp;")
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert actions["elements"][0]["value"] == "/export-at-risk"
    assert len(digest.charts) == 3


def test_pulse_digest_out_writes_markdown_and_pngs(shop, digest, tmp_path) -> None:  # noqa: ANN001
    from bot.cli import cli

    engine, url = shop
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["--db", url, "digest", "--out", str(out), "--as-of", "2018-08-29"])
    assert result.exit_code == 0, result.output
    md_path = out / "digest-2018-08-29.md"
    md = md_path.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings == ["Headline KPIs", "Cohort retention", "Churn risk", "Segment migration"]
    assert md.startswith("# Weekly digest — week ending Aug 29, 2018")
    # the same digest as the Slack message: every figure and insight is in the Markdown
    for section in digest.sections:
        assert section.insight in md
        for fig in section.figures:
            assert f"- **{fig.label}**: {fig.value}" in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(images) == sorted(f"digest-2018-08-29-{n}.png" for n in ("cohorts", "churn", "migration"))
    for name in images:
        data = (out / name).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and img.size == (1200, 700)
            assert np.asarray(img.convert("L")).std() > 5  # not a blank picture
    assert "| Revenue |" in md  # the KPI table


def test_sections_say_why_when_data_is_missing(tmp_path) -> None:
    from analytics_data import Shop

    engine = new_store(tmp_path, "small.db")
    Shop(engine).customer("a").customer("b", "RJ") \
        .order("o1", "a", "2024-01-02 10:00", [("x", 50.0, 5.0)]) \
        .order("o2", "b", "2024-01-20 10:00", [("x", 30.0, 5.0)])
    d = build_digest(engine, SETTINGS, "", as_of=dt.date(2024, 1, 21))
    assert d.section("kpis").figure("Orders").raw == 1
    assert "pulse refresh" in d.section("churn").unavailable
    assert "pulse backfill" in d.section("migration").unavailable
    assert [c.name for c in d.charts] == ["cohorts"]
    assert validate_blocks(digest_blocks(d)) == []
    engine.dispose()


# --- the commands -----------------------------------------------------------------------------


def test_migration_command_matches_the_digest(shop, digest) -> None:  # noqa: ANN001
    router = Router(shop[0], SETTINGS)
    answer = router.handle("/migration weeks 1")
    assert not answer.is_error, answer.summary
    figs = {f.label: f.raw for f in answer.figures}
    section = digest.section("migration")
    assert figs["Moved up"] == section.figure("Moved up a segment").raw
    assert figs["Moved down"] == section.figure("Moved down a segment").raw
    assert figs["New customers"] == section.figure("Arrived as new customers").raw
    assert len(answer.charts) == 1 and answer.charts[0].png.startswith(b"\x89PNG")
    assert answer.as_of == AS_OF and "2018-08-22 → 2018-08-29" in answer.as_of_note

    sp = router.handle("/migration weeks=2 são paulo")
    assert not sp.is_error and sp.filter_label == "São Paulo (SP)"
    assert sum(f.raw for f in sp.figures if f.label == "Customers now") < figs["Customers now"]

    missing = router.handle("/migration weeks 9")
    assert missing.is_error and "pulse backfill" in missing.summary
    bad = router.handle("/migration weeks lots")
    assert bad.is_error and "whole number" in bad.summary


def test_pulse_digest_in_the_console_shows_it(shop) -> None:  # noqa: ANN001
    answer = Router(shop[0], SETTINGS).handle("/pulse digest")
    assert not answer.is_error
    assert answer.title.startswith("Weekly digest") and len(answer.charts) == 3


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator(token=TOKEN, channels=emulator_channels()) as emulator:
        yield emulator


def test_pulse_digest_posts_for_allowlisted_people_only(tmp_path, emu) -> None:  # noqa: ANN001
    engine, _ = digest_store(tmp_path)
    router = Router(engine, slack_settings(emu.base_url))
    refused = router.handle("/pulse digest", Requester("U0BOB0001", GENERAL, "slack"))
    assert refused.is_error and "allowlist" in refused.summary
    assert emu.messages() == []

    posted = router.handle("/pulse digest", Requester("U0ALICE01", GENERAL, "slack"))
    assert not posted.is_error and "Posted the digest" in posted.summary
    assert len(emu.messages(GENERAL)) == 1 and len(emu.uploads(GENERAL)) == 3
    again = router.handle("/pulse digest", Requester("U0ALICE01", GENERAL, "slack"))
    assert "not posted again" in again.summary and "already posted" in again.summary
    assert len(emu.messages(GENERAL)) == 1
    engine.dispose()
