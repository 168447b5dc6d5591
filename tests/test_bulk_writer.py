"""BulkWriter's value conversions, written to a real store and read back."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import select

from storage import schema
from storage.loaders.bulk import BulkWriter, sql_dates


def test_sql_dates_of_dates_text_and_missing_values() -> None:
    values = pd.Series([dt.date(2020, 1, 2), None, "2019-12-31", np.nan, dt.datetime(2021, 3, 4, 5, 6),
                        pd.NaT, dt.date(2020, 1, 2), pd.Timestamp("2018-07-08 09:10")], dtype=object)
    assert list(sql_dates(values)) == ["2020-01-02", None, "2019-12-31", None, "2021-03-04", None,
                                       "2020-01-02", "2018-07-08"]
    assert list(sql_dates(pd.Series(["2020-01-02"] * 3, dtype="str"))) == ["2020-01-02"] * 3
    assert len(sql_dates(pd.Series([], dtype=object))) == 0


def test_dates_given_as_text_or_objects_read_back_as_dates(store) -> None:
    S = schema.segment_snapshots
    rows = pd.DataFrame({
        "snapshot_date": pd.Series(["2024-05-06", dt.date(2024, 5, 13), "2024-05-06"], dtype=object),
        "customer_id": ["a", "b", "c"], "segment": ["Champions", "Lost", "Champions"],
        "revenue": [1.5, np.nan, 3.0], "state": ["SP", None, "RJ"], "region": ["Southeast", None, "Southeast"],
    })
    with store.begin() as conn:
        BulkWriter(conn).insert(S, rows)
    with store.connect() as conn:
        got = {r.customer_id: r.snapshot_date for r in conn.execute(select(S.c.customer_id, S.c.snapshot_date))}
    assert got == {"a": dt.date(2024, 5, 6), "b": dt.date(2024, 5, 13), "c": dt.date(2024, 5, 6)}
