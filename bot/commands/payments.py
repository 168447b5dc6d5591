"""`/payments [STATE|REGION]`: methods, installments and payments that don't match orders."""

from __future__ import annotations

from analytics import charts
from analytics.payments import payments_report
from bot.answers import Answer, Chart, Figure, fmt_int, fmt_money, fmt_num, fmt_pct
from bot.commands.args import parse_args
from bot.commands.common import base_answer, empty_note, subtitle, table
from bot.router import Command, CommandContext


def handle(ctx: CommandContext, args: list[str]) -> Answer:
    parsed = parse_args(args)
    place = ctx.place(parsed.rest_text)
    base = base_answer(ctx, "/payments", "Payments and installments", place)
    rep = payments_report(ctx.engine, base["as_of"], place)
    if rep.payments == 0:
        return empty_note(base, "payments")
    cur = ctx.settings.currency
    sub = subtitle(rep.as_of, place.label)
    figures = [
        Figure("Payments", fmt_int(rep.payments), rep.payments),
        Figure("Paid orders", fmt_int(rep.paid_orders), rep.paid_orders),
        Figure("Payment value", fmt_money(rep.payment_value, cur), rep.payment_value),
        Figure("Share of value paid in installments", fmt_pct(rep.installment_share), rep.installment_share),
        Figure("Mean installments", fmt_num(rep.mean_installments, 2), rep.mean_installments),
        Figure("Orders whose payments don't match", fmt_int(rep.mismatched_orders), rep.mismatched_orders),
    ]
    tables = [
        table("By method", rep.by_method, ["method", "payments", "value", "value_share", "mean_installments"],
              rename={"value_share": "share of value", "mean_installments": "avg installments"},
              ints=["payments"], money=["value"], pct=["value_share"], nums=["mean_installments"]),
        table("By state", rep.by_state, ["state", "payments", "value", "mean_installments", "installment_share"],
              rename={"mean_installments": "avg installments", "installment_share": "in installments"},
              head=10, ints=["payments"], money=["value"], nums=["mean_installments"],
              pct=["installment_share"]),
    ]
    if rep.by_segment is not None and len(rep.by_segment):
        tables.append(table("By RFM segment", rep.by_segment,
                            ["segment", "customers", "value", "mean_installments", "installment_share"],
                            rename={"mean_installments": "avg installments",
                                    "installment_share": "in installments"},
                            ints=["customers"], money=["value"], nums=["mean_installments"],
                            pct=["installment_share"]))
    if rep.mismatched_orders:
        tables.append(table("Largest payment mismatches", rep.biggest_mismatches,
                            ["order_id", "purchased_at", "order_value", "paid", "difference"], head=10,
                            money=["order_value", "paid", "difference"], dates=["purchased_at"],
                            note="Paid differs from items + freight by more than 1%."))
    chart_list = [
        Chart("payments-methods", "Payment methods by value", charts.bar_chart(
            rep.by_method.set_index("method")["value"], "Payment value by method", sub,
            value_format="money", currency=cur)),
        Chart("payments-installments", "Installments", charts.bar_chart(
            rep.installments.set_index("installments")["payments"].rename(index=lambda i: f"{i}x"),
            "Payments by number of installments", sub, horizontal=False, sort=False, max_bars=24)),
    ]
    return Answer(**base, figures=figures, tables=tables, charts=chart_list)


COMMAND = Command(
    name="payments",
    usage="/payments [STATE|REGION]",
    summary="Payment methods by count and value, installments, installment share by state and segment, mismatches.",
    examples=("/payments", "/payments sul"),
    handler=handle,
    cacheable=True,
    aliases=("payment", "installments"),
)
