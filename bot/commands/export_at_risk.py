"""`/export-at-risk [STATE|REGION] [min-prob P] [segment NAME] [limit N]`: the at-risk list as CSV.

From Slack only people or channels on the export allowlist may export; the console and the
CLI run locally and may. Every export, allowed or refused, writes an `export_audit` row.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import Engine

from analytics.risk import EXPORT_COLUMNS, count_at_risk, iter_at_risk_csv, scores_as_of
from bot.answers import Answer, Export, Figure, error_answer, fmt_int, fmt_money
from bot.commands.churn_risk import RiskArgs, horizon_and_high, parse_risk_args, risk_definition
from bot.commands.common import base_answer
from bot.router import Command, CommandContext, Requester
from storage import schema

COMMAND_NAME = "export-at-risk"


def record_export(engine: Engine, requester: Requester, filter_text: str, rows: int,
                  allowed: bool, command: str = COMMAND_NAME) -> None:
    """One `export_audit` row: who, where, the filter, how many rows, allowed or not, when."""
    with engine.begin() as conn:
        conn.execute(schema.export_audit.insert().values(
            user_id=requester.user_id, channel_id=requester.channel_id,
            command=f"{command} ({requester.source})"[:64], filter=filter_text, row_count=rows,
            allowed=allowed, created_at=dt.datetime.now().replace(microsecond=0)))


def may_export(ctx: CommandContext) -> bool:
    """Slack requests need the allowlist; the console and the CLI are local."""
    req = ctx.requester
    return req.source != "slack" or ctx.settings.may_export(req.user_id, req.channel_id)


def export_filename(as_of: dt.date | None, ra: RiskArgs) -> str:
    words = ["at-risk", as_of.isoformat() if as_of else "latest"]
    text = ra.filter_text()
    if text:
        words.append(re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower())
    return "-".join(words) + ".csv"


def build_export(ctx: CommandContext, ra: RiskArgs) -> tuple[bytes, int, int]:
    """(CSV bytes, rows written, customers matching) for a parsed filter, capped by
    `limit` and the export.max_rows setting."""
    cap = min(ra.limit or ctx.settings.export_max_rows, ctx.settings.export_max_rows)
    matching = count_at_risk(ctx.engine, ra.filter)
    content = b"".join(iter_at_risk_csv(ctx.engine, ra.filter, cap))
    return content, min(matching, cap), matching


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    typed = " ".join(args)
    if not may_export(ctx):
        record_export(ctx.engine, ctx.requester, typed, 0, allowed=False)
        return error_answer(
            f"/{COMMAND_NAME} {typed}".strip(),
            "Sorry — customer lists can only be exported by people or channels on the export "
            "allowlist, and you are not on it here. Ask an admin to add you (settings "
            "`export.allowed_users` / `export.allowed_channels`); `/churn-risk` still shows the "
            "figures and the top of the list.")
    ra = parse_risk_args(ctx, args, with_limit=True)
    base = base_answer(ctx, f"/{COMMAND_NAME}", "At-risk customers — CSV export", ra.filter.place)
    as_of = scores_as_of(ctx.engine) or base["as_of"]
    base["as_of"] = as_of
    content, rows, matching = build_export(ctx, ra)
    record_export(ctx.engine, ctx.requester, ra.filter_text(), rows, allowed=True)
    s = ctx.settings
    capped = rows < matching
    horizon, high = horizon_and_high(ctx)
    summary = (f"{fmt_int(rows)} customers at risk ({risk_definition(ra.filter, high, horizon)}), "
               "ranked by expected value at risk.")
    if capped:
        why = "the `limit` you gave" if ra.limit and ra.limit < s.export_max_rows else \
            f"the export limit of {fmt_int(s.export_max_rows)} rows"
        summary += f" {fmt_int(matching)} match; the file holds the first {fmt_int(rows)} ({why})."
    total = _csv_total(content)
    return Answer(
        **base, summary=summary,
        figures=[Figure("Rows", fmt_int(rows), rows),
                 Figure("Value at risk in the file", fmt_money(total, s.currency), total)],
        notes=["Columns: " + ", ".join(EXPORT_COLUMNS) + ". Text cells that a spreadsheet "
               "would read as a formula start with an apostrophe."],
        export=Export(export_filename(as_of, ra), content, rows, EXPORT_COLUMNS),
    )


def _csv_total(content: bytes) -> float:
    """Σ expected_value_at_risk of a CSV made by `iter_at_risk_csv` (without pandas)."""
    import csv
    import io

    reader = csv.DictReader(io.StringIO(content.decode("utf-8")))
    return sum(float(r["expected_value_at_risk"] or 0) for r in reader)


COMMAND = Command(
    name=COMMAND_NAME,
    usage="/export-at-risk [STATE|REGION] [min-prob P] [segment NAME] [limit N]",
    summary="The at-risk customers as a CSV file (allowlisted users and channels), ranked by value at risk.",
    examples=("/export-at-risk", "/export-at-risk SP min-prob 0.7", "/export-at-risk sul segment loyal limit 500"),
    handler=handle,
    aliases=("export",),
)
