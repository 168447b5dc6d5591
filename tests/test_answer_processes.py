"""Cacheable answers computed by worker processes (bot/answer_processes.py): the same
answers as the router's own, at a lower CPU priority, without the Slack secrets, and
computed on the caller's thread again when the workers cannot give them."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete

from bot.answer_cache import AnswerCache, same_answer
from bot.answer_processes import WORKER_NICENESS, AnswerProcesses, store_url
from bot.router import Command, Requester, Router
from bot.settings import Settings
from storage import schema

TEXTS = ("/kpis SP", "/delivery RJ", "/churn-risk MG top 5", "/segments rfm sudeste", "/kpis XX")


@pytest.fixture(scope="module")
def settings(sample_engine: Engine) -> Settings:
    return Settings(database_url=str(sample_engine.url), slack_bot_token="xoxb-not-for-workers",
                    slack_signing_secret="not-for-workers-either")


@pytest.fixture(scope="module")
def processes(sample_engine: Engine, settings: Settings) -> Iterator[AnswerProcesses]:
    pool = AnswerProcesses(sample_engine, settings, processes=2)
    pool.start()
    yield pool
    pool.shutdown()


def _command(router: Router, text: str) -> Command:
    command = router.resolve(text)[1]
    assert command is not None and command.cacheable
    return command


def test_workers_give_the_routers_answers(processes: AnswerProcesses, sample_engine: Engine,
                                          settings: Settings) -> None:
    router = Router(sample_engine, settings)
    before = processes.answered
    answers = []
    for text in TEXTS:
        got = processes.compute(_command(router, text), text)
        assert got is not None, text
        expected = router.handle(text, Requester("U1", "C1", "slack"))
        assert same_answer(got, expected), text
        answers.append(got)
    assert processes.answered == before + len(TEXTS)
    pngs = [c.png for a in answers[:3] for c in a.charts]  # the charts came across too
    assert pngs and all(p.startswith(b"\x89PNG") for p in pngs)
    assert answers[-1].is_error  # so did the friendly error about an unknown place


def test_workers_start_below_this_process_and_without_secrets(processes: AnswerProcesses) -> None:
    pids = processes.wait_ready(timeout=120)
    assert len(pids) == 2 and os.getpid() not in pids
    assert processes.settings.slack_bot_token is None and processes.settings.slack_signing_secret is None
    if sys.platform.startswith("linux"):
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert mine < WORKER_NICENESS  # this test process is not lowered with them
        assert all(os.getpriority(os.PRIO_PROCESS, pid) == WORKER_NICENESS for pid in pids)


def test_a_dead_worker_is_replaced(sample_engine: Engine, settings: Settings) -> None:
    pool = AnswerProcesses(sample_engine, settings, processes=1)
    router = Router(sample_engine, settings)
    command = _command(router, "/kpis")
    try:
        (pid,) = pool.wait_ready(timeout=120)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        answers = [pool.compute(command, "/kpis") for _ in range(2)]
        assert answers[0] is None  # the caller computes this one itself
        assert answers[1] is not None and same_answer(answers[1], router.handle("/kpis"))
        assert pid not in pool.wait_ready(timeout=120)
    finally:
        pool.shutdown()


def test_a_miss_is_computed_by_a_worker_and_kept(processes: AnswerProcesses, sample_engine: Engine,
                                                 settings: Settings) -> None:
    router = Router(sample_engine, settings)
    cache = AnswerCache(router)
    cache.processes = processes
    text = "/delivery sul"
    key = cache.key_for(text)
    assert key is not None
    with sample_engine.begin() as conn:  # nothing pre-rendered: a miss
        conn.execute(delete(schema.answer_cache).where(schema.answer_cache.c.cache_key == key.key))
    assert not cache.contains(key)
    before = processes.answered
    got = cache.handle(text)
    assert processes.answered == before + 1
    assert same_answer(got, router.handle(text))
    assert cache.contains(key)  # stored for the next asker


def test_what_workers_cannot_answer_is_left_to_the_caller(processes: AnswerProcesses,
                                                          sample_engine: Engine, settings: Settings) -> None:
    router = Router(sample_engine, settings)
    # a command added to this router only: the workers' routers do not have it
    extra = Command("extra", "/extra", "test only", ("/extra",), lambda ctx, args: router.handle("/kpis"),
                    cacheable=True)
    assert processes.compute(extra, "/extra") is None
    memory = create_engine("sqlite://")
    assert store_url(memory) is None
    assert not AnswerProcesses(memory, settings).usable
    assert AnswerProcesses(memory, settings).compute(_command(router, "/kpis"), "/kpis") is None
    memory.dispose()


def test_a_process_that_stops_its_workers_exits_cleanly(sample_engine: Engine) -> None:
    import subprocess

    script = (
        "from sqlalchemy import create_engine\n"
        "from bot.answer_processes import AnswerProcesses\n"
        "from bot.router import Router\n"
        "from bot.settings import Settings\n"
        "if __name__ == '__main__':\n"
        f"    engine = create_engine({store_url(sample_engine)!r})\n"
        "    pool = AnswerProcesses(engine, Settings())\n"
        "    pool.start()\n"
        "    command = Router(engine, Settings()).resolve('/kpis')[1]\n"
        "    assert pool.compute(command, '/kpis') is not None\n"
        "    pool.shutdown()\n"
        "    print('stopped')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "stopped"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]


def test_the_warmer_renders_with_the_bots_processes(processes: AnswerProcesses, sample_engine: Engine,
                                                    settings: Settings) -> None:
    from bot.answer_cache import Warmer

    texts = ["/cohorts", "/payments SP"]
    warmer = Warmer(sample_engine, settings, texts=texts, processes=processes)
    keys = [warmer.cache.key_for(t) for t in texts]
    with sample_engine.begin() as conn:
        conn.execute(delete(schema.answer_cache).where(schema.answer_cache.c.cache_key.in_([k.key for k in keys])))
    before = processes.answered
    report = warmer.check()
    assert report is not None and report.rendered == len(texts)
    assert processes.answered == before + len(texts)
    router = Router(sample_engine, settings)
    for text, key in zip(texts, keys, strict=True):
        assert same_answer(warmer.cache.lookup(key), router.handle(text))
