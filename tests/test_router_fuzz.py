"""Property tests: whatever people type, the router answers (help, error or an answer),
never raises, and every answer renders into blocks Slack accepts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_emulator import validate_blocks
from sqlalchemy import Engine

from bot.answers import Answer
from bot.blocks import MAX_FALLBACK_TEXT, answer_blocks, fallback_text
from bot.commands import COMMANDS
from bot.mentions import EXAMPLES, mention_to_command
from bot.router import Requester, Router
from bot.settings import Settings
from storage.geography import BR_STATES, REGION_ALIASES

KINDS = {"answer", "help", "error"}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def router(sample_engine: Engine) -> Router:
    return Router(sample_engine, Settings(export_allowed_users=("U0ALICE01",)))


NAMES = sorted({c.name for c in COMMANDS} | {a for c in COMMANDS for a in c.aliases}
               | {"kpis", "segments", "cohorts", "ltv", "delivery", "payments", "finance",
                  "churn-risk", "export-at-risk", "migration", "model", "pulse"})
PLACES = [*BR_STATES, *(n for n, _ in BR_STATES.values()), *REGION_ALIASES, "all", "Atlantis"]
WORDS = ["top", "rfm", "clusters", "min-prob", "month", "week", "=", "'", '"', "--", "0", "-1",
         "1e309", "nan", "20", "100000000", "70%", "é", "\u200b", "\x00", "`", "*", "<@U1>"]

arg = st.one_of(st.sampled_from(PLACES), st.sampled_from(WORDS),
                st.integers(-10**6, 10**9).map(str), st.text(max_size=12))
command_text = st.builds(
    lambda slash, name, args, sep: (slash + name + sep + sep.join(args)),
    st.sampled_from(["/", "", "/pulse "]), st.sampled_from(NAMES),
    st.lists(arg, max_size=6), st.sampled_from([" ", "  ", "\t"]))
requester = st.builds(Requester, st.sampled_from([None, "U0ALICE01", "U0BOB0001"]),
                      st.sampled_from([None, "C0GENERAL", "D0ALICE01"]), st.just("slack"))


def check(answer: Answer) -> None:
    assert isinstance(answer, Answer)
    assert answer.kind in KINDS
    if answer.is_error:
        assert answer.summary
    blocks = answer_blocks(answer, asked_by="U0ALICE01", asked=answer.command)
    assert validate_blocks(blocks) == [], answer
    assert 0 < len(fallback_text(answer)) <= MAX_FALLBACK_TEXT


@FUZZ
@given(text=command_text, who=requester)
def test_command_like_texts_always_get_an_answer(router: Router, text: str, who: Requester) -> None:
    check(router.handle(text, who))


@FUZZ
@given(text=st.text(max_size=200))
def test_arbitrary_texts_always_get_an_answer(router: Router, text: str) -> None:
    check(router.handle(text))


@settings(FUZZ, max_examples=60)  # mapped mentions run real analytics: fewer, dearer examples
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.sampled_from(
                          ["churn", "risk", "segments", "in", "the", "south", "Rio", "de",
                           "Janeiro", "SP", "top", "20", "export", "late", "deliveries", "kpis",
                           "help", "United", "Kingdom", "<@U0PULSEBOT>", "/kpis", "rfm", "ltv",
                           "cohorts", "payments", "revenue", "migration", "model"]),
                          max_size=10).map(" ".join)))
def test_mentions_map_to_a_command_or_nothing(router: Router, text: str) -> None:
    command = mention_to_command(text)
    if command is None:
        return
    assert command.startswith("/")
    check(router.handle(command, Requester("U0ALICE01", "C0GENERAL", "slack")))


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_we_suggest_are_understood(router: Router, example: str) -> None:
    command = mention_to_command(example)
    assert command is not None
    check(router.handle(command))
