"""`/finance [STATE|REGION]`: revenue, freight, concentration and freight-heavy orders."""

from __future__ import annotations

import pandas as pd

from analytics import charts
from analytics.finance import finance_report
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money, fmt_num, fmt_pct
from bot.commands.args import parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    place = ctx.place(parsed.rest_text)
    base = base_answer(ctx, "/finance", "Finance: revenue, freight, concentration", place)
    rep = finance_report(ctx.engine, base["as_of"], place)
    if rep.orders == 0:
        return empty_note(base, "orders")
    cur = ctx.settings.currency
    sub = subtitle(rep.as_of, place.label)
    figures = [
        Figure("Revenue", fmt_money(rep.revenue, cur), rep.revenue),
        Figure("Freight", fmt_money(rep.freight, cur), rep.freight),
        Figure("Freight share of revenue", fmt_pct(rep.freight_share), rep.freight_share),
        Figure("Revenue from top 1% / 10% / 20% customers",
               " / ".join(fmt_pct(rep.top_shares.get(k)) for k in (0.01, 0.10, 0.20)),
               rep.top_shares.get(0.10)),
        Figure("Gini of customer revenue", fmt_num(rep.gini, 3), rep.gini),
        Figure(f"Orders with freight > {rep.heavy_ratio:.0%} of price",
               f"{fmt_int(rep.heavy_orders)} ({fmt_pct(rep.heavy_order_share)})", rep.heavy_orders),
    ]
    monthly = rep.monthly.copy()
    monthly["month_start"] = pd.PeriodIndex(monthly["month"], freq="M").to_timestamp()
    partial = bool(len(monthly) and monthly["partial"].iloc[-1])
    chart_list = [
        Chart("finance-monthly", "Revenue and freight by month", charts.stacked_bar_chart(
            monthly.set_index("month_start")[["items_value", "freight"]].rename(
                columns={"items_value": "Items", "freight": "Freight"}),
            None, ["Items", "Freight"], "Revenue by month: items and freight", sub,
            value_format="money", currency=cur, partial_last=partial)),
    ]
    return Answer(
        **base, figures=figures, charts=chart_list,
        tables=[
            table("By category (freight share)", rep.by_category.sort_values("revenue", ascending=False),
                  ["category", "orders", "revenue", "freight_share", "heavy_orders"], head=12,
                  rename={"freight_share": "freight share", "heavy_orders": "freight-heavy orders"},
                  ints=["orders", "heavy_orders"], money=["revenue"], pct=["freight_share"]),
            table("By state", rep.by_state, ["state", "orders", "revenue", "freight", "freight_share"],
                  head=10, rename={"freight_share": "freight share"}, ints=["orders"],
                  money=["revenue", "freight"], pct=["freight_share"]),
        ],
    )


COMMAND = Command(
    name="finance",
    usage="/finance [STATE|REGION]",
    summary="Revenue and freight by month, category and state; revenue concentration (top customers, Gini).",
    examples=("/finance", "/finance SP"),
    handler=handle,
    cacheable=True,
)
