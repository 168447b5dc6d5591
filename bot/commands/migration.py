"""`/migration [weeks N] [STATE|REGION]`: how customers moved between RFM segments."""

from __future__ import annotations

import pandas as pd

from analytics import charts
from analytics.migration import COMMAND_WEEKS, NEW_CUSTOMERS, segment_migration
from bot.answers import Answer, Chart, Figure, Table, fmt_int, fmt_money, fmt_pct
from bot.commands.args import int_option, parse_args
from bot.router import Command, CommandContext

DEFAULT_WEEKS = COMMAND_WEEKS
MAX_WEEKS = 104
TOP_FLOWS = 10


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args, options=("weeks",))
    weeks = int_option(parsed, "weeks", DEFAULT_WEEKS, 1, MAX_WEEKS)
    place = ctx.place(parsed.rest_text)
    asof = ctx.as_of()
    m = segment_migration(ctx.engine, asof.date, weeks, place)
    cur = ctx.settings.currency
    flows = m.top_flows(TOP_FLOWS)
    span = f"{m.earlier.isoformat()} → {m.later.isoformat()}"
    if flows:
        lead = (f"Between {m.earlier.isoformat()} and {m.later.isoformat()}, "
                f"{fmt_int(m.downgrades)} customers moved down a segment "
                f"({fmt_money(m.downgrade_revenue, cur)} of lifetime revenue) and "
                f"{fmt_int(m.upgrades)} moved up ({fmt_money(m.upgrade_revenue, cur)}).")
        biggest = "Biggest flows: " + "; ".join(
            f"{f.sentence()} ({fmt_money(f.revenue, cur)})" for f in flows[:3]) + "."
        summary = f"{lead}\n{biggest}"
    else:
        summary = f"No customer changed segment between {m.earlier.isoformat()} and {m.later.isoformat()}."
    if m.new_customers:
        summary += (f"\n{fmt_int(m.new_customers)} new customers arrived "
                    f"({fmt_money(m.new_revenue, cur)}); they are the “{NEW_CUSTOMERS}” row.")
    figures = [
        Figure("Customers then", fmt_int(m.customers_earlier), m.customers_earlier),
        Figure("Customers now", fmt_int(m.customers_later), m.customers_later),
        Figure("Moved up", fmt_int(m.upgrades), m.upgrades),
        Figure("Moved down", fmt_int(m.downgrades), m.downgrades),
        Figure("Stayed", fmt_int(m.stayed), m.stayed),
        Figure("New customers", fmt_int(m.new_customers), m.new_customers),
    ]
    flow_table = pd.DataFrame({
        "from": [f.source for f in flows], "to": [f.target for f in flows],
        "customers": [f.customers for f in flows],
        "share of from": [fmt_pct(f.share_of_source) for f in flows],
        "revenue": [fmt_money(f.revenue, cur) for f in flows],
        "direction": [f.direction for f in flows],
    })
    seg = m.by_segment
    seg_table = pd.DataFrame({
        "segment": seg["segment"], "then": seg["earlier"], "now": seg["later"],
        "change": [f"{v:+,}" for v in seg["change"]],
        "revenue in": [fmt_money(v, cur) for v in seg["revenue_in"]],
        "revenue out": [fmt_money(v, cur) for v in seg["revenue_out"]],
        "net (with new)": [fmt_money(v, cur) for v in seg["net_revenue"]],
    })
    matrix = m.counts.reset_index().rename(columns={"from": "from \\ to"})
    png = charts.heatmap(
        m.counts, f"Segment migration over {weeks} week{'s' if weeks != 1 else ''}",
        f"{span} · {place.label}", value_format="number", shares="row",
        row_label=f"Segment on {m.earlier.isoformat()}", col_label=f"Segment on {m.later.isoformat()}",
        note="Customers per cell and share of the row.")
    return Answer(
        command="/migration",
        title=f"Segment migration — {weeks} week{'s' if weeks != 1 else ''}",
        as_of=m.later,
        as_of_note=f"snapshots {span}" + (f"; {asof.reason}" if asof.mode == "auto" and asof.tail_orders else ""),
        filter_label=place.label,
        summary=summary,
        figures=figures,
        tables=[Table("Biggest flows", flow_table),
                Table("By segment", seg_table,
                      note="Revenue: lifetime revenue of the customers who moved, as of the later snapshot."),
                Table("Transition matrix (customers)", matrix)],
        charts=[Chart("migration-matrix", "Segment migration", png)],
    )


COMMAND = Command(
    name="migration",
    usage="/migration [weeks N] [STATE|REGION]",
    summary=f"How customers moved between RFM segments over N weeks (default {DEFAULT_WEEKS}).",
    examples=("/migration", "/migration weeks 8 SP", "/migration weeks 1 sudeste"),
    handler=handle,
    cacheable=True,
)
