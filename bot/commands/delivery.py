"""`/delivery [STATE|REGION]`: delivery speed, SLA compliance and what lateness costs."""

from __future__ import annotations

import pandas as pd

from analytics import charts
from analytics.delivery import delivery_report
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_num, fmt_pct
from bot.commands.args import parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    place = ctx.place(parsed.rest_text)
    base = base_answer(ctx, "/delivery", "Delivery and SLA", place)
    rep = delivery_report(ctx.engine, base["as_of"], place, min_orders=ctx.settings.min_group_customers)
    if rep.delivered_orders == 0:
        return empty_note(base, "delivered orders")
    figures = [
        Figure("Delivered orders", fmt_int(rep.delivered_orders), rep.delivered_orders),
        Figure("SLA compliance (on or before the estimate)", fmt_pct(rep.on_time_share), rep.on_time_share),
        Figure("Late share", fmt_pct(rep.late_share), rep.late_share),
        Figure("Mean days late (late orders)", fmt_num(rep.mean_days_late, 1), rep.mean_days_late),
        Figure("Delivery days: median / mean / p90",
               f"{fmt_num(rep.median_days, 1)} / {fmt_num(rep.mean_days, 1)} / {fmt_num(rep.p90_days, 1)}",
               rep.median_days),
        Figure("Review: on time vs late",
               f"{fmt_num(rep.review_on_time, 2)} vs {fmt_num(rep.review_late, 2)}", rep.review_late),
    ]
    level, frame = ("state", rep.by_state) if place.kind == "region" or place.is_all else ("region", rep.by_region)
    if place.kind == "state":
        level, frame = "state", rep.by_state
    sub = subtitle(rep.as_of, place.label)
    ranked = frame[frame["orders"] >= rep.min_orders].set_index(level)["on_time_share"]
    chart = charts.bar_chart(ranked.sort_values(), f"SLA compliance by {level}", sub,
                             value_format="percent", max_bars=27, sort=False)
    repeat = rep.repeat_after_first
    notes = []
    if len(repeat) == 2:
        r = repeat.set_index("first_order")["repeat_rate"]
        notes.append(f"Customers whose first order was late bought again {fmt_pct(r.get('late'), 2)} "
                     f"of the time, against {fmt_pct(r.get('on time'), 2)} after an on-time first order.")
    if rep.best_states and place.kind != "state":
        notes.append(f"Best states: {', '.join(rep.best_states)}; worst: {', '.join(rep.worst_states)} "
                     f"(at least {rep.min_orders} orders).")
    if rep.best_regions and place.is_all:
        notes.append(f"Best region: {rep.best_regions[0]}; worst: {rep.worst_regions[0]}.")
    return Answer(
        **base, figures=figures, notes=notes,
        charts=[Chart(f"delivery-sla-by-{level}", "SLA compliance", chart)],
        tables=[
            table(f"By {level}", frame.sort_values("on_time_share"),
                  [level, "orders", "on_time_share", "late_share", "median_days", "mean_days_late"],
                  rename={"on_time_share": "on time", "late_share": "late", "median_days": "median days",
                          "mean_days_late": "days late"},
                  ints=["orders"], pct=["on_time_share", "late_share"],
                  nums=["median_days", "mean_days_late"]),
            table("Freight bands vs SLA", _bands(rep.freight_bands),
                  ["freight", "orders", "on_time_share", "mean_days"],
                  rename={"on_time_share": "on time", "mean_days": "mean days"},
                  ints=["orders"], pct=["on_time_share"], nums=["mean_days"]),
        ],
    )


def _bands(bands: pd.DataFrame) -> pd.DataFrame:
    out = bands.copy()
    out["freight"] = [f"{lo:,.2f}–{hi:,.2f}" for lo, hi in zip(out["freight_min"], out["freight_max"], strict=True)]
    return out


COMMAND = Command(
    name="delivery",
    usage="/delivery [STATE|REGION]",
    summary="Delivery days, SLA compliance, late share by state/region, freight vs SLA, lateness vs reviews and repeat.",
    examples=("/delivery", "/delivery norte", "/delivery RJ"),
    handler=handle,
    cacheable=True,
    aliases=("sla", "deliveries"),
)
