"""Plain-language mentions and DMs become the command texts the router takes."""

from __future__ import annotations

import pytest

from bot.mentions import KEYWORDS, clean, find_place, mention_to_command


@pytest.mark.parametrize(("text", "expected"), [
    ("<@U0PULSEBOT> churn risk in Rio de Janeiro", "/churn-risk rio de janeiro"),
    ("segments in the south", "/segments sul"),
    ("<@U0PULSEBOT|retail-pulse> top 20 at-risk customers in SP", "/churn-risk SP top 20"),
    ("late deliveries in the northeast", "/delivery nordeste"),
    ("how are installments used in Rio Grande do Norte?", "/payments rio grande do norte"),
    ("clusters in Mato Grosso do Sul", "/segments clusters mato grosso do sul"),
    ("RFM segments for MG", "/segments rfm MG"),
    ("cohort retention in the center-west", "/cohorts centro-oeste"),
    ("lifetime value in são paulo", "/ltv sao paulo"),
    ("What was our revenue?", "/finance"),
    ("give me the overview", "/kpis"),
    ("KPIs", "/kpis"),
    ("segment migration in Sul", "/migration sul"),
    ("how did segments migrate over the last 8 weeks in SP?", "/migration SP weeks 8"),
    ("how good is the churn model", "/model"),
    ("export the at-risk customers in Paraná", "/export-at-risk parana"),
    ("export the top 50 at-risk customers in SP", "/export-at-risk SP limit 50"),
    ("help", "/pulse-help"),
    ("what can you do?", "/pulse-help"),
    # Non-Brazilian data: a capitalised place after "in"/"for" is passed on.
    ("LTV for United Kingdom", "/ltv United Kingdom"),
    ("revenue in March", "/finance"),
    ("export at-risk list in CSV", "/export-at-risk"),
    # A command typed after the mention goes through as it is.
    ("<@U0PULSEBOT>   /churn-risk SP top 10", "/churn-risk SP top 10"),
])
def test_mentions_map_to_commands(text: str, expected: str) -> None:
    assert mention_to_command(text) == expected


@pytest.mark.parametrize("text", ["", "<@U0PULSEBOT>", "hello there", "thanks!", "🙂", "good morning"])
def test_what_cannot_be_mapped_is_none(text: str) -> None:
    assert mention_to_command(text) is None


def test_lowercase_two_letter_words_are_not_state_codes() -> None:
    # "to", "se", "pa" are Tocantins, Sergipe, Pará only when typed as codes.
    assert mention_to_command("segments to see") == "/segments"
    assert mention_to_command("segments TO") == "/segments TO"


def test_longest_place_name_wins() -> None:
    assert find_place("rio grande do sul") == "rio grande do sul"
    assert find_place("in the south east") == "sudeste"
    assert find_place("nothing here") is None


def test_top_only_for_commands_that_take_it() -> None:
    assert mention_to_command("top 5 kpis") == "/kpis"
    assert mention_to_command("churn risk, first 15 in SP") == "/churn-risk SP top 15"


def test_clean_strips_slack_markup() -> None:
    assert clean("<@U1> look at <https://x.io|this> &amp; <#C1|general>") == "look at this &"


def test_every_keyword_command_is_known_to_the_manifest() -> None:
    # Every command a mention can produce is one the Slack app declares.
    from pathlib import Path

    manifest = (Path(__file__).resolve().parents[1] / "config" / "slack-manifest.yml").read_text()
    for name, _ in KEYWORDS:
        assert f"command: /{name}\n" in manifest, name
