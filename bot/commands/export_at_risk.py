"""`/export-at-risk [STATE|REGION] [min-prob P] [segment NAME] [limit N]`: the at-risk list as CSV.

From Slack only people or channels on the export allowlist may export; the console and the
CLI run locally and may. Every export, allowed or refused, writes an `export_audit` row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re

from sqlalchemy import Engine

from analytics.filters import scores_as_of
from analytics.risk import (
    EXPORT_COLUMNS,
    FORMULA_PREFIXES,
    RiskFilter,
    at_risk_query,
    count_at_risk,
    recommended_action,
    walk_band_by_value,
)
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


def build_export(ctx: CommandContext, ra: RiskArgs) -> tuple[bytes, int, int, float]:
    """(CSV bytes, rows written, customers matching, Σ value at risk in the file) for a
    parsed filter, capped by `limit` and the export.max_rows setting."""
    cap = min(ra.limit or ctx.settings.export_max_rows, ctx.settings.export_max_rows)
    content, rows, total = at_risk_csv(ctx.engine, ra.filter, cap)
    # A short list is the whole list; only a full one needs counting.
    matching = rows if rows < cap else count_at_risk(ctx.engine, ra.filter)
    return content, rows, matching, total


def at_risk_csv(engine: Engine, risk_filter: RiskFilter, limit: int,
                chunk_rows: int = 20_000) -> tuple[bytes, int, float]:
    """The at-risk CSV, byte for byte what `analytics.risk.iter_at_risk_csv` writes, with its
    row count and Σ expected value at risk as written (2 decimals).

    One ranked query, read raw from the driver (no per-cell type conversion) in chunks;
    each chunk's cells are formatted column by column and written with one `writerows`.
    """
    stmt = at_risk_query(risk_filter, limit, walk_band=walk_band_by_value(engine, risk_filter, limit))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    rows, total = 0, 0.0
    actions: dict[tuple, str] = {}
    with engine.connect() as conn:
        compiled = stmt.compile(dialect=engine.dialect)
        params = compiled.construct_params()
        positional = getattr(compiled, "positiontup", None)
        args = tuple(params[k] for k in positional) if positional else params
        cursor = conn.connection.driver_connection.cursor()  # plain tuples, no Row objects
        cursor.execute(str(compiled), args)
        while chunk := cursor.fetchmany(chunk_rows):
            (ids, states, regions, segments, last, orders, revenue, prob, var, bands,
             _sources) = zip(*chunk, strict=True)
            var_text = _money_cells(var)
            for v in var_text:  # in file order, as a reader of the file would add them
                total += float(v or 0)
            action = []
            for seg, band in zip(segments, bands, strict=True):
                if (seg, band) not in actions:
                    actions[seg, band] = _safe(recommended_action(seg, band))
                action.append(actions[seg, band])
            writer.writerows(zip(
                [_safe(str(v)) for v in ids], [_safe(v or "") for v in states],
                [_safe(v or "") for v in regions], [_safe(v or "") for v in segments],
                ["" if v is None else _day(v) for v in last],
                ["" if v is None else str(int(v)) for v in orders], _money_cells(revenue),
                ["" if v is None else f"{float(v):.4f}" for v in prob], var_text, action,
                strict=True))
            rows += len(chunk)
        cursor.close()
    return out.getvalue().encode("utf-8"), rows, total


def _safe(text: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _day(value: object) -> str:
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)[:10]


def _money_cells(values: tuple) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.2f}"
            for v in values]


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
    content, rows, matching, total = build_export(ctx, ra)
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
    return Answer(
        **base, summary=summary,
        figures=[Figure("Rows", fmt_int(rows), rows),
                 Figure("Value at risk in the file", fmt_money(total, s.currency), total)],
        notes=["Columns: " + ", ".join(EXPORT_COLUMNS) + ". Text cells that a spreadsheet "
               "would read as a formula start with an apostrophe."],
        export=Export(export_filename(as_of, ra), content, rows, EXPORT_COLUMNS),
    )


COMMAND = Command(
    name=COMMAND_NAME,
    usage="/export-at-risk [STATE|REGION] [min-prob P] [segment NAME] [limit N]",
    summary="The at-risk customers as a CSV file (allowlisted users and channels), ranked by value at risk.",
    examples=("/export-at-risk", "/export-at-risk SP min-prob 0.7", "/export-at-risk sul segment loyal limit 500"),
    handler=handle,
    aliases=("export",),
)
