"""`pulse schedule list`, `pulse backfill` and `pulse digest`: the weekly-digest commands.

They take the `pulse` group's context object (`ctx.obj`, with `.settings` and `.engine`)
through `click.pass_obj`, so this module does not import `bot.cli` (which attaches them).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from bot.cli_common import parse_date as _date


def _as_of(obj: Any, fixed: dt.date | None) -> dt.date:
    if fixed is not None:
        return fixed
    from analytics.asof import resolve_as_of

    return resolve_as_of(obj.engine, fixed=obj.settings.as_of_date()).date


# --- pulse schedule -------------------------------------------------------------------------


@click.group()
def schedule() -> None:
    """The scheduled jobs: weekly digests and the nightly refresh."""


@schedule.command("list")
@click.pass_obj
def schedule_list(obj: Any) -> None:
    """Show each job, its cron and its next run in its configured timezone.

    Next runs come from the job store when a running bot has scheduled the job, otherwise
    they are computed from the settings (marked "not started").
    """
    from bot.scheduler import list_jobs

    jobs = list_jobs(obj.settings, obj.engine)
    rows = [(j.id, j.cron,
             f"{j.next_run:%Y-%m-%d %H:%M %Z} ({j.timezone})" if j.next_run else "paused",
             j.name + ("" if j.stored else "  [not started yet: `pulse run` schedules it]"))
            for j in jobs]
    header = ("job", "cron", "next run", "what")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    s = obj.settings
    click.echo(f"coalesce: on · misfire grace: {s.misfire_grace_seconds:,} s · admin: "
               f"{s.admin_channel or '(none: log only)'}")


# --- pulse backfill -------------------------------------------------------------------------


@click.command()
@click.option("--weeks", type=click.IntRange(1, 520), default=26, show_default=True,
              help="How many past weeks to compute.")
@click.option("--as-of", "as_of", metavar="DATE", default=None,
              help="Last week end (default: the as-of date of the settings).")
@click.option("--missing-only", is_flag=True,
              help="Leave dates that already have a snapshot alone (faster re-runs).")
@click.pass_obj
def backfill(obj: Any, weeks: int, as_of: str | None, missing_only: bool) -> None:
    """Compute past weekly segment snapshots from the order history.

    For each week end (as-of, as-of − 7 days, …) the RFM segment of every customer is
    recomputed from the purchases made by then and stored in segment_snapshots, so
    /migration and the digest have real movement to show on a fresh install.
    Idempotent: running it again rewrites the same rows.
    """
    from analytics.backfill import backfill_snapshots

    day = _as_of(obj, _date(as_of))
    progress = None
    if sys.stderr.isatty():
        def progress(d: dt.date, rows: int) -> None:
            click.echo(f"\r  {d}  {rows:>9,} customers", err=True, nl=False)
    report = backfill_snapshots(obj.engine, day, weeks, skip_existing=missing_only,
                                progress=progress)
    if progress is not None:
        click.echo("", err=True)
    for line in report.summary_lines():
        click.echo(line)


# --- pulse digest ---------------------------------------------------------------------------


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write the digest as Markdown + PNG files into this folder.")
@click.option("--post", is_flag=True,
              help="Post it to Slack now (once per channel and week, like the scheduled one).")
@click.option("--channel", default=None,
              help="Only this channel (default: every configured digest). With --filter.")
@click.option("--filter", "place_filter", default=None, metavar="STATE|REGION",
              help="Place filter (default: the configured digest's, or everybody).")
@click.option("--as-of", "as_of", metavar="DATE", default=None,
              help="Week end (default: the as-of date of the settings).")
@click.pass_obj
def digest(obj: Any, out: str | None, post: bool, channel: str | None, place_filter: str | None,
           as_of: str | None) -> None:
    """Build this week's digest: write it to files (--out) and/or post it (--post).

    Without --out or --post it is written to the output folder (output.dir).
    A digest already posted to a channel for the week is not posted again; one that
    stopped half-way resumes with the missing parts.
    """
    from bot.digest import build_digest, resolve_digest_place
    from storage.geography import UnknownPlace

    settings = obj.settings
    engine = obj.engine
    day = _as_of(obj, _date(as_of))
    if channel is not None or not settings.digests:
        if channel is None and post:
            raise click.UsageError("no digest is configured; say --channel C… to post one")
        targets = [(channel, place_filter or "")]
    else:
        targets = [(d.channel, d.filter if place_filter is None else place_filter)
                   for d in settings.digests]
    if not post and out is None:
        out = settings.output_dir
    if out is not None:
        done: set[str] = set()
        for _, text in targets:
            if text in done:
                continue
            done.add(text)
            try:
                place = resolve_digest_place(engine, text)
            except UnknownPlace as exc:
                raise click.BadParameter(str(exc), param_hint="--filter") from None
            paths = build_digest(engine, settings, place, as_of=day).write(out)
            click.echo(f"wrote {paths[0]} and {len(paths) - 1} chart(s)")
    if post:
        _post(settings, engine, targets, day)


def _post(settings: Any, engine: Any, targets: list[tuple[str, str]], day: dt.date) -> None:
    from bot.digest import resolve_digest_place
    from bot.digest_post import post_digest
    from bot.slack_io import make_web_client
    from storage.geography import UnknownPlace

    if not settings.slack_bot_token:
        raise click.ClickException("SLACK_BOT_TOKEN is not set; posting needs the bot token.")
    client = make_web_client(settings.slack_bot_token, settings.slack_api_url)
    failed = False
    for target, text in targets:
        try:
            place = resolve_digest_place(engine, text)
        except UnknownPlace as exc:
            click.echo(f"{target}: filter {text!r} — {exc}", err=True)
            failed = True
            continue
        outcome = post_digest(engine, settings, client, target, place, as_of=day,
                              retry_failed=True)
        click.echo(outcome.line())
        failed |= outcome.status == "failed"
    if failed:
        sys.exit(1)
