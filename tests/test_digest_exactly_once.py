"""Exactly once: the (channel, week) claim, resuming half-posted digests, a process killed
mid-post, Slack faults (429, 5xx, channel_not_found) — against the Slack emulator."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from digest_fixtures import (
    ADMIN,
    AS_OF,
    GENERAL,
    TOKEN,
    digest_store,
    emulator_channels,
    slack_settings,
)
from slack_emulator import UPLOAD, SlackEmulator
from sqlalchemy import update

from bot import digest_runs
from bot.digest import build_digest
from bot.digest_post import HEADER, TEST_DIE_AFTER, post_digest
from bot.slack_io import make_web_client
from storage.schema import digest_runs as T

WEEK = dt.date(2018, 8, 29)
PARTS = {HEADER, "chart:cohorts", "chart:churn", "chart:migration"}


# --- the claim itself, on SQLite and PostgreSQL ---------------------------------------------------


def test_one_claim_wins_among_many(store) -> None:  # noqa: ANN001 - the parametrised `store`
    """Eight attempts at once (threads, each its own owner): exactly one gets the run."""
    barrier = threading.Barrier(8)

    def attempt(_: int) -> digest_runs.Claim:
        barrier.wait()
        return digest_runs.claim(store, "C0GENERAL", WEEK)

    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(attempt, range(8)))
    winners = [c for c in claims if c.run is not None]
    assert len(winners) == 1
    assert {c.reason for c in claims if c.run is None} == {"busy"}
    run = winners[0].run

    # parts are recorded only while the run is ours
    digest_runs.record_part(store, run, HEADER, {"ts": "1.000100", "channel": "C0GENERAL"},
                            message_ts="1.000100")
    stolen = digest_runs.Run(run.id, run.channel, run.week, "someone-else", run.status)
    with pytest.raises(digest_runs.LostClaim):
        digest_runs.record_part(store, stolen, "chart:x", "F1")

    # released after a transient error: the next attempt resumes with the recorded parts
    digest_runs.release(store, run, "HTTP 503")
    again = digest_runs.claim(store, "C0GENERAL", WEEK)
    assert again.run is not None and again.run.resumed
    assert again.run.parts == {HEADER: {"ts": "1.000100", "channel": "C0GENERAL"}}
    assert again.run.message_ts == "1.000100"
    assert digest_runs.claim(store, "C0GENERAL", WEEK).reason == "busy"

    digest_runs.record_part(store, again.run, "chart:cohorts", "F000000001")
    digest_runs.finish(store, again.run)
    done = digest_runs.claim(store, "C0GENERAL", WEEK, retry_failed=True)
    assert done.run is None and done.reason == digest_runs.POSTED
    row = digest_runs.get_run(store, "C0GENERAL", WEEK)
    assert row["status"] == "posted"
    assert set(row["parts"]) == {HEADER, "chart:cohorts"}

    # another week, another channel: independent rows
    assert digest_runs.claim(store, "C0GENERAL", WEEK + dt.timedelta(days=7)).run is not None
    assert digest_runs.claim(store, "C0OTHER001", WEEK).run is not None


def test_failed_runs_are_retried_only_when_asked(store) -> None:  # noqa: ANN001
    run = digest_runs.claim(store, "C0GENERAL", WEEK).run
    digest_runs.fail(store, run, "channel_not_found")
    assert digest_runs.claim(store, "C0GENERAL", WEEK).reason == digest_runs.FAILED
    retry = digest_runs.claim(store, "C0GENERAL", WEEK, retry_failed=True)
    assert retry.run is not None and retry.run.status == digest_runs.CLAIMED


def test_owner_killed_or_silent_is_taken_over(store) -> None:  # noqa: ANN001
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_owner = f"{socket.gethostname()}:{int(dead.stdout)}:deadbeef"
    run = digest_runs.claim(store, "C0GENERAL", WEEK, owner=dead_owner).run
    digest_runs.record_part(store, run, HEADER, {"ts": "1.000100", "channel": "C0GENERAL"})
    taken = digest_runs.claim(store, "C0GENERAL", WEEK)
    assert taken.run is not None and taken.run.resumed and taken.run.has(HEADER)

    # an owner on another host is trusted until it has been quiet for `stale_after`
    other = digest_runs.claim(store, "C0OTHER001", WEEK, owner="elsewhere:1:cafe").run
    assert digest_runs.claim(store, "C0OTHER001", WEEK).reason == "busy"
    with store.begin() as conn:
        conn.execute(update(T).where(T.c.id == other.id).values(
            updated_at=dt.datetime.now() - dt.timedelta(hours=1)))
    assert digest_runs.claim(store, "C0OTHER001", WEEK, stale_after=600).run is not None


# --- posting against the emulator -----------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[SlackEmulator]:
    with SlackEmulator(token=TOKEN, channels=emulator_channels()) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh_emulator(request: pytest.FixtureRequest) -> None:
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").reset()


@pytest.fixture
def shop(tmp_path):  # noqa: ANN201
    engine, url = digest_store(tmp_path)
    yield engine, url
    engine.dispose()


@pytest.fixture(scope="module")
def built(tmp_path_factory):  # noqa: ANN201 - one digest for the tests that only post it
    engine, _ = digest_store(tmp_path_factory.mktemp("built"))
    digest = build_digest(engine, slack_settings("http://127.0.0.1:9/api/"), "")
    engine.dispose()
    return digest


def _ok_calls(emu: SlackEmulator, method: str) -> list:
    return [c for c in emu.calls(method) if c.ok]


def test_concurrent_posts_post_once(shop, emu, built) -> None:
    engine, _ = shop
    settings = slack_settings(emu.base_url)
    client = make_web_client(TOKEN, emu.base_url)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(
            lambda _: post_digest(engine, settings, client, GENERAL, digest=built), range(4)))
    assert sorted(o.status for o in outcomes) == ["posted", "skipped", "skipped", "skipped"]
    assert len(emu.messages(GENERAL)) == 1
    assert len(emu.uploads(GENERAL)) == 3
    # a later attempt (a retried job, a restart) does nothing
    again = post_digest(engine, settings, client, GENERAL, digest=built)
    assert again.status == "skipped" and "already posted" in again.detail
    assert len(_ok_calls(emu, "chat.postMessage")) == 1


def test_rate_limited_twice_then_posted_once(shop, emu, built) -> None:
    engine, _ = shop
    emu.fail_next("chat.postMessage", retry_after=0, times=2)
    emu.fail_next("files.getUploadURLExternal", retry_after=0, times=2)
    emu.fail_next("files.completeUploadExternal", status=503, times=1)
    outcome = post_digest(engine, slack_settings(emu.base_url), make_web_client(TOKEN, emu.base_url),
                          GENERAL, digest=built)
    assert outcome.status == "posted"
    calls = emu.calls("chat.postMessage")
    assert [c.status for c in calls] == [429, 429, 200]
    assert len(emu.messages(GENERAL)) == 1
    uploads = emu.uploads(GENERAL)
    assert len(uploads) == 3 and len({u.file_id for u in uploads}) == 3
    assert emu.messages(ADMIN) == []
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert row["status"] == "posted" and set(row["parts"]) == PARTS
    assert {row["parts"][f"chart:{n}"] for n in ("cohorts", "churn", "migration")} == {u.file_id for u in uploads}


def test_channel_not_found_fails_the_run_and_tells_the_admin(shop, emu, built) -> None:
    engine, _ = shop
    emu.fail_next("chat.postMessage", error="channel_not_found")
    outcome = post_digest(engine, slack_settings(emu.base_url), make_web_client(TOKEN, emu.base_url),
                          GENERAL, digest=built)
    assert outcome.status == "failed" and outcome.detail == "channel_not_found"
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert row["status"] == "failed" and row["error"] == "channel_not_found" and row["parts"] == {}
    [notice] = emu.messages(ADMIN)
    assert "channel_not_found" in notice.text and GENERAL in notice.text
    assert emu.messages(GENERAL) == [] and emu.uploads() == []
    assert [c.method for c in emu.calls() if c.method.startswith("files")] == []
    # the scheduler does not retry a failed week; a person asking again does
    settings = slack_settings(emu.base_url)
    client = make_web_client(TOKEN, emu.base_url)
    assert post_digest(engine, settings, client, GENERAL, digest=built).status == "skipped"
    assert post_digest(engine, settings, client, GENERAL, digest=built, retry_failed=True).status == "posted"
    assert len(emu.messages(GENERAL)) == 1 and len(emu.uploads(GENERAL)) == 3


def test_a_run_that_stopped_half_way_resumes_with_the_missing_parts(shop, emu, built) -> None:
    engine, _ = shop
    settings = slack_settings(emu.base_url)
    client = make_web_client(TOKEN, emu.base_url)
    # the first chart goes through; the second's upload keeps failing (more 5xx than the
    # client retries), so the run stops after the header and one chart
    emu.fail_next("files.completeUploadExternal", status=200, times=1)  # passes through
    emu.fail_next("files.completeUploadExternal", status=502, times=3)
    from slack_sdk.errors import SlackApiError

    with pytest.raises(SlackApiError):
        post_digest(engine, settings, client, GENERAL, digest=built)
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert row["status"] == "partial" and row["owner"] is None
    assert set(row["parts"]) == {HEADER, "chart:cohorts"}
    [notice] = emu.messages(ADMIN)
    assert "stopped half-way" in notice.text

    resumed = post_digest(engine, settings, make_web_client(TOKEN, emu.base_url), GENERAL, digest=built)
    assert resumed.status == "posted" and resumed.resumed
    assert resumed.posted_parts == ("chart:churn", "chart:migration")
    [message] = emu.messages(GENERAL)
    uploads = emu.uploads(GENERAL)
    assert sorted(u.filename for u in uploads) == sorted(
        f"digest-2018-08-29-{n}.png" for n in ("cohorts", "churn", "migration"))
    assert {u.thread_ts for u in uploads} == {message.ts}


def _pulse(url: str, emu: SlackEmulator, tmp_path: Path, die_after: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PULSE_", "SLACK_"))}
    env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=emu.base_url, PULSE_AS_OF=AS_OF.isoformat(),
               PULSE_ADMIN_CHANNEL=ADMIN, MPLBACKEND="Agg")
    if die_after:
        env[TEST_DIE_AFTER] = die_after
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "--db", url, "digest", "--post", "--channel", GENERAL],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_killed_after_the_header_completes_on_restart(shop, emu, tmp_path) -> None:
    engine, url = shop
    first = _pulse(url, emu, tmp_path, die_after=HEADER)
    assert first.returncode == -signal.SIGKILL, first.stderr
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert row["status"] == "partial" and set(row["parts"]) == {HEADER}
    assert row["owner"] is not None  # killed: nobody released it
    assert len(emu.messages(GENERAL)) == 1 and emu.uploads() == []

    second = _pulse(url, emu, tmp_path, die_after=None)
    assert second.returncode == 0, second.stderr
    assert "posted (resumed)" in second.stdout
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert row["status"] == "posted" and set(row["parts"]) == PARTS
    # each part exactly once: one header message, one upload per chart, all in its thread
    assert len(_ok_calls(emu, "chat.postMessage")) == 1
    [message] = emu.messages(GENERAL)
    assert message.ts == row["message_ts"] == row["parts"][HEADER]["ts"]
    uploads = emu.uploads(GENERAL)
    assert len(uploads) == 3 == len(_ok_calls(emu, "files.completeUploadExternal"))
    assert len({u.filename for u in uploads}) == 3
    assert {u.thread_ts for u in uploads} == {message.ts}
    assert len([c for c in emu.calls(UPLOAD) if c.status == 200]) == 3
    assert emu.messages(ADMIN) == []


def test_killed_after_a_chart_does_not_repeat_it(shop, emu, tmp_path) -> None:
    engine, url = shop
    first = _pulse(url, emu, tmp_path, die_after="chart:cohorts")
    assert first.returncode == -signal.SIGKILL, first.stderr
    row = digest_runs.get_run(engine, GENERAL, AS_OF)
    assert set(row["parts"]) == {HEADER, "chart:cohorts"}
    second = _pulse(url, emu, tmp_path, die_after=None)
    assert second.returncode == 0, second.stderr
    assert len(_ok_calls(emu, "chat.postMessage")) == 1
    names = sorted(u.filename.rsplit("-", 1)[-1] for u in emu.uploads(GENERAL))
    assert names == ["churn.png", "cohorts.png", "migration.png"]
    # the chart posted before the kill kept its file id: it was not uploaded again
    assert digest_runs.get_run(engine, GENERAL, AS_OF)["parts"]["chart:cohorts"] == row["parts"]["chart:cohorts"]
