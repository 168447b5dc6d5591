"""Scheduled jobs: the weekly digests and the nightly refresh (APScheduler 3).

Jobs live in APScheduler's SQLAlchemyJobStore, in the store's own database (table
`apscheduler_jobs`), so they survive restarts and every bot instance on one database
sees the same schedule:

- one ``digest:<channel>:<filter>`` job per `[[digest.schedules]]` entry, on its cron in
  its timezone, calling `run_digest_job(channel, place_filter, database_url)`;
- ``refresh``: `run_refresh_job(database_url)` on `digest.refresh_cron`, in the first
  digest's timezone: recompute features, scores and the day's snapshot, then record the
  risk figures the next digest compares with.

Every job has ``coalesce=True`` and ``misfire_grace_time = digest.misfire_grace_seconds``:
runs missed while the bot was down collapse into one run when it comes back, and that run
happens only if its latest missed time is within the grace time. Jobs are referenced by
text ("bot.scheduler:run_digest_job") with plain arguments, so the job store can pickle
them. On start the stored jobs are kept as they are (their next run time in the past is
what makes a missed digest run on return); only jobs whose settings changed are updated,
and jobs no longer configured are removed.

The digest itself is posted exactly once per (channel, week) by `bot.digest_post`, even
when two instances fire the same job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from slack_sdk import WebClient
from sqlalchemy import Engine, inspect

from bot.settings import DigestSchedule, Settings
from storage.engine import engine_url

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
DIGEST_PREFIX = "digest:"
REFRESH_JOB = "refresh"
DIGEST_FUNC = "bot.scheduler:run_digest_job"
REFRESH_FUNC = "bot.scheduler:run_refresh_job"
DEFAULT_TIMEZONE = "America/Sao_Paulo"


@dataclass(frozen=True)
class JobSpec:
    """A job as the settings define it."""

    id: str
    name: str
    func: str
    trigger: CronTrigger
    kwargs: dict[str, Any]
    timezone: str


def digest_job_id(d: DigestSchedule) -> str:
    return f"{DIGEST_PREFIX}{d.channel}:{d.filter}"


def refresh_timezone(settings: Settings) -> str:
    """The nightly refresh runs in the first digest's timezone."""
    return settings.digests[0].timezone if settings.digests else DEFAULT_TIMEZONE


def job_specs(settings: Settings, database_url: str) -> list[JobSpec]:
    """The jobs the settings ask for."""
    specs = []
    for d in settings.digests:
        what = f" ({d.filter})" if d.filter else ""
        specs.append(JobSpec(
            id=digest_job_id(d), name=f"weekly digest to {d.channel}{what}", func=DIGEST_FUNC,
            trigger=CronTrigger.from_crontab(d.cron, timezone=ZoneInfo(d.timezone)),
            kwargs={"channel": d.channel, "place_filter": d.filter, "database_url": database_url},
            timezone=d.timezone,
        ))
    tz = refresh_timezone(settings)
    specs.append(JobSpec(
        id=REFRESH_JOB, name="nightly refresh (features, scores, snapshot)", func=REFRESH_FUNC,
        trigger=CronTrigger.from_crontab(settings.refresh_cron, timezone=ZoneInfo(tz)),
        kwargs={"database_url": database_url}, timezone=tz,
    ))
    return specs


def make_scheduler(settings: Settings, engine: Engine, *,
                   scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    """A scheduler (not started) whose job store is the store's database."""
    from storage.engine import make_engine

    # A separate engine: the job store disposes its engine when the scheduler shuts down.
    jobstore = SQLAlchemyJobStore(engine=make_engine(engine_url(engine)), tablename=JOBS_TABLE)
    return scheduler_class(
        jobstores={"default": jobstore},
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": settings.misfire_grace_seconds},
        timezone=ZoneInfo(refresh_timezone(settings)),
    )


def sync_jobs(scheduler: BaseScheduler, settings: Settings, database_url: str) -> dict[str, str]:
    """Make the stored jobs match the settings; job id -> "added"/"updated"/"kept"/"removed".

    Call it on a started (possibly paused) scheduler. A kept job keeps its stored next run
    time — a time in the past is a run missed while the bot was down.
    """
    changes: dict[str, str] = {}
    specs = job_specs(settings, database_url)
    for spec in specs:
        job = scheduler.get_job(spec.id)
        options = {"coalesce": True, "max_instances": 1,
                   "misfire_grace_time": settings.misfire_grace_seconds}
        if job is None:
            scheduler.add_job(spec.func, trigger=spec.trigger, id=spec.id, name=spec.name,
                              kwargs=spec.kwargs, replace_existing=True, **options)
            changes[spec.id] = "added"
            continue
        changed = False
        if repr(job.trigger) != repr(spec.trigger):
            scheduler.reschedule_job(spec.id, trigger=spec.trigger)
            changed = True
        current = {"func": job.func_ref, "kwargs": dict(job.kwargs), "name": job.name,
                   "coalesce": job.coalesce, "max_instances": job.max_instances,
                   "misfire_grace_time": job.misfire_grace_time}
        wanted = {"func": spec.func, "kwargs": spec.kwargs, "name": spec.name, **options}
        if current != wanted:
            scheduler.modify_job(spec.id, func=spec.func, kwargs=spec.kwargs, name=spec.name,
                                 **options)
            changed = True
        changes[spec.id] = "updated" if changed else "kept"
    wanted_ids = {s.id for s in specs}
    for job in scheduler.get_jobs():
        if job.id not in wanted_ids and (job.id.startswith(DIGEST_PREFIX) or job.id == REFRESH_JOB):
            scheduler.remove_job(job.id)
            changes[job.id] = "removed"
    return changes


def start_scheduler(settings: Settings, engine: Engine, client: WebClient | None,
                    *, scheduler_class: type[BaseScheduler] = BackgroundScheduler) -> BaseScheduler:
    """Start the digest and refresh jobs next to the bot; returns the running scheduler.

    The jobs use this `engine`, these `settings` and this Slack `client` (with its retry
    handlers); stop them with `scheduler.shutdown()`.
    """
    url = engine_url(engine)
    register_runtime(url, settings, engine, client)
    scheduler = make_scheduler(settings, engine, scheduler_class=scheduler_class)
    scheduler.start(paused=True)  # load the stored jobs before anything runs
    changes = sync_jobs(scheduler, settings, url)
    scheduler.resume()
    for job_id, change in changes.items():
        log.info("scheduler: job %s %s", job_id, change)
    return scheduler


# --- what the jobs run --------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    client: WebClient | None


_RUNTIMES: dict[str, Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def register_runtime(database_url: str, settings: Settings, engine: Engine,
                     client: WebClient | None) -> None:
    """Let jobs for `database_url` use this process's settings, engine and Slack client."""
    with _RUNTIMES_LOCK:
        _RUNTIMES[database_url] = Runtime(settings, engine, client)


def runtime(database_url: str) -> Runtime:
    """The registered runtime for the URL, else one built from the settings files/env."""
    with _RUNTIMES_LOCK:
        found = _RUNTIMES.get(database_url)
    if found is not None:
        return found
    from dataclasses import replace

    from bot.settings import load_settings
    from bot.slack_io import make_web_client
    from storage.store import open_store

    settings = replace(load_settings(), database_url=database_url)
    client = (make_web_client(settings.slack_bot_token, settings.slack_api_url)
              if settings.slack_bot_token else None)
    built = Runtime(settings, open_store(database_url), client)
    register_runtime(database_url, built.settings, built.engine, built.client)
    return built


def run_digest_job(channel: str, place_filter: str, database_url: str) -> str:
    """The weekly digest job: post this week's digest to `channel` (once per week)."""
    from bot.digest import resolve_digest_place
    from bot.digest_post import notify_admin, post_digest
    from storage.geography import UnknownPlace

    rt = runtime(database_url)
    if rt.client is None:
        log.warning("digest job for %s: Slack is not configured (SLACK_BOT_TOKEN)", channel)
        return "skipped: Slack is not configured"
    try:
        place = resolve_digest_place(rt.engine, place_filter)
    except UnknownPlace as exc:
        notify_admin(rt.client, rt.settings,
                     f":warning: The weekly digest for {channel} was not posted: its filter "
                     f"`{place_filter}` is not a known place ({exc}).")
        return f"failed: unknown filter {place_filter!r}"
    outcome = post_digest(rt.engine, rt.settings, rt.client, channel, place)
    return outcome.line()


LAST_REFRESH_PID: int | None = None  # the process the last refresh job ran in (for tests)


def run_refresh_job(database_url: str) -> str:
    """The nightly job: refresh features, scores and today's snapshot; note the risk figures.

    Run in a process of its own (spawned; the settings go without the Slack secrets): the
    refresh keeps both cores busy for seconds to minutes, and in the bot's process it would
    hold the interpreter lock against the threads acknowledging Slack; its memory (9 GB at
    10M orders) is given back when the process ends. An in-memory store is refreshed here."""
    global LAST_REFRESH_PID
    from bot.answer_processes import store_url

    rt = runtime(database_url)
    if store_url(rt.engine) is None:
        message, LAST_REFRESH_PID = _refresh_here(rt.engine, rt.settings)
    else:
        from bot.memory import one_arena

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=one_arena) as pool:
            message, LAST_REFRESH_PID = pool.submit(
                _refresh_in_process, database_url, rt.settings.without_secrets()).result()
    # The bot's answer warmer (bot/server.py) pre-renders the answers for the new data now;
    # it runs on its own thread, so this job does not hold the scheduler's pool meanwhile.
    from bot.answer_cache import poke_warmers

    poke_warmers()
    return message


def _refresh_in_process(database_url: str, settings: Settings) -> tuple[str, int]:
    from analytics.columnar import stop_readers
    from analytics.snapshot import wait_for_saves
    from storage.engine import make_engine

    engine = make_engine(database_url)
    try:
        done = _refresh_here(engine, settings)
        wait_for_saves()  # the refresh's snapshot files, before the process ends
        return done
    finally:
        stop_readers()  # else this process would wait for its reader processes when it ends
        engine.dispose()


def _refresh_here(engine: Engine, settings: Settings) -> tuple[str, int]:
    """Refresh and note the risk figures; (the refresh's message, this process id)."""
    from analytics.errors import AnalyticsError
    from analytics.refresh import refresh
    from analytics.weekly import record_risk, risk_summary
    from bot.digest import resolve_digest_place
    from bot.memory import refresh_malloc

    with refresh_malloc():
        report = refresh(engine, as_of=settings.as_of_date(), seed=settings.seed,
                         scorers=default_scorers(settings))
    for text in {"", *(d.filter for d in settings.digests)}:
        # No churn scores, or an unknown filter (the digest job reports that): nothing to note.
        with contextlib.suppress(AnalyticsError, ValueError):
            record_risk(engine, risk_summary(engine, resolve_digest_place(engine, text)))
    return report.message, os.getpid()


def default_scorers(settings: Settings) -> tuple:
    """The churn/CLV scorers the refresh runs, with the settings' horizon, seed and bands."""
    from analytics.risk import default_scorers as make

    return tuple(make(settings.churn_horizon_days, settings.seed,
                      discount_rate=settings.discount_rate, risk_high=settings.risk_high,
                      risk_medium=settings.risk_medium,
                      retrain_after_days=settings.churn_retrain_days))


# --- listing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledJob:
    """A configured job and its next run (from the job store, else computed from now)."""

    id: str
    name: str
    cron: str
    timezone: str
    next_run: dt.datetime | None  # in the job's timezone
    stored: bool  # the job store holds it (a bot has started the scheduler)


def list_jobs(settings: Settings, engine: Engine, now: dt.datetime | None = None) -> list[ScheduledJob]:
    """The configured jobs with their next run times, read without changing anything."""
    stored = _stored_jobs(engine)
    crons = {digest_job_id(d): d.cron for d in settings.digests} | {REFRESH_JOB: settings.refresh_cron}
    out = []
    for spec in job_specs(settings, engine_url(engine)):
        tz = ZoneInfo(spec.timezone)
        job = stored.get(spec.id)
        if job is not None and repr(job.trigger) == repr(spec.trigger):
            nxt = job.next_run_time
        else:
            job = None
            nxt = spec.trigger.get_next_fire_time(None, now or dt.datetime.now(tz))
        out.append(ScheduledJob(spec.id, spec.name, crons[spec.id], spec.timezone,
                                nxt.astimezone(tz) if nxt else None, job is not None))
    return out


def _stored_jobs(engine: Engine) -> dict[str, Any]:
    if JOBS_TABLE not in inspect(engine).get_table_names():
        return {}
    store = SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)
    try:
        return {job.id: job for job in store.get_all_jobs()}
    except Exception:  # noqa: BLE001 - an unreadable job store lists as empty
        log.exception("could not read the job store")
        return {}
