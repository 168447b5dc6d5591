"""Posting a digest to Slack exactly once per (channel, week), resumable part by part.

`post_digest` claims the (channel, week) run (`bot.digest_runs`), then posts the parts
that are not recorded yet, recording each one as soon as Slack accepts it:

    "header"           chat.postMessage with the digest's blocks  → {"ts", "channel"}
    "chart:<name>"     files_upload_v2 of one PNG into the header's thread → file id

Slack 429 and 5xx answers are retried by the WebClient's retry handlers
(`bot.slack_io.retry_handlers`). A permanent refusal (channel_not_found, not_in_channel,
invalid_auth, …) marks the run failed with the reason and tells the admin channel
(`settings.admin_channel`); anything else releases the run (so the next attempt resumes
it) and is re-raised.

Test hook: with PULSE_TEST_DIE_AFTER=<part> in the environment the process kills itself
(SIGKILL) right after recording that part — how the restart test simulates a crash.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from sqlalchemy import Engine

from bot import digest_runs
from bot.digest import (
    Digest,
    DigestChart,
    build_digest,
    digest_blocks,
    fallback_text,
    resolve_digest_place,
)
from bot.settings import Settings
from bot.slack_io import CHANNEL_REFUSALS, api_error
from storage.geography import Place

log = logging.getLogger(__name__)

TEST_DIE_AFTER = "PULSE_TEST_DIE_AFTER"
HEADER = "header"
# Slack errors that no retry will fix: the run is marked failed and the admin told.
PERMANENT_ERRORS = CHANNEL_REFUSALS | {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "missing_scope", "no_permission", "invalid_blocks", "invalid_blocks_format",
    "msg_too_long", "no_text", "team_access_not_granted", "access_denied",
}


@dataclass(frozen=True)
class PostOutcome:
    """What `post_digest` did: status is "posted", "skipped" or "failed"."""

    status: str
    channel: str
    week: dt.date
    detail: str = ""
    message_ts: str | None = None
    posted_parts: tuple[str, ...] = ()  # parts posted by this attempt
    resumed: bool = False

    def line(self) -> str:
        what = {"posted": "posted", "skipped": "not posted", "failed": "FAILED"}[self.status]
        extra = f" ({self.detail})" if self.detail else ""
        return f"digest for {self.channel}, week ending {self.week}: {what}{extra}"


def chart_part(chart: DigestChart) -> str:
    return f"chart:{chart.name}"


def _test_hook(part: str) -> None:
    if os.environ.get(TEST_DIE_AFTER) == part:
        log.warning("%s=%s: killing this process now (test hook)", TEST_DIE_AFTER, part)
        os.kill(os.getpid(), signal.SIGKILL)


def post_digest(
    engine: Engine,
    settings: Settings,
    client: WebClient,
    channel: str,
    place: Place | str | None = None,
    *,
    as_of: dt.date | None = None,
    retry_failed: bool = False,
    stale_after: float = digest_runs.DEFAULT_STALE_AFTER,
    digest: Digest | None = None,
) -> PostOutcome:
    """Post the digest of the week ending on the as-of date to `channel`, exactly once.

    `retry_failed` lets a run that failed before (e.g. the bot was not in the channel)
    be tried again — for people asking, not for the scheduler.
    """
    from analytics.asof import resolve_as_of

    if as_of is None:
        as_of = digest.as_of if digest is not None else resolve_as_of(
            engine, fixed=settings.as_of_date()).date
    if digest is not None:
        place = digest.place
    elif place is None or isinstance(place, str):
        place = resolve_digest_place(engine, place)  # an unknown place fails before the claim
    claim = digest_runs.claim(engine, channel, as_of, retry_failed=retry_failed,
                              stale_after=stale_after)
    if claim.run is None:
        row = claim.row or {}
        detail = {
            digest_runs.POSTED: f"already posted (message {row.get('message_ts')})",
            digest_runs.FAILED: f"failed earlier: {row.get('error')}",
        }.get(claim.reason, "another instance is posting it right now")
        log.info("digest %s / %s: %s", channel, as_of, detail)
        return PostOutcome("skipped", channel, as_of, detail, row.get("message_ts"))
    run = claim.run
    posted: list[str] = []
    try:
        if digest is None or digest.as_of != as_of:
            digest = build_digest(engine, settings, place, as_of=as_of)
        header = run.parts.get(HEADER)
        if header is None:
            resp = client.chat_postMessage(channel=channel, text=fallback_text(digest),
                                           blocks=digest_blocks(digest), unfurl_links=False,
                                           unfurl_media=False)
            header = {"ts": resp["ts"], "channel": resp["channel"]}
            digest_runs.record_part(engine, run, HEADER, header, message_ts=resp["ts"])
            posted.append(HEADER)
            _test_hook(HEADER)
        for chart in digest.charts:
            part = chart_part(chart)
            if run.has(part):
                continue
            file_id = _upload_chart(client, chart, channel_id=header["channel"],
                                    thread_ts=header["ts"], digest=digest)
            digest_runs.record_part(engine, run, part, file_id)
            posted.append(part)
            _test_hook(part)
        digest_runs.finish(engine, run)
    except SlackApiError as exc:
        error = api_error(exc) or f"HTTP {exc.response.status_code}"
        if error in PERMANENT_ERRORS:
            digest_runs.fail(engine, run, error)
            log.error("digest for %s (week ending %s) failed: %s", channel, as_of, error)
            notify_admin(client, settings,
                         f":warning: The weekly digest for {channel} (week ending {as_of}) could "
                         f"not be posted: `{error}`. "
                         + ("Invite the bot to the channel or fix the channel in the settings, "
                            "then run `pulse digest --post`." if error in CHANNEL_REFUSALS else
                            "Check the bot's token and permissions, then run `pulse digest --post`."))
            return PostOutcome("failed", channel, as_of, error, run.message_ts, tuple(posted),
                               run.resumed)
        _give_up(engine, client, settings, run, channel, as_of, error)
        raise
    except digest_runs.LostClaim:
        log.warning("digest for %s (week ending %s): another instance took the run over",
                    channel, as_of)
        return PostOutcome("skipped", channel, as_of, "taken over by another instance",
                           run.message_ts, tuple(posted), run.resumed)
    except BaseException as exc:
        _give_up(engine, client, settings, run, channel, as_of, f"{type(exc).__name__}: {exc}")
        raise
    log.info("digest for %s (week ending %s) posted: %s", channel, as_of,
             ", ".join(posted) or "nothing left to post")
    return PostOutcome("posted", channel, as_of, "resumed" if run.resumed else "",
                       run.message_ts, tuple(posted), run.resumed)


def _give_up(engine: Engine, client: WebClient, settings: Settings, run: digest_runs.Run,
             channel: str, as_of: dt.date, error: str) -> None:
    """Release the run after a transient failure; the admin hears the next step."""
    try:
        digest_runs.release(engine, run, error)
    except Exception:  # noqa: BLE001 - the original error matters more
        log.exception("could not release digest run %s", run.id)
    log.error("digest for %s (week ending %s) stopped: %s", channel, as_of, error)
    notify_admin(client, settings,
                 f":warning: The weekly digest for {channel} (week ending {as_of}) stopped half-way "
                 f"(`{error[:200]}`). It resumes where it stopped with `pulse digest --post`.")


def _upload_chart(client: WebClient, chart: DigestChart, *, channel_id: str, thread_ts: str,
                  digest: Digest, attempts: int = 3) -> str:
    """Upload one chart into the digest's thread; its file id.

    The API calls retry on their own; the raw upload step of files_upload_v2 does not, so
    the flow is retried when that step fails (nothing is shared before its last call).
    """
    for attempt in range(1, attempts + 1):
        try:
            resp = client.files_upload_v2(
                file=chart.png, filename=f"{digest.file_stem()}-{chart.filename}",
                title=chart.title, alt_txt=chart.title, channel=channel_id, thread_ts=thread_ts,
            )
            files = resp.get("files") or [resp.get("file") or {}]
            return str(files[0].get("id"))
        except (SlackRequestError, ConnectionError, TimeoutError, OSError) as exc:
            if attempt == attempts:
                raise
            log.warning("chart upload %s failed (%s); retrying", chart.name, exc)
            time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def notify_admin(client: WebClient, settings: Settings, text: str) -> bool:
    """Tell the admin channel or user (settings.admin_channel); False when not configured
    or Slack refused (the log has it either way)."""
    target = settings.admin_channel
    if not target:
        log.warning("no admin channel configured: %s", text)
        return False
    try:
        client.chat_postMessage(channel=target, text=text)
        return True
    except Exception:  # noqa: BLE001 - never let the notice hide the real error
        log.exception("could not notify the admin channel %s", target)
        return False
