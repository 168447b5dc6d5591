"""`/pulse digest [STATE|REGION]`: post this week's digest here now (allowlisted people).

In Slack it posts into the channel the command came from, through the same exactly-once
bookkeeping as the scheduled digest (a digest already posted there this week is not
posted again; one that failed is retried). In the console it shows the digest.
The allowlist is the export allowlist (`export.allowed_users` / `allowed_channels`).
"""

from __future__ import annotations

from bot.answers import Answer, error_answer
from bot.commands.args import parse_args
from bot.router import Command, CommandContext, _cached


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    from bot.digest import build_digest

    parsed = parse_args(args)
    place = ctx.place(parsed.rest_text)
    req = ctx.requester
    if req.source == "console" or not req.channel_id:
        as_of = ctx.as_of().date
        # Built once per data version, as-of and place (it draws three charts).
        digest = _cached(ctx.engine, ("digest", as_of, place, ctx.settings.currency),
                         lambda: build_digest(ctx.engine, ctx.settings, place, as_of=as_of))
        return digest.to_answer("/pulse digest")
    if not ctx.settings.may_export(req.user_id, req.channel_id):
        return error_answer("/pulse digest", "Posting the digest on demand is limited to the people "
                            "and channels on the export allowlist (`export.allowed_users`). The "
                            "scheduled digest still comes every week.")
    if not ctx.settings.slack_bot_token:
        return error_answer("/pulse digest", "The bot token (SLACK_BOT_TOKEN) is not in the settings, "
                            "so I cannot post the digest.")
    from bot.digest_post import post_digest
    from bot.slack_io import make_web_client

    client = make_web_client(ctx.settings.slack_bot_token, ctx.settings.slack_api_url)
    outcome = post_digest(ctx.engine, ctx.settings, client, req.channel_id, place,
                          as_of=ctx.as_of().date, retry_failed=True)
    text = {
        "posted": f"Posted the digest for the week ending {outcome.week} here"
                  + (" (resumed where an earlier attempt stopped)." if outcome.resumed else "."),
        "skipped": f"The digest for the week ending {outcome.week} was not posted again: "
                   f"{outcome.detail}.",
        "failed": f"I could not post the digest here: `{outcome.detail}`. Invite me to the channel "
                  "(`/invite @Retail Pulse`) and try again.",
    }[outcome.status]
    if outcome.status == "failed":
        return error_answer("/pulse digest", text)
    return Answer(command="/pulse digest", title="Weekly digest", as_of=outcome.week,
                  filter_label=place.label, summary=text)


COMMAND = Command(
    name="digest",
    usage="/pulse digest [STATE|REGION]",
    summary="Post this week's digest in this channel now (allowlisted people).",
    examples=("/pulse digest", "/pulse digest sudeste"),
    handler=handle,
)
