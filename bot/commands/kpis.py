"""`/kpis [STATE|REGION]`: the headline numbers, monthly trend, geography and categories."""

from __future__ import annotations

import pandas as pd

from analytics import charts
from analytics.kpis import overview
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money, fmt_num, fmt_pct
from bot.commands.args import parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    place = ctx.place(parsed.rest_text)
    base = base_answer(ctx, "/kpis", "Key figures", place)
    ov = overview(ctx.engine, base["as_of"], place)
    if ov.orders == 0:
        return empty_note(base, "orders")
    cur = ctx.settings.currency
    sub = subtitle(ov.as_of, place.label)
    figures = [
        Figure("Customers", fmt_int(ov.customers), ov.customers),
        Figure("Orders", fmt_int(ov.orders), ov.orders),
        Figure("Revenue", fmt_money(ov.revenue, cur), ov.revenue),
        Figure("Average order value", fmt_money(ov.average_order_value, cur), ov.average_order_value),
        Figure("Repeat-purchase rate", fmt_pct(ov.repeat_rate, 2), ov.repeat_rate),
        Figure("Returning-customer revenue", fmt_pct(ov.returning_revenue / ov.revenue if ov.revenue else None),
               ov.returning_revenue),
        Figure("Average review", fmt_num(ov.average_review, 2) if ov.average_review else "no reviews",
               ov.average_review),
    ]
    if place.kind != "state":
        figures.append(Figure("Top-5-state revenue share", fmt_pct(ov.top5_state_share),
                              ov.top5_state_share))
    if ov.last_complete_month and ov.mom_change is not None:
        figures.append(Figure(f"Revenue {ov.last_complete_month} vs month before",
                              f"{ov.mom_change:+.1%}", ov.mom_change))
    monthly = ov.monthly.copy()
    monthly["month_start"] = pd.PeriodIndex(monthly["month"], freq="M").to_timestamp()
    partial_last = bool(len(monthly) and monthly["partial"].iloc[-1])
    chart_list = [
        Chart("kpis-monthly-revenue", "Monthly revenue", charts.line_chart(
            monthly, "month_start", "revenue", "Monthly revenue", sub, value_format="money",
            currency=cur, partial_last=partial_last)),
        Chart("kpis-revenue-by-state", "Revenue by state", charts.bar_chart(
            ov.by_state.set_index("state")["revenue"], "Revenue by state", sub,
            value_format="money", currency=cur)),
        Chart("kpis-weekday-hour", "Revenue by weekday and hour", charts.heatmap(
            ov.weekday_hour, "Revenue by weekday × hour", sub, value_format="money", currency=cur,
            row_label="Weekday", col_label="Hour of purchase")),
    ]
    recent = monthly.tail(6)
    tables = [
        table("Last months", recent,
              ["month", "revenue", "orders", "active_customers", "new_customers", "new_ratio",
               "mom_change", "partial"],
              rename={"active_customers": "active", "new_customers": "new",
                      "new_ratio": "new share", "mom_change": "MoM"},
              money=["revenue"], ints=["orders", "active_customers", "new_customers"],
              pct=["new_ratio", "mom_change"],
              note="A partial month is excluded from month-over-month change."),
        table("Revenue by region", ov.by_region, ["region", "customers", "orders", "revenue", "share"],
              ints=["customers", "orders"], money=["revenue"], pct=["share"]),
        table("Top categories", ov.by_category, ["category", "orders", "revenue", "share"], head=10,
              ints=["orders"], money=["revenue"], pct=["share"],
              note=f"{ov.categories_for_80pct} of {ov.categories} categories make 80% of revenue."),
    ]
    if len(ov.category_lift):
        top_lift = ov.category_lift.sort_values("lift", ascending=False).groupby("group").head(2)
        tables.append(table(f"Categories that over-index by {ov.lift_level}", top_lift,
                            ["group", "category", "orders", "lift"], ints=["orders"], nums=["lift"]))
    summary = (f"{fmt_int(ov.customers)} customers spent {fmt_money(ov.revenue, cur)} on "
               f"{fmt_int(ov.orders)} orders; {fmt_pct(ov.repeat_rate, 2)} came back for another order.")
    return Answer(**base, summary=summary, figures=figures, tables=tables, charts=chart_list)


COMMAND = Command(
    name="kpis",
    usage="/kpis [STATE|REGION]",
    summary="Customers, orders, revenue, AOV, repeat rate, reviews, monthly trend, states, categories.",
    examples=("/kpis", "/kpis SP", "/kpis nordeste"),
    handler=handle,
    cacheable=True,
    aliases=("overview",),
)
