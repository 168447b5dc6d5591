"""Vectorised checks the loaders run on each chunk of raw (string) columns.

Every parser returns the parsed values and a boolean mask of the values that were
present but could not be parsed; `first_reason` turns ordered checks into one
quarantine reason per row (the first check that fails wins).
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Tried in this order when no date format is given; the first that reads the most
# values of a sample wins (so month-first beats day-first on a tie, as US exports do).
DATE_FORMATS: tuple[str, ...] = (
    "ISO8601",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y",
)


def header_key(name: object) -> str:
    """A column name compared loosely: no BOM, accents, case, spaces or underscores."""
    text = unicodedata.normalize("NFKD", str(name).lstrip("\ufeff"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return "".join(c for c in text.lower() if c.isalnum())


def find_columns(
    columns: Iterable[str], wanted: dict[str, Sequence[str]]
) -> tuple[dict[str, str], list[str]]:
    """Match `wanted` (canonical name -> accepted spellings) to the file's columns.

    Returns (canonical -> actual column, canonical names not found).
    """
    by_key = {header_key(c): c for c in columns}
    found: dict[str, str] = {}
    missing: list[str] = []
    for canon, spellings in wanted.items():
        hit = next((by_key[header_key(s)] for s in spellings if header_key(s) in by_key), None)
        if hit is None:
            missing.append(canon)
        else:
            found[canon] = hit
    return found, missing


def blank(values: pd.Series) -> pd.Series:
    """True where a raw value is missing or only whitespace."""
    mask = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        mask |= values.str.strip().eq("").fillna(False).astype(bool)
    return mask


def clean_text(values: pd.Series) -> pd.Series:
    """Stripped strings, with blanks as missing."""
    out = values.str.strip()
    return out.mask(out.eq("").fillna(False).astype(bool))


def parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Floats from raw strings; (values, present-but-unparseable mask)."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        num = values.astype("float64")
        return num, pd.Series(False, index=values.index)
    try:  # fast path: every value is a plain number (or missing)
        num = _plain_floats(values)
    except (TypeError, ValueError):  # (pa.ArrowInvalid is a ValueError)
        num = pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")
    bad = num.isna() & ~blank(values)
    bad |= np.isinf(num)  # inf is not a usable amount
    return num.where(~bad), bad


def _plain_floats(values: pd.Series) -> pd.Series:
    """float64 of values that are all plain numbers or missing; raises ValueError otherwise.
    Arrow strings are cast by Arrow (a 100,000-row chunk in 3 ms, against 23 ms through
    Python floats); it refuses what Python would take with a second look (" 1.5", "1_0"),
    which the caller's slower path then parses as pd.to_numeric does. So "1_0" is not a
    number whatever else its chunk holds (through Python floats it was 10 in a chunk of
    plain numbers, and not a number beside any bad value)."""
    if isinstance(values.array, pd.arrays.ArrowStringArray):
        floats = pc.cast(pa.array(values.array), pa.float64())
        return pd.Series(floats.to_numpy(zero_copy_only=False), index=values.index, dtype="float64")
    return values.astype("float64")


def parse_integers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Whole numbers (as float64, NaN when missing); (values, unparseable-or-fractional mask)."""
    num, bad = parse_numbers(values)
    frac = num.notna() & (num != np.floor(num))
    return num.where(~frac), bad | frac


def infer_date_format(values: pd.Series, sample: int = 2000) -> str:
    """The format of DATE_FORMATS that reads the most of the first `sample` non-blank values."""
    head = values[~blank(values)].head(sample).str.strip()
    if head.empty:
        return "ISO8601"
    best, best_n = "ISO8601", -1
    for fmt in DATE_FORMATS:
        n = int(_to_datetime(head, fmt).notna().sum())
        if n > best_n:
            best, best_n = fmt, n
        if n == len(head):
            break
    return best


def parse_datetimes(values: pd.Series, fmt: str) -> tuple[pd.Series, pd.Series]:
    """Naive datetimes from raw strings in `fmt`; (values, present-but-unparseable mask)."""
    raw = values.str.strip()
    parsed = _to_datetime(raw, fmt)
    bad = parsed.isna() & ~blank(values)
    return parsed, bad


def _to_datetime(values: pd.Series, fmt: str) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = pd.to_datetime(values, format=fmt, errors="coerce")
        except (ValueError, TypeError):  # e.g. mixed time-zone offsets
            out = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_localize(None)  # keep the local wall time of the source
    return out.astype("datetime64[us]")


def _arrow_strings(values: pd.Series | pd.Index | np.ndarray) -> pa.Array:
    data = values.array if isinstance(values, pd.Series | pd.Index) else np.asarray(values, dtype=object)
    arr = pa.array(data, from_pandas=True) if not isinstance(data, pa.Array) else data
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def positions(keys: pd.Series | np.ndarray, index: pd.Series | np.ndarray | pd.Index) -> np.ndarray:
    """Position of each (string) key in `index`, -1 when absent (first match if repeated).

    Arrow's hash lookup: pandas' isin/reindex on Arrow strings loop in Python.
    """
    found = pc.index_in(_arrow_strings(keys), value_set=_arrow_strings(index))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def isin(values: pd.Series | pd.Index, allowed: pd.Series | np.ndarray | pd.Index) -> np.ndarray:
    """values.isin(allowed) for strings, fast."""
    found = pc.is_in(_arrow_strings(values), value_set=_arrow_strings(allowed))
    return found.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype


def take_strings(values: pd.Series | pd.Index | np.ndarray, pos: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    """values[pos] as a "str" Series (missing where pos is -1), without leaving Arrow."""
    picked = _arrow_strings(values).take(pa.array(pos, mask=pos < 0))
    return pd.Series(picked, dtype=STR, index=index)


def take(values: pd.Series | np.ndarray, pos: np.ndarray) -> np.ndarray:
    """values[pos], missing (None, NaT or NaN) where pos is -1."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        fill = np.array(["NaT"], dtype=arr.dtype)
    elif arr.dtype.kind == "f":
        fill = np.array([np.nan], dtype=arr.dtype)
    else:
        arr = arr.astype(object, copy=False)
        fill = np.array([None], dtype=object)
    return np.concatenate([arr, fill])[pos]


def too_long(values: pd.Series, limit: int) -> pd.Series:
    """True where a string is longer than `limit` characters."""
    return values.str.len().gt(limit).fillna(False).astype(bool)


def first_reason(index: pd.Index, checks: Iterable[tuple[str, pd.Series | np.ndarray]]) -> pd.Series:
    """One reason per row: the label of the first check whose mask is True, else NaN."""
    reason = pd.Series(np.full(len(index), None, dtype=object), index=index)
    open_ = np.ones(len(index), dtype=bool)
    for label, mask in checks:
        m = np.asarray(mask, dtype=bool) & open_
        if m.any():
            reason[m] = label
            open_ &= ~m
    return reason

