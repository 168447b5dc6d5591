"""How customers pay: methods, installments, and payments that do not add up.

Definitions (payments of purchases placed on or before `as_of`, customers in the place):
- a payment is one row of `payments` (an order may be paid with several);
- share paid in installments = value of payments with installments > 1 / value of all
  payments (a share of payment value, not of order revenue);
- mean installments by state/segment are over payment rows (each payment counts once);
- segments come from `customer_scores` when that table has rows (its own as-of date is
  reported), otherwise that breakdown is None;
- a purchase's payments *mismatch* when |Σ payment value − (items_value + freight_value)|
  > 0.01 and > 1% of the order value; purchases with no payment row are counted apart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Float, case, cast, distinct, func, select

from analytics.filters import (
    facts_meta,
    purchase_scope,
    read_frame,
    require,
    scores_as_of,
    where_place,
)
from analytics.results import Result
from storage import schema
from storage.geography import ALL, Place

ORD, CUS, PAY, SCO = schema.orders, schema.customers, schema.payments, schema.customer_scores
MISMATCH_ABS = 0.01
MISMATCH_REL = 0.01
NO_SEGMENT = "(none)"  # the segment of a payer with no RFM segment


@dataclass(frozen=True, eq=False)
class PaymentsReport(Result):
    payments: int
    paid_orders: int
    payment_value: float
    installment_share: float | None  # value with installments > 1 / all payment value
    mean_installments: float | None
    by_method: pd.DataFrame  # method, payments, value, mean_installments, value_share
    installments: pd.DataFrame  # installments, payments, value, value_share
    by_state: pd.DataFrame  # state, region, payments, value, mean_installments, installment_share
    by_segment: pd.DataFrame | None  # segment, customers, payments, value, mean_installments, installment_share
    segments_as_of: dt.date | None
    mismatched_orders: int
    mismatch_value: float  # Σ |paid − order value| over mismatched orders
    unpaid_orders: int  # purchases with no payment row
    # order_id, customer_id, purchased_at, order_value, paid, difference (largest |difference| first)
    biggest_mismatches: pd.DataFrame


def payments_report(
    engine: Engine, as_of: dt.date, place: Place = ALL, *, top_mismatches: int = 20
) -> PaymentsReport:
    """Payment methods, installments and payment mismatches for `place` as of `as_of`."""
    require(engine, select(PAY.c.order_id), "payments")
    scope = purchase_scope(as_of, place)
    paid = PAY.join(ORD, ORD.c.order_id == PAY.c.order_id)
    multi = case((PAY.c.installments > 1, PAY.c.value), else_=0.0)
    method = func.coalesce(PAY.c.method, "(unknown)")
    facts = facts_meta(engine, as_of) is not None
    # One grouped pass (or the refresh's copy of it); every breakdown below is a sum over it.
    if facts:
        A = schema.agg_payments
        cells = read_frame(engine, where_place(select(
            A.c.state, A.c.region, A.c.method, A.c.installments, A.c.payments, A.c.value,
        ), A, place))
    else:
        cells = read_frame(engine, (
            select(
                CUS.c.state, CUS.c.region, method.label("method"), PAY.c.installments,
                func.count().label("payments"), func.sum(PAY.c.value).label("value"),
            )
            .select_from(paid.outerjoin(CUS, CUS.c.customer_id == ORD.c.customer_id))
            .where(scope)
            .group_by(CUS.c.state, CUS.c.region, method, PAY.c.installments)
        ))
    cells["value"] = cells["value"].astype(float)
    cells["multi"] = cells["value"].where(cells["installments"] > 1, 0.0)
    cells["inst_x_n"] = cells["installments"] * cells["payments"]
    cells["n_inst"] = cells["payments"].where(cells["installments"].notna(), 0)

    by_method = _summed(cells, ["method"]).drop(columns="installment_share")
    by_method = _share(by_method, "value").sort_values(
        ["value", "method"], ascending=[False, True], ignore_index=True
    )
    installments = cells.groupby("installments", as_index=False, dropna=False)[
        ["payments", "value"]
    ].sum()
    installments["installments"] = installments["installments"].astype("Int64")  # NA: unknown
    installments = _share(installments, "value")
    by_state = _summed(cells, ["state", "region"]).sort_values(
        ["value", "state"], ascending=[False, True], ignore_index=True
    )
    by_segment, segments_as_of = _by_segment(engine, scope, paid, multi, place if facts else None)

    value = float(cells["value"].sum())
    n_payments = int(cells["payments"].sum())
    n_inst = cells["n_inst"].sum()
    paid_orders, mismatched, mismatch_value, unpaid, biggest = (_mismatch_facts if facts else _mismatches)(
        engine, as_of, place, top_mismatches
    )
    return PaymentsReport(
        as_of=as_of,
        place=place,
        payments=n_payments,
        paid_orders=paid_orders,
        payment_value=value,
        installment_share=float(cells["multi"].sum() / value) if value > 0 else None,
        mean_installments=float(cells["inst_x_n"].sum() / n_inst) if n_inst else None,
        by_method=by_method,
        installments=installments,
        by_state=by_state,
        by_segment=by_segment,
        segments_as_of=segments_as_of,
        mismatched_orders=mismatched,
        mismatch_value=mismatch_value,
        unpaid_orders=unpaid,
        biggest_mismatches=biggest,
    )


def _summed(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = cells.groupby(keys, as_index=False, dropna=False)[
        ["payments", "value", "multi", "inst_x_n", "n_inst"]
    ].sum()
    g["mean_installments"] = g["inst_x_n"] / g["n_inst"].where(g["n_inst"] > 0)
    g["installment_share"] = g["multi"] / g["value"].where(g["value"] > 0)
    g["payments"] = g["payments"].astype(int)
    return g[keys + ["payments", "value", "mean_installments", "installment_share"]]


def _share(df: pd.DataFrame, col: str) -> pd.DataFrame:
    total = df[col].sum()
    df["value_share"] = df[col] / total if total > 0 else np.nan
    return df


def _installment_share(df: pd.DataFrame) -> pd.DataFrame:
    df["installment_share"] = df["multi"] / df["value"].where(df["value"] > 0)
    return df.drop(columns="multi")



def _by_segment(
    engine: Engine, scope, paid, multi, facts_place: Place | None  # noqa: ANN001
) -> tuple[pd.DataFrame | None, dt.date | None]:
    """Breakdown by RFM segment; from agg_payment_segments when `facts_place` is given."""
    seg_as_of = scores_as_of(engine)
    if seg_as_of is None:
        return None, None
    if facts_place is not None:
        A = schema.agg_payment_segments
        sums = [func.sum(A.c[c]).label(c) for c in (
            "customers", "payments", "value", "installments_sum", "installments_n", "multi")]
        df = read_frame(engine, where_place(select(A.c.segment, *sums), A, facts_place).group_by(A.c.segment))
        df = df.astype({"customers": int, "payments": int, "value": float, "multi": float})
        n_inst = df["installments_n"].astype(float)
        df["mean_installments"] = df["installments_sum"].astype(float) / n_inst.where(n_inst > 0)
        df = _installment_share(df[["segment", "customers", "payments", "value", "mean_installments", "multi"]])
        df = df.sort_values(["value", "segment"], ascending=[False, True], ignore_index=True)
        return df, seg_as_of
    segment = func.coalesce(SCO.c.segment, NO_SEGMENT)
    df = read_frame(engine, (
        select(
            segment.label("segment"),
            func.count(distinct(ORD.c.customer_id)).label("customers"),
            func.count().label("payments"),
            func.sum(PAY.c.value).label("value"),
            func.avg(cast(PAY.c.installments, Float)).label("mean_installments"),
            func.sum(multi).label("multi"),
        )
        .select_from(paid.join(SCO, SCO.c.customer_id == ORD.c.customer_id))
        .where(scope).group_by(segment)
    ))
    df = _installment_share(df).sort_values(["value", "segment"], ascending=[False, True], ignore_index=True)
    return df, seg_as_of


def _mismatches(
    engine: Engine, as_of: dt.date, place: Place, top: int
) -> tuple[int, int, float, int, pd.DataFrame]:
    """(paid orders, mismatched orders, Σ |difference|, unpaid orders, biggest mismatches)."""
    per_order = (
        select(PAY.c.order_id, func.sum(PAY.c.value).label("paid"))
        .group_by(PAY.c.order_id)
        .subquery("paid")
    )
    stmt = (
        select(
            ORD.c.order_id,
            (ORD.c.items_value + ORD.c.freight_value).label("order_value"),
            per_order.c.paid,
        )
        .select_from(ORD.outerjoin(per_order, per_order.c.order_id == ORD.c.order_id))
        .where(purchase_scope(as_of, place))
    )
    df = read_frame(engine, stmt)
    unpaid = int(df["paid"].isna().sum())
    df = df[df["paid"].notna()].astype({"paid": float, "order_value": float})
    n_paid = len(df)
    df["difference"] = df["paid"] - df["order_value"]
    gap = df["difference"].abs()
    df = df[(gap > MISMATCH_ABS) & (gap > MISMATCH_REL * df["order_value"].abs())]
    df = df.assign(gap=df["difference"].abs()).sort_values(
        ["gap", "order_id"], ascending=[False, True], kind="stable"
    )
    biggest = df.head(top)
    if len(biggest):
        details = read_frame(engine, select(
            ORD.c.order_id, ORD.c.customer_id, ORD.c.purchased_at
        ).where(ORD.c.order_id.in_(list(biggest["order_id"]))))
        biggest = biggest.merge(details, on="order_id", how="left")
    else:
        biggest = biggest.assign(customer_id=pd.Series(dtype=object), purchased_at=pd.Series(dtype=object))
    cols = ["order_id", "customer_id", "purchased_at", "order_value", "paid", "difference"]
    return n_paid, len(df), float(df["difference"].abs().sum()), unpaid, biggest[cols].reset_index(drop=True)


def _mismatch_facts(
    engine: Engine, as_of: dt.date, place: Place, top: int
) -> tuple[int, int, float, int, pd.DataFrame]:
    """`_mismatches` from agg_payment_orders and agg_payment_mismatches."""
    PO, M = schema.agg_payment_orders, schema.agg_payment_mismatches
    sums = [func.coalesce(func.sum(PO.c[c]), 0) for c in (
        "paid_orders", "mismatched_orders", "mismatch_value", "unpaid_orders")]
    with engine.connect() as conn:
        paid, mismatched, value, unpaid = conn.execute(where_place(select(*sums), PO, place)).one()
    cols = ["order_id", "customer_id", "purchased_at", "order_value", "paid", "difference"]
    biggest = read_frame(engine, where_place(select(*(M.c[c] for c in cols)), M, place).order_by(
        M.c.gap.desc(), M.c.order_id
    ).limit(top))
    return int(paid), int(mismatched), float(value), int(unpaid), biggest
