"""The pre-rendered answer cache: a cached answer is the router's answer, a refresh
invalidates it, a miss still answers (and is kept), and bot instances share the store's
entries — on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_store import sample_store
from sqlalchemy import Engine, func, select

from bot.answer_cache import (
    AnswerCache,
    NotCacheable,
    Warmer,
    decode_answer,
    encode_answer,
    same_answer,
    warm_texts,
)
from bot.answers import Answer, Button, Chart, Figure, Table
from bot.blocks import answer_blocks
from bot.router import Command, Router
from bot.settings import Settings
from storage import schema
from storage.store import open_store

SOME = ["/kpis", "/segments rfm SP", "/churn-risk SP top 20", "/cohorts weekly", "/model"]


@pytest.fixture(scope="module")
def warmed(sample_engine: Engine) -> AnswerCache:
    cache = AnswerCache(Router(sample_engine, Settings()))
    report = cache.warm(SOME)
    assert report.rendered + report.already == len(SOME), report
    return cache


def rows(engine: Engine, version: str | None = None) -> int:
    t = schema.answer_cache
    stmt = select(func.count()).select_from(t)
    if version is not None:
        stmt = stmt.where(t.c.version == version)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar())


def _same_for_people(a: Answer, b: Answer) -> None:
    """What Slack and scripts get is the same: blocks, JSON and every chart's bytes."""
    assert answer_blocks(a, asked_by="U1", asked="x") == answer_blocks(b, asked_by="U1", asked="x")
    assert a.to_json() == b.to_json()
    assert [c.png for c in a.charts] == [c.png for c in b.charts]


# --- identical to the router's answer -------------------------------------------------------------


@pytest.mark.parametrize("text", SOME)
def test_cached_answer_is_the_computed_one(warmed: AnswerCache, text: str) -> None:
    key = warmed.key_for(text)
    warmed._memory.clear()  # read back from the store, not from memory
    cached = warmed.lookup(key)
    assert cached is not None
    fresh = warmed.router.handle(text)
    assert not fresh.is_error
    assert same_answer(cached, fresh)
    _same_for_people(cached, fresh)
    if text != "/model":
        assert cached.charts  # the renders are what the cache saves


def test_a_fresh_bot_instance_serves_the_stored_answer(warmed: AnswerCache, sample_engine: Engine) -> None:
    other_engine = open_store(str(sample_engine.url))
    try:
        other = AnswerCache(Router(other_engine, Settings()))
        key = other.key_for("/kpis")
        assert key == warmed.key_for("/kpis")
        served = other.lookup(key)
        assert served is not None and same_answer(served, warmed.router.handle("/kpis"))
    finally:
        other_engine.dispose()


@pytest.mark.parametrize("variant", ["/kpis sp", "/pulse kpis SP", "/overview  Sp", "kpis SP"])
def test_spellings_of_one_command_share_an_entry(warmed: AnswerCache, variant: str) -> None:
    assert warmed.key_for(variant) == warmed.key_for("/kpis SP")
    assert same_answer(warmed.handle(variant), warmed.router.handle(variant))


def test_quoted_words_stay_apart_in_the_key(warmed: AnswerCache) -> None:
    grouped = warmed.key_for("/churn-risk segment 'at risk'")
    split = warmed.key_for("/churn-risk segment at risk")
    assert grouped.key != split.key
    assert warmed.handle("/churn-risk segment at risk").is_error
    assert not warmed.handle("/churn-risk segment 'at risk'").is_error


def test_settings_that_change_answers_change_the_key(warmed: AnswerCache, sample_engine: Engine) -> None:
    dollars = AnswerCache(Router(sample_engine, Settings(currency="US$")))
    assert dollars.key_for("/kpis").key != warmed.key_for("/kpis").key
    answer = dollars.handle("/kpis")
    assert "US$" in answer.figures[2].value
    # who may export or where answers are posted does not change an answer
    other = AnswerCache(Router(sample_engine, Settings(export_allowed_users=("U1",), admin_channel="#ops")))
    assert other.key_for("/kpis").key == warmed.key_for("/kpis").key


SAMPLE_TEXTS = st.builds(
    lambda name, args: " ".join([name, *args]),
    st.sampled_from(["/kpis", "/segments", "/cohorts", "/delivery", "/churn-risk", "/ltv",
                     "/pulse payments", "/migration"]),
    st.lists(st.sampled_from(["SP", "sp", "rj", "São Paulo", "sao paulo", "sudeste", "Sul",
                              "weekly", "clusters", "top", "5", "segment", "champions",
                              "min-prob", "0.5", "weeks", "2", "region", "all", "'at risk'",
                              "Atlantis"]), max_size=3))


@pytest.mark.slow
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=SAMPLE_TEXTS)
def test_whatever_is_typed_the_cache_answers_as_the_router(warmed: AnswerCache, text: str) -> None:
    fresh = warmed.router.handle(text)
    served = warmed.handle(text)
    if fresh.is_error:
        assert served.is_error and served.summary.split("Reference")[0] == fresh.summary.split("Reference")[0]
    else:
        assert same_answer(served, fresh), text
        assert same_answer(warmed.handle(text), fresh)  # and again, now from the cache


# --- misses, errors, what is never cached -----------------------------------------------------


def test_a_miss_is_answered_and_kept(warmed: AnswerCache) -> None:
    # (a text SAMPLE_TEXTS cannot make: the property test above shares the cache)
    key = warmed.key_for("/delivery MG")
    assert key is not None and not warmed.contains(key)
    answer = warmed.handle("/delivery MG")
    assert not answer.is_error and answer.charts
    assert warmed.contains(key)
    assert same_answer(answer, warmed.router.handle("/delivery MG"))


def test_errors_exports_and_help_are_not_cached(warmed: AnswerCache, sample_engine: Engine) -> None:
    before = rows(sample_engine)
    error = warmed.handle("/kpis atlantis")
    assert error.is_error and "atlantis" in error.summary.lower()
    assert warmed.key_for("/export-at-risk SP") is None
    assert warmed.key_for("/pulse-help") is None
    assert warmed.key_for("/no-such-command") is None
    assert warmed.handle("/pulse-help").kind == "help"
    assert rows(sample_engine) == before


def test_an_answer_that_cannot_be_stored_exactly_is_served_but_not_kept(sample_engine: Engine) -> None:
    router = Router(sample_engine, Settings())
    odd = Answer(command="/odd", title="Odd", figures=[Figure("x", "1", object())])
    router.commands["odd"] = Command("odd", "/odd", "test", ("/odd",), lambda c, a: odd,
                                     cacheable=True)
    cache = AnswerCache(router)
    assert cache.handle("/odd") is odd
    assert not cache.contains(cache.key_for("/odd"))


# --- a refresh invalidates ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_refresh_invalidates_and_the_next_warm_up_removes_old_entries(
        tmp_path: Path) -> None:
    from analytics.refresh import refresh

    eng = sample_store(tmp_path)
    try:
        cache = AnswerCache(Router(eng, Settings()))
        cache.warm(["/kpis"])
        old_key = cache.key_for("/kpis")
        old = cache.lookup(old_key)
        assert old is not None
        earlier = old.as_of - dt.timedelta(days=60)
        refresh(eng, as_of=earlier, k=4, scorers=())
        new_key = cache.key_for("/kpis")
        assert new_key.version != old_key.version and new_key.key != old_key.key
        answer = cache.handle("/kpis")  # not the old entry: computed for the new data
        assert answer.as_of == earlier != old.as_of
        assert same_answer(answer, cache.router.handle("/kpis"))
        assert rows(eng, old_key.version) == 1
        report = cache.warm(["/kpis"])
        assert report.pruned == 1 and report.already == 1
        assert rows(eng, old_key.version) == 0
    finally:
        eng.dispose()


def test_the_warmer_warms_when_the_data_version_changes(tmp_path: Path) -> None:
    from storage.store import set_meta

    eng = sample_store(tmp_path)
    try:
        warmer = Warmer(eng, Settings(), texts=["/kpis", "/segments", "/delivery SP"])
        first = warmer.check()
        assert first is not None and first.rendered == 3
        assert warmer.check() is None  # nothing changed
        with eng.begin() as conn:
            set_meta(conn, "loaded_at", "2030-01-01T00:00:00")
        again = warmer.check()
        assert again is not None and again.pruned == 3 and again.rendered == 3
    finally:
        eng.dispose()


def test_warm_texts_cover_defaults_examples_and_places(sample_engine: Engine) -> None:
    router = Router(sample_engine, Settings())
    defaults = warm_texts(router, "defaults")
    assert "/kpis" in defaults and "/churn-risk SP top 20" in defaults
    assert not any(t.startswith(("/export-at-risk", "/pulse-help", "/digest")) for t in defaults)
    everything = warm_texts(router, "all")
    assert set(defaults) < set(everything)
    assert "/kpis RJ" in everything and "/churn-risk nordeste" in everything
    assert warm_texts(router, "none") == []
    with pytest.raises(ValueError):
        warm_texts(router, "some")


# --- the stored form, and sharing through the store (SQLite and PostgreSQL) ---------------------


def _chart_answer(n: int) -> Answer:
    from analytics.charts import bar_chart

    frame = pd.DataFrame({
        "name": ["a", "b", None], "count": np.array([1, 2, 3], dtype="int64"),
        "share": [0.5, np.nan, 0.25], "day": pd.to_datetime(["2018-01-01", None, "2018-03-01"]),
        "month": pd.PeriodIndex(["2018-01", "2018-02", "2018-03"], freq="M"),
        "date": [dt.date(2018, 1, 1), dt.date(2018, 1, 2), None],
    })
    png = bar_chart(pd.Series([n, 2, 3], index=["x", "y", "z"]), f"Chart {n}", "sub")
    return Answer(
        command="/demo", title="Demo", as_of=dt.date(2018, 8, 29), filter_label="all",
        summary=f"n = {n}",
        figures=[Figure("int", "1", np.int64(n)), Figure("float", "x", float("nan")),
                 Figure("ts", "t", pd.Timestamp("2018-01-01 10:00")), Figure("none", "–"),
                 Figure("period", "p", pd.Period("2018-02", freq="M")),
                 Figure("py", "y", [1, 2.5, "x", (dt.date(2018, 1, 1), None)])],
        tables=[Table("t", frame, note="n", formats={"share": "pct"}),
                Table("indexed", frame.set_index("name"))],
        charts=[Chart("c", "C", png)], notes=["a"], buttons=[Button("B", "/kpis", "b")])


def test_the_stored_form_round_trips_exactly() -> None:
    answer = _chart_answer(1)
    back = decode_answer(encode_answer(answer))
    assert same_answer(answer, back)
    assert isinstance(back.figures[0].raw, np.int64)
    assert back.tables[0].frame["month"].dtype == answer.tables[0].frame["month"].dtype
    assert not same_answer(answer, _chart_answer(2))
    with pytest.raises(NotCacheable):
        encode_answer(Answer(command="/x", title="x", figures=[Figure("o", "o", {1, 2})]))


def test_instances_share_entries_through_the_store(store_url: str) -> None:
    calls: list[int] = []

    def demo(ctx, args):  # noqa: ANN001, ANN202
        calls.append(1)
        return _chart_answer(len(args))

    def router_on(url: str) -> tuple[Router, Engine]:
        eng = open_store(url)
        router = Router(eng, Settings())
        router.commands["demo"] = Command("demo", "/demo", "t", ("/demo",), demo, cacheable=True)
        return router, eng

    (r1, e1), (r2, e2) = router_on(store_url), router_on(store_url)
    try:
        one, two = AnswerCache(r1), AnswerCache(r2)
        first = one.handle("/demo a b")
        assert len(calls) == 1
        served = two.handle("/demo A  B")
        assert len(calls) == 1  # the second instance did not compute it
        assert same_answer(served, first) and same_answer(served, _chart_answer(2))
        assert rows(e1) == 1
    finally:
        e1.dispose()
        e2.dispose()


def test_a_stopped_warmer_stops_between_renders(sample_engine: Engine) -> None:
    import time

    warmer = Warmer(sample_engine, Settings(currency="€")).start()  # its own keys: all to render
    time.sleep(0.5)
    started = time.perf_counter()
    warmer.stop(timeout=30)
    assert not warmer._thread.is_alive() and time.perf_counter() - started < 15
    assert warmer.warmed is None  # an interrupted warm-up is redone next time


def test_a_poked_warmer_warms_the_new_data_at_once(tmp_path: Path) -> None:
    import time

    from bot.answer_cache import poke_warmers
    from storage.store import set_meta

    eng = sample_store(tmp_path)
    warmer = Warmer(eng, Settings(), texts=["/payments"], interval_s=3600).start()
    try:
        deadline = time.monotonic() + 120
        while warmer.warmed is None and time.monotonic() < deadline:
            time.sleep(0.1)
        first = warmer.warmed
        assert first is not None
        with eng.begin() as conn:
            set_meta(conn, "refreshed_at", "2030-01-01T00:00:00")
        assert poke_warmers() >= 1
        while warmer.warmed == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert warmer.warmed not in (None, first)
        assert warmer.cache.contains(warmer.cache.key_for("/payments"))
    finally:
        warmer.stop(timeout=30)
        eng.dispose()


class _Rollback(Exception):
    pass


def test_an_answer_is_not_held_up_by_a_refresh_writing(sample_engine: Engine, tmp_path: Path) -> None:
    """A refresh replaces the scores in one transaction (on SQLite it holds the store's one
    write lock for all of it): an answer asked meanwhile comes at once, from the data as it
    was, and is kept once the store can take it."""
    engine = copy_store(sample_engine, tmp_path)
    try:
        cache, router = AnswerCache(Router(engine, Settings())), Router(engine, Settings())
        key = cache.key_for("/delivery RJ")
        assert key is not None and not cache.contains(key)
        held, release = threading.Event(), threading.Event()

        def write_like_a_refresh() -> None:
            try:
                with engine.begin() as conn:
                    conn.execute(schema.customer_scores.delete())
                    held.set()
                    release.wait(30)
                    raise _Rollback  # the store is left as it was
            except _Rollback:
                pass

        writer = threading.Thread(target=write_like_a_refresh)
        writer.start()
        try:
            assert held.wait(30)
            started = time.perf_counter()
            answer = cache.handle("/delivery RJ")
            waited = time.perf_counter() - started
            kept_meanwhile = cache.contains(key)
        finally:
            release.set()
            writer.join()
        assert waited < 10, f"the answer waited {waited:.1f} s for the refresh's write"
        assert not answer.is_error and same_answer(answer, router.handle("/delivery RJ"))
        # SQLite's write lock kept it out; PostgreSQL locks only the rows the refresh writes
        assert kept_meanwhile == (engine.dialect.name != "sqlite")
        again = cache.handle("/delivery RJ")
        assert same_answer(again, answer) and cache.contains(key)
    finally:
        engine.dispose()
