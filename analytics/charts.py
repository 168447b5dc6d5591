"""Every chart Retail Pulse draws, as PNG bytes in one house style.

Charts are 1200×700 px (Slack's preview size), with a left-aligned title and a
subtitle line (as-of date and filter), thousands separators, one accent colour on
greys, no top/right spines and a light grid. Functions take plain data (pandas
objects and labels) and return PNG bytes; empty input gives a "No data for this
filter" picture instead of an exception. Same input, same bytes.

Percentages are fractions: 0.25 is drawn as "25%".

Rendering uses `matplotlib.figure.Figure` with the Agg canvas directly, never
pyplot or rcParams, so it does not touch global matplotlib state; a module lock
serialises renders because matplotlib's text caches are not thread-safe.
"""

from __future__ import annotations

import datetime
import functools
import io
import math
import re
import textwrap
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps, ticker
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = [
    "ACCENT",
    "MAX_PNG_BYTES",
    "NO_DATA_MESSAGE",
    "PALETTE",
    "bar_chart",
    "empty_chart",
    "format_value",
    "grouped_bar_chart",
    "heatmap",
    "histogram",
    "line_chart",
    "scatter_chart",
    "stacked_bar_chart",
]

ValueFormat = Literal["number", "money", "percent"]

WIDTH_PX, HEIGHT_PX, DPI = 1200, 700, 120
MAX_PNG_BYTES = 1_000_000
NO_DATA_MESSAGE = "No data for this filter"

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
ACCENT = "#0072B2"
NEGATIVE = "#D55E00"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#6B6B6B", "#F0E442")
GREY_BAR = "#C3C9D0"
TEXT = "#1F2328"
MUTED = "#5F6670"
FAINT = "#8A9099"
GRID = "#E3E6EA"
SPINE = "#B8BEC6"

TITLE_PT, SUBTITLE_PT, LABEL_PT, TICK_PT, VALUE_PT, NOTE_PT = 17, 12, 11, 11, 10.5, 10
MAX_SCATTER_POINTS = 50_000
_CHAR_EM = 0.62  # average glyph width of DejaVu Sans digits/letters, in em
_LOCK = threading.RLock()
_MONTH_TEXT = re.compile(r"\d{4}-\d{2}(-01)?")


# ---------------------------------------------------------------- formatting


def _money_prefix(currency: str) -> str:
    # "£1,234" but "R$ 1,234": multi-character symbols read better with a space.
    return currency + (" " if len(currency) > 1 else "")


def format_value(value: float, fmt: ValueFormat, currency: str = "R$", decimals: int = 0) -> str:
    """One value as text: thousands separators, currency prefix, fractions as percent."""
    if value is None or not np.isfinite(value):
        return "–"
    body = f"{abs(value) * (100 if fmt == 'percent' else 1):,.{max(int(decimals), 0)}f}"
    negative = value < 0 and body.strip("0.,") != ""  # no "−0"
    if fmt == "percent":
        body += "%"
    elif fmt == "money":
        body = _money_prefix(currency) + body
    return ("\u2212" if negative else "") + body


def _compact(value: float, fmt: ValueFormat, currency: str) -> str:
    """Short form for tight spaces: 950, 12.3k, 1.05M, 45%."""
    if value is None or not np.isfinite(value):
        return "–"
    if fmt == "percent":
        return format_value(value, fmt, currency, 0 if abs(value) >= 0.1 or value == 0 else 1)
    mag, suffix = abs(value), ""
    for cut, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if mag >= cut * 0.9995:
            mag, suffix = mag / cut, name
            break
    digits = 2 if mag < 10 else (1 if mag < 100 else 0)
    if not suffix and (mag >= 100 or mag == int(mag)):
        digits = 0
    body = f"{mag:.{digits}f}"
    if "." in body:
        body = body.rstrip("0").rstrip(".")
    body += suffix
    if fmt == "money":
        body = _money_prefix(currency) + body
    return ("\u2212" if value < 0 and body.strip("0.") else "") + body


def _label_decimals(values: Sequence[float] | np.ndarray, fmt: ValueFormat) -> int:
    """Decimals shared by the value labels of one chart."""
    arr = np.asarray(values, dtype=float)
    arr = np.abs(arr[np.isfinite(arr)])
    if arr.size == 0:
        return 0
    top = float(arr.max())
    if fmt == "percent":
        return 1 if top * 100 >= 1 else 2
    if fmt == "money":
        return 0 if top >= 1000 else 2
    if np.allclose(arr, np.round(arr)) or top >= 1000:
        return 0
    return 1 if top >= 10 else 2


def _cell_decimals(value: float, fmt: ValueFormat) -> int:
    """Decimals for one heatmap cell (retention spans 100% down to 0.3%)."""
    mag = abs(value) * (100 if fmt == "percent" else 1)
    if fmt == "percent":
        return 0 if mag >= 10 or mag == 0 else (1 if mag >= 1 else 2)
    if fmt == "money":
        return 0 if mag >= 100 else 2
    return 0 if mag == round(mag) or mag >= 100 else 1


class _AxisFormatter(ticker.Formatter):
    """Tick labels with separators; decimals follow the tick step (or the value on log axes)."""

    def __init__(self, fmt: ValueFormat, currency: str, log: bool = False) -> None:
        self.fmt, self.currency, self.log = fmt, currency, log
        self._ticks: np.ndarray = np.array([])

    def set_locs(self, locs: Sequence[float]) -> None:
        self._ticks = np.sort(np.asarray(locs, dtype=float))

    def __call__(self, x: float, pos: int | None = None) -> str:
        scale = 100 if self.fmt == "percent" else 1
        if self.log:
            ref = abs(x) * scale
        else:
            locs = self._ticks
            ref = float(np.min(np.diff(locs))) * scale if locs.size > 1 else abs(x) * scale
        decimals = 0
        while ref and decimals < 4 and abs(ref * 10**decimals - round(ref * 10**decimals)) > 1e-6:
            decimals += 1
        if abs(x) * scale < 1e-9 * max(ref, 1):
            x = 0.0
        return format_value(x, self.fmt, self.currency, decimals)


def _truncate(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: max(limit - 1, 1)].rstrip() + "…"


def _short_labels(labels: Sequence[Any], limit: int) -> list[str]:
    """Labels cut to `limit` characters; cut in the middle when cutting the end
    would make two of them look the same (long names sharing a prefix)."""
    full = [" ".join(str(lbl).split()) for lbl in labels]
    ends = [_truncate(lbl, limit) for lbl in full]
    if len(set(ends)) == len(set(full)):
        return ends
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return [lbl if len(lbl) <= limit else lbl[:head] + "…" + lbl[-tail:] for lbl in full]


def _wrap(text: str, width: int, lines: int = 2) -> str:
    """Wrap on spaces and after underscores (category_names), at most `lines` lines."""
    spaced = " ".join(str(text).split()).replace("_", "_\x00 ")
    parts = textwrap.wrap(spaced, width=max(width, 4) + 1, break_long_words=True) or [""]
    parts = [p.replace("_\x00 ", "_").replace("\x00", "") for p in parts]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = _truncate(parts[-1] + " …", width)
    return "\n".join(parts)


def _value_locator(n: int = 6) -> ticker.MaxNLocator:
    return ticker.MaxNLocator(n, steps=[1, 2, 2.5, 5, 10])


def _text_px(chars: int, points: float) -> float:
    return chars * _CHAR_EM * points * DPI / 72


def _category_text(value: Any) -> str:
    if isinstance(value, pd.Period):
        return str(value)
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
        if ts == ts.normalize():
            return ts.strftime("%Y-%m") if ts.day == 1 else ts.strftime("%Y-%m-%d")
        return ts.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _month_labels(values: Sequence[Any], step: int = 1) -> list[str] | None:
    """'Jan' labels with the year under the first shown month of each year, when
    every value is the first of a month; every `step`-th label only. Else None."""
    stamps = []
    for v in values:
        if isinstance(v, pd.Period):
            v = v.to_timestamp()
        elif isinstance(v, str):
            if not _MONTH_TEXT.fullmatch(v.strip()):
                return None
            v = pd.Timestamp(v.strip())
        if not isinstance(v, (pd.Timestamp, datetime.date, np.datetime64)):
            return None
        stamps.append(pd.Timestamp(v))
    if not stamps:
        return None
    if any(pd.isna(s) or s != s.normalize() or s.day != 1 for s in stamps):
        return None
    out, last_year = [], None
    for i, s in enumerate(stamps):
        if i % step:
            out.append("")
            continue
        out.append(s.strftime("%b") + (f"\n{s.year}" if s.year != last_year else ""))
        last_year = s.year
    return out


def _top_legend(ax: Axes, handles: list[Any], max_width_px: float = WIDTH_PX * 0.9) -> None:
    """A frameless legend in one row above the plot (two or more rows, read left to right)."""
    widths = [_text_px(len(h.get_label()), TICK_PT) + 50 for h in handles]
    ncol = len(handles)
    while ncol > 1 and sum(sorted(widths, reverse=True)[:ncol]) > max_width_px:
        ncol -= 1
    nrow = math.ceil(len(handles) / ncol)
    # matplotlib fills legends column by column; reorder so rows read left to right
    order = [r * ncol + c for c in range(ncol) for r in range(nrow) if r * ncol + c < len(handles)]
    ax.legend(handles=[handles[i] for i in order], loc="lower left", bbox_to_anchor=(0, 1.01),
              ncol=ncol, frameon=False, fontsize=TICK_PT, labelcolor=TEXT, handlelength=1.4,
              handleheight=1.0, handletextpad=0.5, columnspacing=1.6, borderaxespad=0.2)


# ---------------------------------------------------------------- figure scaffolding


def _new_figure(title: str, subtitle: str, note: str | None = None) -> Figure:
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    left = 22 / WIDTH_PX
    title_chars = int((WIDTH_PX - 44) / (TITLE_PT * 0.64 * DPI / 72))
    sub_chars = int((WIDTH_PX - 44) / (SUBTITLE_PT * 0.6 * DPI / 72))
    fig.text(left, 1 - 18 / HEIGHT_PX, _truncate(title, title_chars), ha="left", va="top",
             fontsize=TITLE_PT, fontweight="bold", color=TEXT)
    if subtitle:
        fig.text(left, 1 - 52 / HEIGHT_PX, _truncate(subtitle, sub_chars), ha="left", va="top",
                 fontsize=SUBTITLE_PT, color=MUTED)
    bottom = 10 / HEIGHT_PX
    if note:
        note_chars = int((WIDTH_PX - 44) / (NOTE_PT * 0.6 * DPI / 72))
        fig.text(left, 12 / HEIGHT_PX, _truncate(note, note_chars), ha="left", va="bottom",
                 fontsize=NOTE_PT, color=FAINT)
        bottom = 38 / HEIGHT_PX
    top = 1 - (88 if subtitle else 62) / HEIGHT_PX
    fig.set_layout_engine(ConstrainedLayoutEngine(
        rect=(10 / WIDTH_PX, bottom, 1 - 30 / WIDTH_PX, top - bottom), h_pad=0.06, w_pad=0.06))
    return fig


def _style_axes(ax: Axes, grid: Literal["x", "y", "both", "none"] = "y") -> None:
    ax.set_facecolor("white")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(SPINE)
        ax.spines[side].set_linewidth(0.9)
    ax.tick_params(axis="both", which="both", labelsize=TICK_PT, colors=MUTED, length=0, pad=6)
    ax.tick_params(axis="both", which="major", labelcolor=TEXT)
    if grid != "none":
        ax.grid(True, axis=grid, color=GRID, linewidth=0.9)
    ax.set_axisbelow(True)


def _axis_label(ax: Axes, which: Literal["x", "y"], text: str | None) -> None:
    if text:
        setter = ax.set_xlabel if which == "x" else ax.set_ylabel
        setter(_truncate(text, 70), fontsize=LABEL_PT, color=MUTED, labelpad=8)


def _freeze_layout(fig: Figure) -> None:
    """Run the layout once and keep it: later artists are placed in pixels."""
    fig.draw_without_rendering()
    fig.set_layout_engine("none")


def _join_notes(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return " · ".join(kept) if kept else None


def _to_png(fig: Figure) -> bytes:
    # lay out once here, then no layout engine at all (not even a frozen one's placeholder):
    # with one, savefig lays the figure out and draws it once more before the PNG's drawing
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.draw_without_rendering()
    fig.set_layout_engine(None)
    data = b""
    for dpi in (DPI, 100, 80, 64):  # the first almost always fits; the rest are a safety net
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
        data = buf.getvalue()
        if len(data) < MAX_PNG_BYTES:
            break
    return data


def empty_chart(title: str, subtitle: str = "", message: str = NO_DATA_MESSAGE,
                *, note: str | None = None) -> bytes:
    """A valid PNG with the title, subtitle and a centred message (default "No data for this filter")."""
    with _LOCK:
        fig = _new_figure(title, subtitle, note)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=16, color=FAINT,
                transform=ax.transAxes)
        return _to_png(fig)


def _chart(fn: Callable[..., bytes]) -> Callable[..., bytes]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        with _LOCK:
            return fn(*args, **kwargs)

    return wrapper


def _finite(values: Any) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(np.ravel(np.asarray(values, dtype=object))), errors="coerce")
    arr = arr.to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def _label_room(values: np.ndarray, labels: Sequence[str], axis_px: float,
                lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """Axis limits that leave room for value labels drawn beyond the bar ends."""
    vmax = max(float(np.nanmax(values)), 0.0) if hi is None else hi
    vmin = min(float(np.nanmin(values)), 0.0) if lo is None else lo
    if vmax == vmin:
        return (vmin, vmin + 1.0) if vmin >= 0 else (vmin - 1.0, vmin)
    span = vmax - vmin
    label_px = _text_px(max((len(s) for s in labels), default=0), VALUE_PT) + 10
    frac = min(label_px / max(axis_px, 1), 0.45)
    pad = span * frac / (1 - frac * (2 if vmin < 0 < vmax else 1))
    return (vmin - pad if vmin < 0 else vmin, vmax + pad if vmax > 0 else vmax)


# ---------------------------------------------------------------- bar chart


def _as_series(data: pd.Series | pd.DataFrame, label_col: str | None,
               value_col: str | None) -> pd.Series:
    if isinstance(data, pd.Series):
        s = data
    elif isinstance(data, pd.DataFrame):
        df = data
        if value_col is None:
            numeric = [c for c in df.columns if c != label_col and pd.api.types.is_numeric_dtype(df[c])]
            if not numeric:
                raise ValueError("bar_chart needs a numeric column")
            value_col = numeric[0]
        if label_col is None:
            others = [c for c in df.columns if c != value_col and not pd.api.types.is_numeric_dtype(df[c])]
            label_col = others[0] if others else None
        s = df.set_index(label_col)[value_col] if label_col is not None else df[value_col]
    else:
        s = pd.Series(data)
    s = pd.to_numeric(s, errors="coerce").astype(float)
    s.index = [_category_text(i) for i in s.index]
    return s


def _fitting_labels(values: np.ndarray, fmt: ValueFormat, currency: str, avail_px: float,
                    min_pt: float = 7.5) -> tuple[list[str], float] | None:
    """Value labels that fit in `avail_px` each: full form, else compact, else None."""
    decimals = _label_decimals(values, fmt)
    for texts in ([format_value(v, fmt, currency, decimals) for v in values],
                  [_compact(v, fmt, currency) for v in values]):
        widest = max((len(t) for t in texts), default=1)
        size = min(VALUE_PT, avail_px * 0.92 / max(_text_px(widest, 1), 1))
        if size >= min_pt:
            return texts, size
    return None


def _highlight_set(highlight: Any) -> set[str]:
    if highlight is None:
        return set()
    if isinstance(highlight, str) or not isinstance(highlight, Sequence | set | frozenset):
        return {_category_text(highlight)}
    return {_category_text(h) for h in highlight}


@_chart
def bar_chart(
    data: pd.Series | pd.DataFrame,
    title: str,
    subtitle: str,
    *,
    value_format: ValueFormat = "number",
    currency: str = "R$",
    horizontal: bool = True,
    highlight: Hashable | Sequence[Hashable] | None = None,
    max_bars: int = 15,
    other_label: str = "Other",
    other_agg: Literal["auto", "sum", "mean"] | None = "auto",
    sort: bool = True,
    value_labels: bool = True,
    value_label: str | None = None,
    label_col: str | None = None,
    value_col: str | None = None,
    note: str | None = None,
) -> bytes:
    """Bars for segments, states, categories: a Series (index = labels) or a DataFrame
    (labels from `label_col` or its first text column, values from `value_col` or its
    first numeric column). Sorted largest first unless `sort=False`.

    More than `max_bars` keeps the largest and folds the rest into "Other (N more)"
    (summed; percentages do not add up, so for them the rest is left out and the chart
    says so, unless `other_agg="mean"`). `highlight` (a label or labels) draws those
    bars in the accent colour and the rest grey; negative values get a second colour.
    """
    s = _as_series(data, label_col, value_col).dropna()
    if s.empty:
        return empty_chart(title, subtitle, note=note)
    if sort:
        s = s.sort_values(ascending=False, kind="stable")
    extra_note = None
    other_index: int | None = None
    max_bars = max(int(max_bars), 2)
    if len(s) > max_bars:
        agg = ("sum" if value_format != "percent" else None) if other_agg == "auto" else other_agg
        if agg:
            head, rest = s.iloc[: max_bars - 1], s.iloc[max_bars - 1:]
            value = rest.sum() if agg == "sum" else rest.mean()
            label = f"{other_label} ({len(rest):,} more)"
            s = pd.concat([head, pd.Series([value], index=[label])])
            other_index = len(s) - 1
            if agg == "mean":
                extra_note = f"{label}: average"
        else:
            extra_note = f"{'Top' if sort else 'First'} {max_bars} of {len(s):,} shown"
            s = s.iloc[:max_bars]

    values = s.to_numpy(dtype=float)
    n = len(values)
    marked = _highlight_set(highlight)
    colours = []
    for i, (label, v) in enumerate(zip(s.index, values, strict=True)):
        if i == other_index:
            colours.append(GREY_BAR)
        elif marked:
            colours.append(ACCENT if label in marked else GREY_BAR)
        else:
            colours.append(NEGATIVE if v < 0 else ACCENT)

    fig = _new_figure(title, subtitle, _join_notes(extra_note, note))
    ax = fig.add_subplot()
    pos = np.arange(n)
    pad = (max(n, 6) - n) / 2  # a lone bar should not fill the whole plot
    formatter = _AxisFormatter(value_format, currency)
    negative = bool((values < 0).any())
    if horizontal:
        _style_axes(ax, grid="x")
        ax.spines["left"].set_visible(False)
        labels = _short_labels(s.index, 30)
        ax.barh(pos, values, height=0.7, color=colours, zorder=2)
        ax.set_yticks(pos, labels)
        ax.set_ylim(n - 0.5 + pad, -0.5 - pad)
        ax.xaxis.set_major_formatter(formatter)
        ax.xaxis.set_major_locator(_value_locator(6))
        if value_labels:
            decimals = _label_decimals(values, value_format)
            texts = [format_value(v, value_format, currency, decimals) for v in values]
            plot_px = WIDTH_PX * 0.95 - _text_px(max(len(lbl) for lbl in labels), TICK_PT) - 60
            ax.set_xlim(*_label_room(values, texts, plot_px))
            for p, v, t in zip(pos, values, texts, strict=True):
                ax.annotate(t, (v, p), xytext=(5 if v >= 0 else -5, 0), textcoords="offset points",
                            ha="left" if v >= 0 else "right", va="center",
                            fontsize=VALUE_PT, color=TEXT)
        _axis_label(ax, "x", value_label)
        if negative:
            ax.axvline(0, color=SPINE, linewidth=1, zorder=3)
    else:
        _style_axes(ax, grid="y")
        ax.spines["left"].set_visible(False)
        per_bar_px = (WIDTH_PX * 0.85) / max(n, 6)
        width_chars = max(int(per_bar_px / _text_px(1, TICK_PT)) - 1, 4)
        ax.bar(pos, values, width=0.7, color=colours, zorder=2)
        ax.set_xticks(pos, [_wrap(lbl, width_chars) for lbl in s.index])
        ax.set_xlim(-0.5 - pad, n - 0.5 + pad)
        ax.yaxis.set_major_formatter(formatter)
        ax.yaxis.set_major_locator(_value_locator(6))
        fitted = _fitting_labels(values, value_format, currency, per_bar_px) if value_labels else None
        if fitted:
            texts, size = fitted
            ax.set_ylim(*_label_room(values, ["x"], HEIGHT_PX * 0.6))
            for p, v, t in zip(pos, values, texts, strict=True):
                ax.annotate(t, (p, v), xytext=(0, 4 if v >= 0 else -4), textcoords="offset points",
                            ha="center", va="bottom" if v >= 0 else "top",
                            fontsize=size, color=TEXT)
        _axis_label(ax, "y", value_label)
        if negative:
            ax.axhline(0, color=SPINE, linewidth=1, zorder=3)
    return _to_png(fig)


# ---------------------------------------------------------------- line chart


def _x_values(col: pd.Series) -> tuple[np.ndarray | pd.DatetimeIndex, bool]:
    if isinstance(col.dtype, pd.PeriodDtype):
        return pd.DatetimeIndex(col.dt.to_timestamp()), True
    if pd.api.types.is_datetime64_any_dtype(col):
        return pd.DatetimeIndex(col), True
    return col.to_numpy(), False


def _spread(positions: list[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Nudge label positions (axes fraction) apart so no two are closer than `gap`."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = [positions[i] for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    overflow = placed[-1] - hi if placed else 0
    if overflow > 0:
        placed = [p - overflow for p in placed]
        for k in range(len(placed) - 2, -1, -1):
            placed[k] = min(placed[k], placed[k + 1] - gap)
    placed = [max(p, lo) for p in placed]
    out = [0.0] * len(positions)
    for k, i in enumerate(order):
        out[i] = placed[k]
    return out


@_chart
def line_chart(
    df: pd.DataFrame,
    x: str,
    ys: str | Sequence[str],
    title: str,
    subtitle: str,
    *,
    value_format: ValueFormat = "number",
    currency: str = "R$",
    partial_last: bool = False,
    annotate_last: bool = True,
    y_label: str | None = None,
    x_label: str | None = None,
    note: str | None = None,
) -> bytes:
    """Lines over time (monthly revenue, active customers): one line per column in `ys`
    (its name is the legend label), `x` a date, period or label column.

    `partial_last=True` draws the last segment dashed to a hollow point on a shaded
    band marked "partial", so an incomplete month reads as incomplete, not as a drop.
    `annotate_last` writes each line's last value at its end.
    """
    ys = [ys] if isinstance(ys, str) else list(ys)
    if df is None or df.empty or not ys:
        return empty_chart(title, subtitle, note=note)
    d = df[[x, *ys]].copy()
    for y in ys:
        d[y] = pd.to_numeric(d[y], errors="coerce").astype(float)
    d = d[d[x].notna()].dropna(subset=ys, how="all")
    if d.empty:
        return empty_chart(title, subtitle, note=note)
    xs, is_time = _x_values(d[x])
    if is_time:
        order = np.argsort(np.asarray(xs), kind="stable")
        d, xs = d.iloc[order], xs[order]
        xplot: Any = xs
    else:
        xplot = np.arange(len(d))
    n = len(d)
    partial = partial_last and n > 0
    fig = _new_figure(title, subtitle, note)
    ax = fig.add_subplot()
    _style_axes(ax, grid="y")
    ax.spines["left"].set_visible(False)
    all_vals = d[ys].to_numpy(dtype=float)
    decimals = _label_decimals(all_vals, value_format)
    markers = n <= 40
    solid_to = n - 1 if partial and n > 1 else n
    ends: list[tuple[Any, float, str, str]] = []
    handles = []
    for k, y in enumerate(ys):
        colour = PALETTE[k % len(PALETTE)]
        v = d[y].to_numpy(dtype=float)
        width = 2.6 if k == 0 else 2.2
        ax.plot(xplot[:solid_to], v[:solid_to], color=colour, linewidth=width, zorder=3,
                solid_capstyle="round", marker="o" if markers else None, markersize=4.5)
        if partial:
            if n > 1:
                ax.plot(xplot[-2:], v[-2:], color=colour, linewidth=width,
                        linestyle=(0, (2.5, 2)), zorder=3)
            ax.plot(xplot[-1:], v[-1:], linestyle="none", marker="o", markersize=8,
                    markerfacecolor="white", markeredgecolor=colour, markeredgewidth=2, zorder=4)
        if len(ys) == 1 and np.nanmin(v) >= 0 and solid_to > 1:
            ax.fill_between(xplot[:solid_to], v[:solid_to], 0, color=colour, alpha=0.07,
                            zorder=1, linewidth=0)
        finite = np.flatnonzero(np.isfinite(v))
        if finite.size:
            i = int(finite[-1])
            ends.append((xplot[i], v[i], format_value(v[i], value_format, currency, decimals), colour))
        handles.append(Line2D([], [], color=colour, linewidth=width, label=_truncate(y, 40)))

    finite_vals = all_vals[np.isfinite(all_vals)]
    lo, hi = float(finite_vals.min()), float(finite_vals.max())
    if lo >= 0:
        ymin, ymax = 0.0, (hi * 1.1 if hi > 0 else 1.0)
    else:
        span = (hi - lo) or abs(hi) or 1.0
        ymin, ymax = lo - span * 0.08, hi + span * 0.1
        ax.axhline(0, color=SPINE, linewidth=1, zorder=2)
    ax.set_ylim(ymin, ymax)
    ax.yaxis.set_major_formatter(_AxisFormatter(value_format, currency))
    ax.yaxis.set_major_locator(_value_locator(6))

    right_room = 0.13 if annotate_last else 0.03
    if is_time:
        first, last = xs[0], xs[-1]
        step = (xs[-1] - xs[-2]) if n > 1 else pd.Timedelta(days=30)
        span = (last - first) if n > 1 else step * 4
        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        if n > 1:
            ticks = [t for t in locator.tick_values(first, last)
                     if first - step / 2 <= mdates.num2date(t).replace(tzinfo=None) <= last + step / 2]
            ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))
        else:
            ax.xaxis.set_major_locator(ticker.FixedLocator([mdates.date2num(first)]))
            ax.xaxis.set_major_formatter(mdates.DateFormatter(
                "%b %Y" if first == first.normalize() and first.day == 1 else "%Y-%m-%d"))
        ax.set_xlim(first - span * 0.02 - (step if n == 1 else pd.Timedelta(0)),
                    last + span * right_room + step / 2)
        band = (last - step / 2, last + step / 2)
        monthly = (pd.Timedelta(days=27) <= step <= pd.Timedelta(days=32)) if n > 1 else \
            bool(first == first.normalize() and first.day == 1)
    else:
        labels = _month_labels(list(d[x]), step=max(1, math.ceil(n / 14)))
        if labels is None:
            step_i = max(1, math.ceil(n / 14))
            labels = [_truncate(_category_text(v), 14) if i % step_i == 0 else ""
                      for i, v in enumerate(d[x])]
        ax.set_xticks(xplot, labels)
        ax.set_xlim(-0.4 if n > 1 else -2, (n - 1) + max(n - 1, 4) * right_room + 0.5)
        band = (n - 1.5, n - 0.5)
        monthly = _month_labels(list(d[x])) is not None
    if partial:
        ax.axvspan(*band, color="#F1F3F5", zorder=0, linewidth=0)
        ax.text(band[0] + (band[1] - band[0]) / 2, 1.0, "partial month" if monthly else "partial",
                transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=NOTE_PT, fontstyle="italic", color=MUTED)

    if annotate_last and ends:
        height = ymax - ymin
        wanted = [(e[1] - ymin) / height for e in ends]
        placed = _spread(wanted, gap=0.06, lo=0.02, hi=0.98)
        axes_pt = (HEIGHT_PX * 0.62) * 72 / DPI  # approximate plot height, for the nudge
        for (xe, ye, text, colour), w, f in zip(ends, wanted, placed, strict=True):
            ax.annotate(text, (xe, ye), xytext=(10, (f - w) * axes_pt), textcoords="offset points",
                        ha="left", va="center", fontsize=VALUE_PT, fontweight="bold",
                        color=colour, annotation_clip=False)
    if len(ys) > 1:
        _top_legend(ax, handles, WIDTH_PX * 0.7)
    _axis_label(ax, "y", y_label)
    _axis_label(ax, "x", x_label)
    return _to_png(fig)


# ---------------------------------------------------------------- heatmap


def _text_colour(rgb: Sequence[float]) -> str:
    r, g, b = rgb[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else TEXT


@_chart
def heatmap(
    matrix_df: pd.DataFrame,
    title: str,
    subtitle: str,
    *,
    value_format: ValueFormat = "percent",
    currency: str = "R$",
    cmap: str = "Blues",
    annotate: bool = True,
    row_label: str | None = None,
    col_label: str | None = None,
    row_sizes: pd.Series | Sequence[float] | None = None,
    row_sizes_label: str = "Customers",
    shares: Literal["row", "column"] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    note: str | None = None,
) -> bytes:
    """A matrix as coloured cells: cohort retention, segment migration, weekday × hour.

    NaN cells stay blank. `row_sizes` (aligned with the rows) adds a column of sizes at
    the left (e.g. customers per cohort). `shares="row"` colours each cell by its share
    of the row and writes "count" over "share" (migration matrices). A constant first
    column at the top of the range (retention's M0 = 100%) is left out of the colour
    scale, so the later months show their differences. Annotations shrink with the
    cell size and give way to a colour bar when the cells are too small.
    """
    if matrix_df is None or matrix_df.empty:
        return empty_chart(title, subtitle, note=note)
    m = matrix_df.apply(pd.to_numeric, errors="coerce").astype(float)
    if not np.isfinite(m.to_numpy()).any():
        return empty_chart(title, subtitle, note=note)
    counts = m.to_numpy()
    nrows, ncols = counts.shape
    if shares == "row":
        colour_vals = counts / np.nansum(counts, axis=1, keepdims=True)
    elif shares == "column":
        colour_vals = counts / np.nansum(counts, axis=0, keepdims=True)
    else:
        colour_vals = counts
    colour_vals = np.where(np.isfinite(colour_vals), colour_vals, np.nan)
    colour_fmt: ValueFormat = "percent" if shares else value_format

    finite = colour_vals[np.isfinite(colour_vals)]
    lo = float(finite.min()) if vmin is None else vmin
    hi = float(finite.max()) if vmax is None else vmax
    clipped_top = False
    if vmax is None and ncols > 1 and not shares:
        first = colour_vals[:, 0][np.isfinite(colour_vals[:, 0])]
        rest = colour_vals[:, 1:][np.isfinite(colour_vals[:, 1:])]
        if first.size and rest.size and np.ptp(first) < 1e-9 and first[0] >= rest.max() > lo:
            hi, clipped_top = float(rest.max()), True
    if vmin is None and lo > 0:
        lo = 0.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    norm = Normalize(vmin=lo, vmax=hi, clip=True)
    cm = colormaps[cmap].with_extremes(bad="white")

    fig = _new_figure(title, subtitle, note)
    has_sizes = row_sizes is not None and len(row_sizes) == nrows
    if has_sizes:
        gs = fig.add_gridspec(1, 2, width_ratios=[1.0, 8.5], wspace=0.0)
        ax_sizes = fig.add_subplot(gs[0, 0])
        ax = fig.add_subplot(gs[0, 1], sharey=ax_sizes)
    else:
        ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(colour_vals), cmap=cm, norm=norm, aspect="auto",
                      interpolation="nearest")
    for side in ax.spines.values():
        side.set_visible(False)
    # the white cell borders as two line collections: as minor gridlines each border was
    # a tick of its own (three lines and two labels), most of the chart's drawing time
    ax.vlines(np.arange(ncols + 1) - 0.5, -0.5, nrows - 0.5, colors="white", linewidth=1.6)
    ax.hlines(np.arange(nrows + 1) - 0.5, -0.5, ncols - 0.5, colors="white", linewidth=1.6)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="both", length=0, labelsize=TICK_PT, labelcolor=TEXT, pad=5)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")

    col_names = [_category_text(c) for c in m.columns]
    col_px = WIDTH_PX * (0.72 if has_sizes else 0.8) / ncols
    fit_chars = max(int(col_px / _text_px(1, TICK_PT)), 2)
    longest = max(len(c) for c in col_names)
    wrapped = [_wrap(c, fit_chars, lines=2) for c in col_names]
    if longest <= fit_chars:
        ax.set_xticks(np.arange(ncols), col_names)
    elif all("…" not in w and max(map(len, w.split("\n"))) <= fit_chars + 1 for w in wrapped):
        ax.set_xticks(np.arange(ncols), wrapped)
    else:
        ax.set_xticks(np.arange(ncols), _short_labels(col_names, 20), rotation=35, ha="left",
                      rotation_mode="anchor")
    row_names = _short_labels([_category_text(r) for r in m.index], 24)
    row_step = max(1, math.ceil(nrows / 30))
    ax_rows = ax_sizes if has_sizes else ax
    ax_rows.set_yticks(np.arange(nrows)[::row_step], row_names[::row_step])
    if has_sizes:
        ax.tick_params(axis="y", labelleft=False)
        sizes = pd.to_numeric(pd.Series(list(row_sizes)), errors="coerce").to_numpy(dtype=float)
        top_size = np.nanmax(sizes) if np.isfinite(sizes).any() else 1.0
        for side in ax_sizes.spines.values():
            side.set_visible(False)
        ax_sizes.set_xlim(0, 1)
        ax_sizes.tick_params(which="both", length=0, labelsize=TICK_PT, labelcolor=TEXT, pad=5)
        ax_sizes.xaxis.tick_top()
        ax_sizes.set_xticks([0.5], [row_sizes_label])
        size_pt = min(TICK_PT, (HEIGHT_PX * 0.72 / nrows) * 0.62 * 72 / DPI)
        for i, sz in enumerate(sizes):
            if not np.isfinite(sz):
                continue
            ax_sizes.barh(i, 0.92 * sz / (top_size or 1), left=0.04, height=0.7, color="#E2E8EF",
                          zorder=1)
            ax_sizes.text(0.94, i, format_value(sz, "number"), ha="right", va="center",
                          fontsize=max(size_pt, 7.5), color=TEXT, zorder=2)
    _axis_label(ax, "x", col_label)
    _axis_label(ax_rows, "y", row_label)

    show_colorbar = not annotate
    if annotate:
        lines = 2 if shares else 1
        styles = [_cell_texts(counts, colour_vals, style, value_format, currency, bool(shares))
                  for style in ("full", "compact")]
        # the layout pass that measures the cells is skipped when the text would not fit
        # even if the axes took the whole layout area (weekday × hour: 24 columns)
        _, _, rect_w, rect_h = fig.get_layout_engine().get()["rect"]
        room_w = rect_w * WIDTH_PX * (8.5 / 9.5 if has_sizes else 1.0)
        room_h = rect_h * HEIGHT_PX
        texts = None
        if any(_cell_font(t, room_w / ncols, room_h / nrows, lines) >= 7 for t in styles):
            fig.draw_without_rendering()  # lay out first: the text is sized to the cells
            cell_w = ax.bbox.width / ncols
            cell_h = ax.bbox.height / nrows
            for cand in styles:
                size = _cell_font(cand, cell_w, cell_h, lines)
                if size >= 7:
                    texts = (cand, size)
                    break
        if texts is None:
            show_colorbar = True
        else:
            fig.set_layout_engine("none")  # keep the measured cells; text inside them needs no room
            cand, size = texts
            for i in range(nrows):
                for j in range(ncols):
                    if not cand[i][j]:
                        continue
                    rgb = cm(norm(colour_vals[i, j]))
                    ax.text(j, i, cand[i][j], ha="center", va="center", fontsize=size,
                            color=_text_colour(rgb), linespacing=1.15)
    if show_colorbar:
        cbar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.015, aspect=30,
                            extend="max" if clipped_top else "neither")
        cbar.outline.set_visible(False)
        cbar.ax.tick_params(labelsize=TICK_PT - 1, colors=MUTED, length=0)
        cbar.ax.yaxis.set_major_formatter(_AxisFormatter(colour_fmt, currency))
        cbar.ax.yaxis.set_major_locator(_value_locator(5))
    return _to_png(fig)


def _cell_texts(counts: np.ndarray, colour_vals: np.ndarray, style: str, value_format: ValueFormat,
                currency: str, shares: bool) -> list[list[str]]:
    """Each cell's annotation ("" for a blank cell): the value in full or compact form,
    over its share when the colours are shares."""
    rows = []
    for i in range(counts.shape[0]):
        row = []
        for j in range(counts.shape[1]):
            v = counts[i, j]
            if not np.isfinite(v):
                row.append("")
                continue
            if style == "full":
                t = format_value(v, value_format, currency, _cell_decimals(v, value_format))
            else:
                t = _compact(v, value_format, currency)
            if shares and np.isfinite(colour_vals[i, j]):
                t += "\n" + format_value(colour_vals[i, j], "percent", currency,
                                         _cell_decimals(colour_vals[i, j], "percent"))
            row.append(t)
        rows.append(row)
    return rows


def _cell_font(texts: list[list[str]], cell_w: float, cell_h: float, lines: int) -> float:
    """The font size (points) at which the widest annotation fits cells of this many pixels."""
    widest = max((len(line) for row in texts for t in row for line in t.split("\n")), default=1)
    return min(10.5, (cell_h * 0.62 / lines) * 72 / DPI, (cell_w * 0.88) / max(_text_px(widest, 1), 1))


# ---------------------------------------------------------------- scatter


def _quadrants(labels: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    keys = ("top left", "top right", "bottom left", "bottom right")
    if isinstance(labels, Mapping):
        return {k.replace("_", " ").replace("-", " ").lower(): v for k, v in labels.items() if v}
    return {k: v for k, v in zip(keys, labels, strict=False) if v}


def _place_point_labels(fig: Figure, ax: Axes, xs: np.ndarray, ys: np.ndarray,
                        texts: Sequence[str], areas: np.ndarray) -> None:
    """Label points, trying eight spots around each and taking the one that overlaps
    the fewest markers and labels already placed (big points choose first)."""
    _freeze_layout(fig)  # labels are placed in pixels, so the layout must not move
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    radii = np.sqrt(areas) / 2 * DPI / 72
    box = ax.bbox
    char_w, line_h = _text_px(1, VALUE_PT), VALUE_PT * DPI / 72 * 1.15
    placed: list[tuple[float, float, float, float]] = []
    # (dx, dy) direction, horizontal and vertical alignment
    spots = [(0.72, 0.72, "left", "bottom"), (1, 0, "left", "center"), (-0.72, 0.72, "right", "bottom"),
             (-1, 0, "right", "center"), (0.72, -0.72, "left", "top"), (-0.72, -0.72, "right", "top"),
             (0, 1, "center", "bottom"), (0, -1, "center", "top")]

    def rect(px: float, py: float, w: float, ha: str, va: str) -> tuple[float, float, float, float]:
        x0 = px if ha == "left" else (px - w if ha == "right" else px - w / 2)
        y0 = py if va == "bottom" else (py - line_h if va == "top" else py - line_h / 2)
        return x0, y0, x0 + w, y0 + line_h

    def hits(r: tuple[float, float, float, float], own: int) -> float:
        x0, y0, x1, y1 = r
        cost = 0.0
        if x0 < box.x0 or x1 > box.x1 or y0 < box.y0 or y1 > box.y1:
            cost += 10
        for q in placed:
            if x0 < q[2] and q[0] < x1 and y0 < q[3] and q[1] < y1:
                cost += 3
        cx = np.clip(pts[:, 0], x0, x1)
        cy = np.clip(pts[:, 1], y0, y1)
        inside = (pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2 < radii**2
        inside[own] = False
        return cost + float(inside.sum())

    for i in np.argsort(-areas, kind="stable"):
        w = char_w * len(texts[i])
        gap = radii[i] + 3
        best = None
        for dx, dy, ha, va in spots:
            px, py = pts[i, 0] + dx * gap, pts[i, 1] + dy * gap
            r = rect(px, py, w, ha, va)
            cost = hits(r, i)
            if best is None or cost < best[0]:
                best = (cost, dx * gap, dy * gap, ha, va, r)
            if cost == 0:
                break
        _, ox, oy, ha, va, r = best
        placed.append(r)
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(ox * 72 / DPI, oy * 72 / DPI),
                    textcoords="offset points", ha=ha, va=va, fontsize=VALUE_PT, color=TEXT,
                    zorder=5)


@_chart
def scatter_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    subtitle: str,
    *,
    label: str | None = None,
    size: str | None = None,
    hue: str | None = None,
    hue_order: Sequence[Any] | None = None,
    xline: float | None = None,
    yline: float | None = None,
    quadrant_labels: Mapping[str, str] | Sequence[str] | None = None,
    log_x: bool = False,
    value_format_x: ValueFormat = "number",
    value_format_y: ValueFormat = "number",
    currency: str = "R$",
    x_label: str | None = None,
    y_label: str | None = None,
    max_points: int = MAX_SCATTER_POINTS,
    note: str | None = None,
) -> bytes:
    """Points: LTV quadrants by state, or customers in PCA space coloured by cluster.

    `label` writes a text (state code) next to each point, `size` scales marker area,
    `hue` colours by category with a legend (counts from all rows). `xline`/`yline`
    draw threshold lines and `quadrant_labels` (top left, top right, bottom left,
    bottom right; a sequence in that order or a mapping) names the corners. More than
    `max_points` rows are subsampled deterministically and the chart says so.
    """
    if df is None or df.empty:
        return empty_chart(title, subtitle, note=note)
    d = df.copy()
    d[x] = pd.to_numeric(d[x], errors="coerce").astype(float)
    d[y] = pd.to_numeric(d[y], errors="coerce").astype(float)
    d = d[np.isfinite(d[x]) & np.isfinite(d[y])]
    if log_x:
        d = d[d[x] > 0]
    if d.empty:
        return empty_chart(title, subtitle, note=note)
    total = len(d)
    sample_note = None
    if total > max_points:
        idx = np.sort(np.random.default_rng(0).choice(total, size=max_points, replace=False))
        d = d.iloc[idx]
        sample_note = f"Showing a random {max_points:,} of {total:,} points"
    n = len(d)
    fig = _new_figure(title, subtitle, _join_notes(sample_note, note))
    ax = fig.add_subplot()
    _style_axes(ax, grid="both")
    xs, ys_ = d[x].to_numpy(), d[y].to_numpy()

    if size is not None:
        sz = pd.to_numeric(d[size], errors="coerce").fillna(0).clip(lower=0).to_numpy(dtype=float)
        top = sz.max() or 1.0
        areas = 40 + 560 * np.sqrt(sz / top)
    else:
        areas = np.full(n, 70.0 if n <= 200 else (14.0 if n <= 5000 else 5.0))
    dense = n > 2000
    alpha = 0.75 if n <= 200 else (0.5 if n <= 5000 else 0.35)
    edge = "white" if not dense else "none"

    if hue is not None:
        full_counts = df[hue].value_counts(dropna=True)
        groups = list(hue_order) if hue_order is not None else sorted(
            full_counts.index, key=lambda g: (str(type(g)), g))
        colour_of = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
        keys = d[hue].to_numpy()
        colours = np.array([colour_of.get(k, GREY_BAR) for k in keys], dtype=object)
        # shuffle drawing order (deterministically) so no cluster is painted over the others
        order = np.random.default_rng(1).permutation(n)
        ax.scatter(xs[order], ys_[order], s=areas[order], c=list(colours[order]), alpha=alpha,
                   linewidths=0.6 if not dense else 0, edgecolors=edge, zorder=3, rasterized=False)
        handles = [Line2D([], [], linestyle="none", marker="o", markersize=9, color=colour_of[g],
                          label=f"{_truncate(_category_text(g), 28)} ({int(full_counts.get(g, 0)):,})")
                   for g in groups]
        _top_legend(ax, handles)
    else:
        ax.scatter(xs, ys_, s=areas, color=ACCENT, alpha=alpha, linewidths=0.6 if not dense else 0,
                   edgecolors=edge, zorder=3)

    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_formatter(_AxisFormatter(value_format_x, currency, log=log_x))
    ax.yaxis.set_major_formatter(_AxisFormatter(value_format_y, currency))
    if not log_x:
        ax.xaxis.set_major_locator(_value_locator(7))
    ax.yaxis.set_major_locator(_value_locator(6))
    ax.margins(0.08)

    line_style = {"color": FAINT, "linewidth": 1.2, "linestyle": (0, (4, 3)), "zorder": 2}
    if xline is not None and np.isfinite(xline):
        ax.axvline(xline, **line_style)
    if yline is not None and np.isfinite(yline):
        ax.axhline(yline, **line_style)
    if quadrant_labels:
        spots = {"top left": (0.015, 0.985, "left", "top"), "top right": (0.985, 0.985, "right", "top"),
                 "bottom left": (0.015, 0.015, "left", "bottom"),
                 "bottom right": (0.985, 0.015, "right", "bottom")}
        for key, text in _quadrants(quadrant_labels).items():
            if key in spots:
                qx, qy, ha, va = spots[key]
                ax.text(qx, qy, _truncate(text, 40), transform=ax.transAxes, ha=ha, va=va,
                        fontsize=LABEL_PT, fontweight="bold", color=FAINT, zorder=1)
    _axis_label(ax, "x", x_label if x_label is not None else x)
    _axis_label(ax, "y", y_label if y_label is not None else y)
    if label is not None and n <= 300:
        texts = [_truncate(_category_text(t), 16) for t in d[label].to_numpy()]
        _place_point_labels(fig, ax, xs, ys_, texts, areas)
    return _to_png(fig)


# ---------------------------------------------------------------- stacked / grouped bars


def _multi_bar(df: pd.DataFrame, x: str | None, ys: str | Sequence[str], title: str, subtitle: str,
               *, stacked: bool, value_format: ValueFormat, currency: str, horizontal: bool,
               value_labels: bool, x_label: str | None, y_label: str | None,
               note: str | None, max_categories: int, partial_last: bool = False) -> bytes:
    ys = [ys] if isinstance(ys, str) else list(ys)
    if df is None or df.empty or not ys:
        return empty_chart(title, subtitle, note=note)
    d = df.reset_index() if x is None else df.copy()
    x = d.columns[0] if x is None else x
    vals = d[ys].apply(pd.to_numeric, errors="coerce").astype(float)
    keep = vals.notna().any(axis=1).to_numpy()
    d, vals = d[keep], vals[keep]
    if d.empty:
        return empty_chart(title, subtitle, note=note)
    extra_note = None
    if len(d) > max_categories:
        # time runs left to right, so a vertical chart keeps the latest; a horizontal one the first
        extra_note = f"{'First' if horizontal else 'Last'} {max_categories} of {len(d):,} shown"
        sl = slice(None, max_categories) if horizontal else slice(-max_categories, None)
        d, vals = d.iloc[sl], vals.iloc[sl]
    matrix = vals.fillna(0.0).to_numpy()
    n, k = matrix.shape
    cats = list(d[x])
    fig = _new_figure(title, subtitle, _join_notes(extra_note, note))
    ax = fig.add_subplot()
    _style_axes(ax, grid="x" if horizontal else "y")
    ax.spines["left"].set_visible(False)
    pos = np.arange(n)
    colours = [PALETTE[i % len(PALETTE)] for i in range(k)]
    slot = 0.76
    # the last (incomplete) period is drawn paler
    alphas = np.where((pos == n - 1) & partial_last, 0.45, 1.0)
    labels_at: list[tuple[float, float]] = []  # (position, value end) of each value label
    label_values: list[float] = []
    if stacked:
        pos_base, neg_base = np.zeros(n), np.zeros(n)
        for i in range(k):
            col = matrix[:, i]
            base = np.where(col >= 0, pos_base, neg_base)
            for j in range(n):
                kw = {"color": colours[i], "alpha": alphas[j], "zorder": 2, "edgecolor": "white",
                      "linewidth": 0.6}
                if horizontal:
                    ax.barh(pos[j], col[j], left=base[j], height=slot, **kw)
                else:
                    ax.bar(pos[j], col[j], bottom=base[j], width=slot, **kw)
            pos_base = np.where(col >= 0, pos_base + col, pos_base)
            neg_base = np.where(col < 0, neg_base + col, neg_base)
        if value_labels:
            totals = matrix.sum(axis=1)
            labels_at = [(p, pos_base[j] if totals[j] >= 0 else neg_base[j]) for j, p in enumerate(pos)]
            label_values = list(totals)
        lo_val, hi_val = float(neg_base.min()), float(pos_base.max())
        per_label_px = (WIDTH_PX * 0.85) / max(n, 3)
    else:
        width = slot / k
        for i in range(k):
            offs = pos - slot / 2 + width * (i + 0.5)
            for j in range(n):
                kw = {"color": colours[i], "alpha": alphas[j], "zorder": 2}
                if horizontal:
                    ax.barh(offs[j], matrix[j, i], height=width * 0.92, **kw)
                else:
                    ax.bar(offs[j], matrix[j, i], width=width * 0.92, **kw)
            if value_labels:
                labels_at += list(zip(offs, matrix[:, i], strict=True))
                label_values += list(matrix[:, i])
        lo_val, hi_val = float(min(matrix.min(), 0)), float(max(matrix.max(), 0))
        per_label_px = (WIDTH_PX * 0.85) / max(n, 3) / k

    formatter = _AxisFormatter(value_format, currency)
    values_arr = np.array(label_values, dtype=float)
    if horizontal:
        ax.set_yticks(pos, _short_labels([_category_text(c) for c in cats], 28))
        ax.set_ylim(max(n, 3) - 0.5, -0.5)
        ax.xaxis.set_major_formatter(formatter)
        ax.xaxis.set_major_locator(_value_locator(6))
        row_px = (HEIGHT_PX * 0.7) / max(n, 3) / (1 if stacked else k)
        fitted = None
        if labels_at and row_px >= VALUE_PT * DPI / 72:
            decimals = _label_decimals(values_arr, value_format)
            fitted = ([format_value(v, value_format, currency, decimals) for v in values_arr], VALUE_PT)
        if fitted:
            texts, size = fitted
            widest = max(len(t) for t in texts)
            ax.set_xlim(*_label_room(np.array([lo_val, hi_val]), ["x" * widest], WIDTH_PX * 0.7,
                                     lo_val, hi_val))
            for (p, v), t in zip(labels_at, texts, strict=True):
                ax.annotate(t, (v, p), xytext=(4 if v >= 0 else -4, 0), textcoords="offset points",
                            ha="left" if v >= 0 else "right", va="center", fontsize=size,
                            color=TEXT)
        _axis_label(ax, "x", y_label)
        _axis_label(ax, "y", x_label)
    else:
        step = max(1, math.ceil(n / 18))
        names = _month_labels(cats, step=step)
        if names is None:
            width_chars = max(int((WIDTH_PX * 0.85 / max(n, 3)) / _text_px(1, TICK_PT)) - 1, 3)
            names = [_wrap(_category_text(c), width_chars) if i % step == 0 else ""
                     for i, c in enumerate(cats)]
        ax.set_xticks(pos, names)
        ax.set_xlim(-0.6, max(n, 3) - 0.4)
        ax.yaxis.set_major_formatter(formatter)
        ax.yaxis.set_major_locator(_value_locator(6))
        fitted = _fitting_labels(values_arr, value_format, currency, per_label_px) if labels_at else None
        if fitted:
            texts, size = fitted
            ax.set_ylim(*_label_room(np.array([lo_val, hi_val]), ["x"], HEIGHT_PX * 0.6,
                                     lo_val, hi_val))
            for (p, v), t in zip(labels_at, texts, strict=True):
                ax.annotate(t, (p, v), xytext=(0, 3 if v >= 0 else -3), textcoords="offset points",
                            ha="center", va="bottom" if v >= 0 else "top", fontsize=size,
                            color=TEXT)
        _axis_label(ax, "y", y_label)
        _axis_label(ax, "x", x_label)
    if partial_last:
        if horizontal:
            ax.annotate("partial", (1, n - 1), xycoords=("axes fraction", "data"), xytext=(0, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=NOTE_PT,
                        fontstyle="italic", color=MUTED)
        else:
            top = float(matrix[-1][matrix[-1] > 0].sum()) if stacked else float(matrix[-1].max())
            lifted = bool(fitted) and stacked
            ax.annotate("partial", (n - 1, max(top, 0.0)), xytext=(0, 20 if lifted else 4),
                        textcoords="offset points", ha="center", va="bottom", fontsize=NOTE_PT,
                        fontstyle="italic", color=MUTED, annotation_clip=False)
    if lo_val < 0:
        (ax.axvline if horizontal else ax.axhline)(0, color=SPINE, linewidth=1, zorder=3)
    handles = [Patch(color=colours[i], label=_truncate(str(ys[i]), 36)) for i in range(k)]
    _top_legend(ax, handles, WIDTH_PX * 0.8)
    return _to_png(fig)


@_chart
def stacked_bar_chart(
    df: pd.DataFrame,
    x: str | None,
    ys: str | Sequence[str],
    title: str,
    subtitle: str,
    *,
    value_format: ValueFormat = "number",
    currency: str = "R$",
    horizontal: bool = False,
    totals: bool = True,
    partial_last: bool = False,
    x_label: str | None = None,
    y_label: str | None = None,
    max_categories: int = 36,
    note: str | None = None,
) -> bytes:
    """Stacked bars, one per row of `df` (category or month in column `x`, None = the
    index), one stacked part per column in `ys` (e.g. new vs returning revenue by month).
    `totals` writes each bar's total at its end when there is room (compact if need be);
    `partial_last` draws the last bar pale and marks it "partial"."""
    return _multi_bar(df, x, ys, title, subtitle, stacked=True, value_format=value_format,
                      currency=currency, horizontal=horizontal, value_labels=totals,
                      x_label=x_label, y_label=y_label, note=note, max_categories=max_categories,
                      partial_last=partial_last)


@_chart
def grouped_bar_chart(
    df: pd.DataFrame,
    x: str | None,
    ys: str | Sequence[str],
    title: str,
    subtitle: str,
    *,
    value_format: ValueFormat = "number",
    currency: str = "R$",
    horizontal: bool = False,
    value_labels: bool = True,
    partial_last: bool = False,
    x_label: str | None = None,
    y_label: str | None = None,
    max_categories: int = 24,
    note: str | None = None,
) -> bytes:
    """Side-by-side bars, one group per row of `df`, one bar per column in `ys`
    (e.g. payment methods: share of orders vs share of value); value labels when they
    fit. All columns share one axis, so give them one unit (shares, or one currency)."""
    return _multi_bar(df, x, ys, title, subtitle, stacked=False, value_format=value_format,
                      currency=currency, horizontal=horizontal, value_labels=value_labels,
                      x_label=x_label, y_label=y_label, note=note, max_categories=max_categories,
                      partial_last=partial_last)


# ---------------------------------------------------------------- histogram


@_chart
def histogram(
    values: pd.Series | Sequence[float] | np.ndarray,
    bins: int | Sequence[float] | Literal["auto"] = "auto",
    title: str = "",
    subtitle: str = "",
    *,
    value_format: ValueFormat = "number",
    currency: str = "R$",
    x_label: str | None = None,
    y_label: str = "Count",
    clip_quantile: float | None = 0.99,
    show_median: bool = True,
    note: str | None = None,
) -> bytes:
    """Distribution of values (installments, delivery days, order values); NaN ignored.

    Whole numbers with few distinct values (installments) get one labelled bar per
    value; other whole numbers get bins on whole-number edges. With `bins="auto"`,
    values above the `clip_quantile` are left out of the picture and the chart says
    how many. `show_median` marks the median (a line, or a text for one-bar-per-value).
    """
    arr = _finite(values)
    if arr.size == 0:
        return empty_chart(title, subtitle, note=note)
    median, mean = float(np.median(arr)), float(arr.mean())
    is_int = bool(np.all(arr == np.round(arr)))
    auto = isinstance(bins, str)
    discrete = auto and is_int and (arr.max() - arr.min()) <= 30
    clip_note = None
    shown = arr
    if auto and not discrete and clip_quantile is not None and arr.size >= 20:
        cut = float(np.quantile(arr, clip_quantile))
        above = int((arr > cut).sum())
        if above and cut > arr.min():
            shown = arr[arr <= cut]
            cut_text = format_value(cut, value_format, currency, _label_decimals([cut], value_format))
            clip_note = f"{above:,} values ({above / arr.size:.1%}) above {cut_text} not shown"
    fig = _new_figure(title, subtitle, _join_notes(clip_note, note))
    ax = fig.add_subplot()
    _style_axes(ax, grid="y")
    ax.spines["left"].set_visible(False)
    fmt_dec = _label_decimals([median], value_format if not is_int else "number")
    median_text = "median " + format_value(median, value_format, currency, fmt_dec)
    if discrete:
        lo, hi = int(arr.min()), int(arr.max())
        levels = np.arange(lo, hi + 1)
        counts = np.bincount((arr - lo).astype(int), minlength=len(levels)).astype(float)
        ax.bar(levels, counts, width=0.78, color=ACCENT, zorder=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(_AxisFormatter(value_format, currency))
        ax.set_xlim(lo - 0.7, max(hi, lo + 5) + 0.7)
        fitted = _fitting_labels(counts, "number", currency, WIDTH_PX * 0.85 / max(len(levels), 6))
        if fitted:
            texts, size = fitted
            ax.set_ylim(0, counts.max() * 1.12)
            for lv, c, t in zip(levels, counts, texts, strict=True):
                if c:
                    ax.annotate(t, (lv, c), xytext=(0, 3), textcoords="offset points",
                                ha="center", va="bottom", fontsize=size, color=TEXT)
        if show_median:
            stats = f"{median_text} · mean {format_value(mean, value_format, currency, 1)}"
            ax.text(1, 1.0, stats, transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=VALUE_PT, color=TEXT, fontweight="bold")
    else:
        edges: Any = bins
        if auto:
            count = int(np.clip(np.histogram_bin_edges(shown, bins="auto").size - 1, 10, 50))
            lo, hi = float(shown.min()), float(shown.max())
            if is_int:
                width = max(1, math.ceil((hi - lo + 1) / count))
                edges = np.arange(lo - 0.5, hi + width + 0.5, width)
            else:
                edges = count
        ax.hist(shown, bins=edges, color=ACCENT, edgecolor="white", linewidth=0.8, zorder=2)
        ax.xaxis.set_major_formatter(_AxisFormatter(value_format, currency))
        ax.xaxis.set_major_locator(_value_locator(8) if not is_int else
                                   ticker.MaxNLocator(8, integer=True, steps=[1, 2, 2.5, 5, 10]))
        if show_median:
            ax.axvline(median, color=TEXT, linewidth=1.3, linestyle=(0, (4, 3)), zorder=3)
            ax.annotate(median_text, (median, 1), xycoords=("data", "axes fraction"),
                        xytext=(5, -2), textcoords="offset points", ha="left", va="top",
                        fontsize=VALUE_PT, color=TEXT, fontweight="bold")
    ax.yaxis.set_major_formatter(_AxisFormatter("number", currency))
    ax.yaxis.set_major_locator(ticker.MaxNLocator(6, integer=True, steps=[1, 2, 2.5, 5, 10]))
    _axis_label(ax, "x", x_label)
    _axis_label(ax, "y", y_label)
    return _to_png(fig)
