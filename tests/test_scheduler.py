"""The scheduler: APScheduler's own cron triggers, SQLAlchemy job store, coalescing and
misfire grace, driven by a fake clock.

How the clock is driven: `FakeClock.install` replaces `datetime` in exactly the two
APScheduler modules that read the time (`apscheduler.schedulers.base`, which computes
next run times and due jobs, and `apscheduler.executors.base`, which checks the misfire
grace). Nothing else is patched: the triggers, the job store in the SQLite file, the
coalescing and the misfire decisions are APScheduler's. A test moves the clock and calls
`scheduler.wakeup()` so the scheduler looks at its jobs again at once.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from click.testing import CliRunner
from digest_fixtures import (
    GENERAL,
    TOKEN,
    FakeClock,
    digest_store,
    emulator_channels,
    slack_settings,
)
from slack_emulator import SlackEmulator
from sqlalchemy import func, select

from bot.scheduler import (
    DIGEST_FUNC,
    REFRESH_FUNC,
    REFRESH_JOB,
    digest_job_id,
    start_scheduler,
)
from bot.settings import DigestSchedule
from bot.slack_io import make_web_client
from storage import schema
from storage.store import get_meta

SP = ZoneInfo("America/Sao_Paulo")
MONDAY_0859 = dt.datetime(2024, 1, 8, 8, 59, 58, tzinfo=SP)  # a Monday, 2 s before the digest


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator(token=TOKEN, channels=emulator_channels()) as emulator:
        yield emulator


@pytest.fixture
def store(tmp_path):
    engine, url = digest_store(tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock(MONDAY_0859)
    c.install(monkeypatch)
    return c


class Events:
    """Job events of one or more schedulers, collected thread-safely."""

    def __init__(self) -> None:
        self.items: list = []
        self._lock = threading.Lock()

    def __call__(self, event) -> None:  # noqa: ANN001
        with self._lock:
            self.items.append(event)

    def of(self, code: int, job_id: str | None = None) -> list:
        with self._lock:
            return [e for e in self.items if e.code == code and (job_id is None or e.job_id == job_id)]


def _start(settings, engine, emu, events: Events):  # noqa: ANN001, ANN202
    client = make_web_client(TOKEN, emu.base_url)
    scheduler = start_scheduler(settings, engine, client)
    scheduler.add_listener(events, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
                           | EVENT_JOB_MISSED)
    return scheduler


def _digest_id(settings) -> str:  # noqa: ANN001
    return digest_job_id(settings.digests[0])


def test_scheduled_digest_fires_on_the_clock(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url)
    events = Events()
    scheduler = _start(settings, store, emu, events)
    try:
        job = scheduler.get_job(_digest_id(settings))
        assert job.func_ref == DIGEST_FUNC
        assert job.kwargs == {"channel": GENERAL, "place_filter": "",
                              "database_url": store.url.render_as_string(hide_password=False)}
        assert job.next_run_time == dt.datetime(2024, 1, 8, 9, 0, tzinfo=SP)
        assert job.coalesce and job.misfire_grace_time == settings.misfire_grace_seconds
        scheduler.wakeup()
        assert not events.of(EVENT_JOB_SUBMITTED)  # 08:59:58: not yet

        clock.advance(seconds=3)
        scheduler.wakeup()
        emu.wait_for(lambda: events.of(EVENT_JOB_EXECUTED) or events.of(EVENT_JOB_ERROR), timeout=60)
        assert not events.of(EVENT_JOB_ERROR), events.of(EVENT_JOB_ERROR)[0].traceback
        [done] = events.of(EVENT_JOB_EXECUTED)
        assert done.scheduled_run_time == dt.datetime(2024, 1, 8, 9, 0, tzinfo=SP)
        assert "posted" in done.retval
        # the next run is a week later, in the configured timezone
        assert scheduler.get_job(_digest_id(settings)).next_run_time == dt.datetime(2024, 1, 15, 9, 0, tzinfo=SP)
    finally:
        scheduler.shutdown()
    [message] = emu.messages(GENERAL)
    text = " ".join(b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b)
    for title in ("Headline KPIs", "Cohort retention", "Churn risk", "Segment migration"):
        assert f"*{title}*" in text
    uploads = emu.uploads(GENERAL)
    assert len(uploads) == 3
    assert {u.thread_ts for u in uploads} == {message.ts}
    assert all(u.content.startswith(b"\x89PNG\r\n\x1a\n") for u in uploads)


def test_missed_weeks_post_one_digest_when_back(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url)
    events = Events()
    first = _start(settings, store, emu, events)
    first.shutdown()  # the bot goes down before Monday 09:00

    back = dt.datetime(2024, 1, 29, 9, 0, 10, tzinfo=SP)  # three weeks later, 10 s past 09:00
    clock.set(back)
    second = _start(settings, store, emu, events)
    try:
        emu.wait_for(lambda: events.of(EVENT_JOB_EXECUTED) or events.of(EVENT_JOB_ERROR), timeout=60)
        # give a (wrong) second run the chance to show up
        second.wakeup()
        emu.wait_for(lambda: len(emu.uploads(GENERAL)) >= 3, timeout=30)
        second.wakeup()
        threading.Event().wait(0.5)
        [submitted] = events.of(EVENT_JOB_SUBMITTED, _digest_id(settings))
        # four fire times were missed (Jan 8, 15, 22, 29); coalesce runs the latest once
        assert submitted.scheduled_run_times == [dt.datetime(2024, 1, 29, 9, 0, tzinfo=SP)]
        assert len(events.of(EVENT_JOB_EXECUTED, _digest_id(settings))) == 1
        assert not events.of(EVENT_JOB_MISSED)
        assert second.get_job(_digest_id(settings)).next_run_time == dt.datetime(2024, 2, 5, 9, 0, tzinfo=SP)
    finally:
        second.shutdown()
    assert len(emu.messages(GENERAL)) == 1
    assert len(emu.uploads(GENERAL)) == 3


def test_missed_beyond_the_grace_time_is_not_posted(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url, misfire_grace_seconds=3600)
    events = Events()
    _start(settings, store, emu, events).shutdown()
    clock.set(dt.datetime(2024, 1, 29, 10, 30, tzinfo=SP))  # latest miss 90 min ago > 60 min grace
    scheduler = _start(settings, store, emu, events)
    try:
        emu.wait_for(lambda: events.of(EVENT_JOB_MISSED), timeout=30)
        assert scheduler.get_job(_digest_id(settings)).next_run_time == dt.datetime(2024, 2, 5, 9, 0, tzinfo=SP)
    finally:
        scheduler.shutdown()
    assert not events.of(EVENT_JOB_EXECUTED, _digest_id(settings))
    assert emu.messages() == [] and emu.uploads() == []


def test_two_schedulers_on_one_database_post_one_digest(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url)
    events = Events()
    a = _start(settings, store, emu, events)
    b = _start(settings, store, emu, events)
    try:
        assert a.get_job(_digest_id(settings)).next_run_time == b.get_job(_digest_id(settings)).next_run_time
        clock.advance(seconds=3)
        a.wakeup()
        b.wakeup()
        emu.wait_for(lambda: len(emu.uploads(GENERAL)) >= 3, timeout=60)
        emu.wait_for(lambda: len(events.of(EVENT_JOB_EXECUTED) + events.of(EVENT_JOB_ERROR))
                     >= len(events.of(EVENT_JOB_SUBMITTED)), timeout=60)
        threading.Event().wait(0.5)
    finally:
        a.shutdown()
        b.shutdown()
    assert not events.of(EVENT_JOB_ERROR)
    assert len(emu.messages(GENERAL)) == 1
    assert len(emu.uploads(GENERAL)) == 3
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.digest_runs)).scalar() == 1


def test_restart_keeps_stored_jobs_and_applies_changed_settings(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url, digests=(
        DigestSchedule(GENERAL, "0 9 * * mon", "America/Sao_Paulo", ""),
        DigestSchedule("#sul-team", "30 8 * * fri", "America/Sao_Paulo", "sul"),
    ))
    events = Events()
    first = _start(settings, store, emu, events)
    ids = {j.id for j in first.get_jobs()}
    assert ids == {f"digest:{GENERAL}:", "digest:#sul-team:sul", REFRESH_JOB}
    assert first.get_job(REFRESH_JOB).func_ref == REFRESH_FUNC
    first.shutdown()

    # restart with one digest moved to another time and the other gone
    changed = slack_settings(emu.base_url, digests=(
        DigestSchedule(GENERAL, "0 10 * * tue", "Europe/London", ""),))
    second = _start(changed, store, emu, events)
    try:
        assert {j.id for j in second.get_jobs()} == {f"digest:{GENERAL}:", REFRESH_JOB}
        job = second.get_job(f"digest:{GENERAL}:")
        assert job.next_run_time == dt.datetime(2024, 1, 9, 10, 0, tzinfo=ZoneInfo("Europe/London"))
        assert job.kwargs["place_filter"] == ""
    finally:
        second.shutdown()


def test_refresh_job_runs_at_its_time(store, emu, clock) -> None:
    settings = slack_settings(emu.base_url, refresh_cron="0 3 * * *")
    clock.set(dt.datetime(2024, 1, 9, 2, 59, 59, tzinfo=SP))
    before = get_meta(store, "refreshed_at")
    events = Events()
    scheduler = _start(settings, store, emu, events)
    try:
        clock.advance(seconds=2)
        scheduler.wakeup()
        emu.wait_for(lambda: events.of(EVENT_JOB_EXECUTED, REFRESH_JOB) or events.of(EVENT_JOB_ERROR),
                     timeout=120)
        assert not events.of(EVENT_JOB_ERROR), events.of(EVENT_JOB_ERROR)[0].traceback
    finally:
        scheduler.shutdown()
    assert get_meta(store, "refreshed_at") != before
    from bot import scheduler as jobs

    assert jobs.LAST_REFRESH_PID not in (None, os.getpid())  # in a process of its own
    assert get_meta(store, "as_of")["date"] == "2018-08-29"
    with store.connect() as conn:  # the churn scorer ran: every customer has a probability
        scored = conn.execute(select(func.count()).where(
            schema.customer_scores.c.churn_prob.is_not(None))).scalar()
        total = conn.execute(select(func.count()).select_from(schema.customer_scores)).scalar()
    assert scored == total > 9000
    # and the week's risk figures were noted for next week's digest to compare with
    assert "2018-08-29" in get_meta(store, "risk_history:all:")
    assert emu.messages() == []  # the refresh posts nothing


def test_schedule_list_shows_next_runs_in_the_configured_timezone(store, tmp_path) -> None:
    from bot.cli import cli

    config = tmp_path / "pulse.toml"
    config.write_text(
        '[digest]\nrefresh_cron = "15 2 * * *"\n\n'
        '[[digest.schedules]]\nchannel = "#tokyo"\ncron = "0 9 * * mon"\ntimezone = "Asia/Tokyo"\n'
        'filter = ""\n', encoding="utf-8")
    url = store.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["--config", str(config), "--db", url, "schedule", "list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:3]}
    assert "0 9 * * mon" in lines["digest:#tokyo:"]
    assert "09:00 JST (Asia/Tokyo)" in lines["digest:#tokyo:"]
    assert "02:15 JST (Asia/Tokyo)" in lines["refresh"]  # the refresh uses the digest's timezone
    assert "not started yet" in lines["refresh"]

    # once a scheduler has stored the jobs, the stored next run is shown
    from bot.scheduler import start_scheduler
    from bot.settings import load_settings

    settings = load_settings(config, env={}, dotenv=None)
    scheduler = start_scheduler(settings, store, None)
    scheduler.shutdown()
    result = CliRunner().invoke(cli, ["--config", str(config), "--db", url, "schedule", "list"])
    assert result.exit_code == 0, result.output
    assert "not started" not in result.output
    assert "09:00 JST (Asia/Tokyo)" in result.output


def test_pulse_run_starts_the_scheduler_next_to_the_bot(store, emu) -> None:
    from types import SimpleNamespace

    from bot.server import scheduled_jobs

    settings = slack_settings(emu.base_url)
    app = SimpleNamespace(client=make_web_client(TOKEN, emu.base_url))
    with scheduled_jobs(settings, store, app) as scheduler:
        assert scheduler.running
        assert {j.id for j in scheduler.get_jobs()} == {_digest_id(settings), REFRESH_JOB}
    assert not scheduler.running


def test_digest_job_with_an_unknown_filter_tells_the_admin(store, emu) -> None:
    from bot.scheduler import register_runtime, run_digest_job

    settings = slack_settings(emu.base_url)
    url = store.url.render_as_string(hide_password=False)
    register_runtime(url, settings, store, make_web_client(TOKEN, emu.base_url))
    assert run_digest_job(GENERAL, "Atlantis", url) == "failed: unknown filter 'Atlantis'"
    [notice] = emu.messages("C0ADMINS01")
    assert "Atlantis" in notice.text
    assert emu.messages(GENERAL) == []
    # a known filter posts the digest for that place
    assert "posted" in run_digest_job(GENERAL, "sul", url)
    [message] = emu.messages(GENERAL)
    assert "region Sul" in message.blocks[1]["elements"][0]["text"]


_CHILD_REFRESH = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor


def job(url):
    from analytics import columnar
    from bot.scheduler import _refresh_in_process
    from bot.settings import Settings

    columnar.ADBC_MIN_ROWS = 0  # the sample store read by reader processes, as a big one is
    return _refresh_in_process(url, Settings(database_url=url))


if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        message, pid = pool.submit(job, sys.argv[1]).result()
    print(message)
"""


def test_the_refresh_process_ends_after_using_reader_processes(tmp_path) -> None:
    # the nightly job's process reads a big store with reader processes of its own; it must
    # stop them, or it waits for them for ever when it ends (and the job never returns)
    import subprocess
    import sys

    from sample_store import sample_store

    from storage.engine import sqlite_file

    engine = sample_store(tmp_path)
    if engine.dialect.name != "sqlite" or sqlite_file(engine) is None:
        engine.dispose()
        pytest.skip("reader processes read SQLite files only")
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    script = tmp_path / "child_refresh.py"
    script.write_text(_CHILD_REFRESH)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                          timeout=240, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("Scored "), done.stdout
