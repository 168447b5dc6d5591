"""Charts: every kind renders a sane, deterministic PNG from realistic data."""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from analytics import charts
from analytics.charts import (
    ACCENT,
    bar_chart,
    empty_chart,
    format_value,
    grouped_bar_chart,
    heatmap,
    histogram,
    line_chart,
    scatter_chart,
    stacked_bar_chart,
)

SUB = "as of 2018-08-29 · Sudeste"
MB = 1_000_000

STATE_REVENUE = pd.Series({
    "SP": 5_998_227.0, "RJ": 2_144_380.0, "MG": 1_872_257.0, "RS": 890_898.0, "PR": 811_156.0,
    "SC": 623_086.0, "BA": 616_645.0, "DF": 355_141.0, "GO": 350_092.0, "ES": 325_967.0,
    "PE": 324_850.0, "CE": 279_464.0, "PA": 218_295.0, "MT": 187_029.0, "MA": 152_523.0,
    "MS": 137_534.0, "PB": 141_546.0, "PI": 108_524.0, "RN": 102_718.0, "AL": 96_962.0,
    "SE": 75_246.0, "TO": 61_485.0, "RO": 57_962.0, "AM": 27_966.0, "AC": 19_680.0,
    "AP": 16_262.0, "RR": 10_064.0,
})
SEGMENTS = pd.DataFrame({
    "segment": ["Champions", "Loyal customers", "Potential loyalists", "New customers",
                "Need attention", "At risk", "Can't lose them", "Hibernating", "Lost"],
    "customers": [4_210, 6_034, 9_870, 11_302, 7_432, 6_120, 1_032, 15_540, 18_021],
})


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def colour_count(png: bytes, colour: str) -> int:
    return int((pixels(png) == np.array(rgb(colour))).all(axis=2).sum())


def distinct_colours(px: np.ndarray) -> np.ndarray:
    flat = px.astype(np.uint32)
    return np.unique((flat[..., 0] << 16) | (flat[..., 1] << 8) | flat[..., 2])


def check_png(png: bytes, min_drawn: float = 0.03) -> np.ndarray:
    """The checks every chart must pass; returns the RGB pixels."""
    assert isinstance(png, bytes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) < MB
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        width, height = im.size
    assert 1100 <= width <= 1300 and 600 <= height <= 800, (width, height)
    px = pixels(png)
    non_white = (px < 245).any(axis=2).mean()
    assert non_white > min_drawn, f"only {non_white:.1%} of the picture is drawn"
    distinct = len(distinct_colours(px))
    assert distinct > 20, f"only {distinct} colours"
    return px


def monthly(n: int = 23, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    months = pd.date_range("2016-10-01", periods=n, freq="MS")
    revenue = np.linspace(40_000, 1_100_000, n) * rng.uniform(0.85, 1.1, n)
    revenue[-1] *= 0.55  # the as-of date falls early in the last month
    return pd.DataFrame({"month": months, "Revenue": revenue,
                         "Active customers": np.round(revenue / 140)})


def retention(n_cohorts: int = 20, months: int = 13, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = [p.strftime("%Y-%m") for p in pd.date_range("2017-01-01", periods=n_cohorts, freq="MS")]
    m = pd.DataFrame(np.nan, index=idx, columns=[f"M{j}" for j in range(months)])
    for i in range(n_cohorts):
        for j in range(months):
            if i + j < n_cohorts:
                m.iloc[i, j] = 1.0 if j == 0 else max(0.0, rng.normal(0.006, 0.002))
    return m


def ltv_by_state(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"state": STATE_REVENUE.index, "customers": STATE_REVENUE.values / 160,
                         "ltv": rng.uniform(120, 260, len(STATE_REVENUE)),
                         "revenue": STATE_REVENUE.values})


def pca_points(n: int, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [3, 1], [-2, 2.5], [1, -3]])
    label = rng.integers(0, 4, n)
    pts = centres[label] + rng.normal(0, 0.9, (n, 2))
    names = np.array(["Big spenders", "Loyal regulars", "Bargain hunters", "Lapsed"])
    return pd.DataFrame({"PC1": pts[:, 0], "PC2": pts[:, 1], "cluster": names[label]})


# every chart kind, drawn from realistic data
KINDS: dict[str, Callable[[], bytes]] = {
    "bar_states": lambda: bar_chart(STATE_REVENUE, "Revenue by state", SUB, value_format="money"),
    "bar_segments": lambda: bar_chart(SEGMENTS, "Customers by segment", SUB, sort=False,
                                      highlight=["At risk", "Can't lose them"]),
    "bar_vertical_change": lambda: bar_chart(
        pd.Series({"health_beauty": 0.12, "watches_gifts": -0.08, "bed_bath_table": 0.04,
                   "sports_leisure": -0.15}),
        "Change vs last month", SUB, value_format="percent", horizontal=False),
    "line_revenue": lambda: line_chart(monthly(), "month", "Revenue", "Monthly revenue", SUB,
                                       value_format="money", partial_last=True),
    "line_two": lambda: line_chart(monthly().assign(Returning=lambda d: d["Active customers"] * 0.1),
                                   "month", ["Active customers", "Returning"], "Active", SUB),
    "heatmap_retention": lambda: heatmap(retention(), "Cohort retention", SUB,
                                         row_label="Cohort", col_label="Months since first purchase",
                                         row_sizes=list(range(500, 2500, 100))),
    "heatmap_migration": lambda: heatmap(
        pd.DataFrame(np.random.default_rng(5).integers(0, 3000, (9, 9)),
                     index=SEGMENTS["segment"], columns=SEGMENTS["segment"]),
        "Segment migration", SUB, value_format="number", shares="row", row_label="From",
        col_label="To"),
    "heatmap_weekday_hour": lambda: heatmap(
        pd.DataFrame(np.random.default_rng(6).gamma(4, 3000, (7, 24)),
                     index=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], columns=range(24)),
        "Revenue by weekday and hour", SUB, value_format="money", col_label="Hour"),
    "scatter_ltv": lambda: scatter_chart(
        ltv_by_state(), "customers", "ltv", "Value by state", SUB, label="state", size="revenue",
        xline=1000, yline=190, log_x=True, value_format_y="money",
        quadrant_labels=["Few, valuable", "Many, valuable", "Few, low value", "Many, low value"]),
    "scatter_pca": lambda: scatter_chart(pca_points(5_000), "PC1", "PC2", "Clusters", SUB,
                                         hue="cluster"),
    "stacked_new_returning": lambda: stacked_bar_chart(
        monthly(12).assign(New=lambda d: d["Revenue"] * 0.93, Returning=lambda d: d["Revenue"] * 0.07),
        "month", ["New", "Returning"], "New vs returning revenue", SUB, value_format="money",
        partial_last=True),
    "grouped_payments": lambda: grouped_bar_chart(
        pd.DataFrame({"method": ["credit_card", "boleto", "voucher", "debit_card"],
                      "Orders": [0.739, 0.190, 0.055, 0.015], "Value": [0.783, 0.179, 0.024, 0.014]}),
        "method", ["Orders", "Value"], "Payment methods", SUB, value_format="percent"),
    "histogram_installments": lambda: histogram(
        np.random.default_rng(7).choice([1, 2, 3, 4, 5, 6, 8, 10], 20_000), "auto",
        "Installments", SUB, x_label="Installments"),
    "histogram_delivery_days": lambda: histogram(
        np.round(np.random.default_rng(8).gamma(2.2, 5.5, 30_000)), "auto", "Delivery days", SUB),
    "histogram_order_value": lambda: histogram(
        np.random.default_rng(9).lognormal(4.7, 0.8, 20_000), "auto", "Order value", SUB,
        value_format="money", currency="£"),
}


@functools.cache
def rendered(kind: str) -> bytes:
    return KINDS[kind]()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_is_a_drawn_png_under_one_megabyte(kind: str) -> None:
    check_png(rendered(kind))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_input_gives_identical_bytes(kind: str) -> None:
    assert KINDS[kind]() == rendered(kind)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_text_is_cut_off_at_the_edges(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Figure] = []
    to_png = charts._to_png

    def keep(fig: Figure) -> bytes:
        figures.append(fig)
        return to_png(fig)

    monkeypatch.setattr(charts, "_to_png", keep)
    KINDS[kind]()
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    # the tight box covers everything drawn: titles, tick labels, value labels, legends
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    edge = 1.0  # pixels
    assert drawn.x0 >= -edge and drawn.y0 >= -edge, drawn
    assert drawn.x1 <= fig.bbox.width + edge and drawn.y1 <= fig.bbox.height + edge, drawn


def test_png_has_no_timestamp_or_software_chunk() -> None:
    png = rendered("bar_states")
    assert b"tIME" not in png
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_bars_use_the_accent_and_highlight_greys_the_rest() -> None:
    plain = bar_chart(SEGMENTS, "Segments", SUB)
    marked = bar_chart(SEGMENTS, "Segments", SUB, highlight="At risk")
    assert colour_count(plain, ACCENT) > 5_000
    assert colour_count(plain, charts.GREY_BAR) == 0
    # one accent bar of nine: far fewer accent pixels, and grey bars appear
    assert 0 < colour_count(marked, ACCENT) < colour_count(plain, ACCENT) / 3
    assert colour_count(marked, charts.GREY_BAR) > 5_000


def test_more_than_max_bars_folds_the_rest_into_a_grey_other_bar() -> None:
    under = bar_chart(STATE_REVENUE.head(10), "Revenue", SUB, value_format="money")
    over = bar_chart(STATE_REVENUE, "Revenue", SUB, value_format="money", max_bars=10)
    assert colour_count(under, charts.GREY_BAR) == 0
    assert colour_count(over, charts.GREY_BAR) > 500
    # percentages do not add up: no "Other" bar, the extra ones are left out
    shares = bar_chart(STATE_REVENUE / STATE_REVENUE.sum(), "Share", SUB, value_format="percent",
                       max_bars=10)
    assert colour_count(shares, charts.GREY_BAR) == 0


def test_negative_values_get_the_second_colour() -> None:
    change = pd.Series({"a": 0.2, "b": -0.1, "c": -0.3})
    for horizontal in (True, False):
        png = bar_chart(change, "Change", SUB, value_format="percent", horizontal=horizontal)
        check_png(png)
        assert colour_count(png, charts.NEGATIVE) > 1_000
        assert colour_count(png, ACCENT) > 1_000


def test_partial_last_marks_the_last_period() -> None:
    df = monthly()
    full = line_chart(df, "month", "Revenue", "Revenue", SUB, value_format="money")
    partial = line_chart(df, "month", "Revenue", "Revenue", SUB, value_format="money",
                         partial_last=True)
    check_png(partial)
    assert full != partial
    band = "#F1F3F5"  # the shaded band behind the incomplete month
    assert colour_count(full, band) == 0
    assert colour_count(partial, band) > 1_000
    # a single (incomplete) month still draws
    check_png(line_chart(df.tail(1), "month", "Revenue", "Revenue", SUB, partial_last=True))


def test_stacked_partial_last_draws_the_last_bar_pale() -> None:
    df = monthly(12).assign(New=lambda d: d["Revenue"] * 0.9, Returning=lambda d: d["Revenue"] * 0.1)
    plain = stacked_bar_chart(df, "month", ["New", "Returning"], "Revenue", SUB)
    partial = stacked_bar_chart(df, "month", ["New", "Returning"], "Revenue", SUB,
                                partial_last=True)
    assert plain != partial
    assert colour_count(partial, ACCENT) < colour_count(plain, ACCENT)


def test_heatmap_spans_the_colour_scale() -> None:
    png = rendered("heatmap_retention")
    present = set(distinct_colours(pixels(png)).tolist())
    lut = (np.asarray(colormaps["Blues"](np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(int)
    codes = [(r << 16) | (g << 8) | b for r, g, b in lut.tolist()]
    levels = sum(c in present for c in codes)
    assert levels >= 15, f"only {levels} colour-scale levels visible"
    # the darkest and a light end of the scale are both used
    assert codes[-1] in present
    assert any(c in present for c in codes[:60])


def test_heatmap_handles_24_by_24_and_nan_cells() -> None:
    rng = np.random.default_rng(10)
    big = pd.DataFrame(rng.uniform(0, 1, (24, 24)))
    big.iloc[3, 5] = np.nan
    check_png(heatmap(big, "Big matrix", SUB))
    check_png(heatmap(big * 1e6, "Too many digits for the cells", SUB, value_format="money"))
    check_png(heatmap(big, "No annotations", SUB, annotate=False))


def test_scatter_subsamples_many_points_deterministically() -> None:
    df = pca_points(60_000)
    a = scatter_chart(df, "PC1", "PC2", "Clusters", SUB, hue="cluster")
    check_png(a)
    assert a == scatter_chart(df, "PC1", "PC2", "Clusters", SUB, hue="cluster")
    fewer = scatter_chart(df, "PC1", "PC2", "Clusters", SUB, hue="cluster", max_points=2_000)
    assert fewer != a


EMPTY_CALLS: dict[str, Callable[[], bytes]] = {
    "bar": lambda: bar_chart(pd.Series(dtype=float), "T", SUB),
    "bar_all_nan": lambda: bar_chart(pd.Series({"SP": np.nan}), "T", SUB),
    "line": lambda: line_chart(pd.DataFrame({"m": [], "v": []}), "m", "v", "T", SUB),
    "line_all_nan": lambda: line_chart(pd.DataFrame({"m": [1, 2], "v": [np.nan] * 2}), "m", "v",
                                       "T", SUB),
    "heatmap": lambda: heatmap(pd.DataFrame(), "T", SUB),
    "heatmap_all_nan": lambda: heatmap(pd.DataFrame([[np.nan, np.nan]]), "T", SUB),
    "scatter": lambda: scatter_chart(pd.DataFrame({"x": [], "y": []}), "x", "y", "T", SUB),
    "stacked": lambda: stacked_bar_chart(pd.DataFrame({"m": [], "a": []}), "m", "a", "T", SUB),
    "grouped": lambda: grouped_bar_chart(pd.DataFrame({"m": [], "a": []}), "m", "a", "T", SUB),
    "histogram": lambda: histogram([], "auto", "T", SUB),
    "histogram_all_nan": lambda: histogram([np.nan, None], "auto", "T", SUB),
}


@pytest.mark.parametrize("kind", sorted(EMPTY_CALLS))
def test_empty_data_gives_the_no_data_picture(kind: str) -> None:
    png = EMPTY_CALLS[kind]()
    assert png == empty_chart("T", SUB)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (1200, 700)
    drawn = (pixels(png) < 245).any(axis=2).mean()
    assert 0.001 < drawn < 0.03  # title, subtitle and the message, nothing else


@pytest.mark.filterwarnings("error")  # a missing glyph would warn
def test_edge_cases_render_without_warnings() -> None:
    accents = pd.Series({"São Paulo": 1_234.5, "Ceará": np.nan, "Pará": 99.0,
                         "Rio Grande do Norte e um nome muito longo para uma barra": 10.0})
    check_png(bar_chart(accents, "Receita por estado — São Paulo, Ceará", SUB, value_format="money"))
    check_png(bar_chart(accents, "T", SUB, horizontal=False))
    check_png(bar_chart(pd.Series({"Ceará": 0.42}), "One bar", SUB, value_format="percent"))
    zero = bar_chart(pd.Series({"a": 0.0, "b": 0.0}), "All zero", SUB)  # nothing to draw but axes
    assert zero != empty_chart("All zero", SUB) and len(zero) < MB
    check_png(bar_chart(pd.Series({"a": -5.0, "b": -2.0}), "All negative", SUB))
    check_png(line_chart(pd.DataFrame({"m": pd.period_range("2017-01", periods=14, freq="M"),
                                       "mom": np.sin(np.arange(14)) / 10}),
                         "m", "mom", "Month over month", SUB, value_format="percent"))
    check_png(line_chart(pd.DataFrame({"m": ["2018-01", "2018-02", "2018-03"],
                                       "v": [5.0, np.nan, 7.0]}), "m", "v", "T", SUB))
    check_png(heatmap(pd.DataFrame([[-1.0, 2.0], [3.0, -4.0]], index=["São Paulo", "Ceará"]),
                      "Negative cells", SUB, value_format="number"))
    check_png(heatmap(pd.DataFrame([[0.5]], index=["2018-01"], columns=["M0"]), "One cell", SUB))
    check_png(scatter_chart(pd.DataFrame({"x": [10.0], "y": [2.0], "s": ["SP"]}), "x", "y", "T",
                            SUB, label="s", log_x=True, quadrant_labels={"top right": "Stars"}),
              min_drawn=0.01)
    check_png(stacked_bar_chart(pd.DataFrame({"m": ["a", "b"], "p": [1.0, 2.0], "q": [-1.0, 0.5]}),
                                "m", ["p", "q"], "Negative parts", SUB))
    check_png(grouped_bar_chart(pd.DataFrame({"Orders": [5, 3]}, index=["Ceará", "Pará"]), None,
                                "Orders", "Index as categories", SUB, horizontal=True))
    check_png(histogram([5.0], "auto", "One value", SUB))
    check_png(histogram(np.arange(100.0), [0, 10, 50, 100], "Given bins", SUB, value_format="money"))
    check_png(histogram(np.random.default_rng(0).normal(0, 0.1, 500), 20, "Negative", SUB,
                        value_format="percent"))


def test_png_is_shrunk_when_over_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    full = rendered("bar_states")
    monkeypatch.setattr(charts, "MAX_PNG_BYTES", len(full) * 3 // 4)
    png = KINDS["bar_states"]()
    with Image.open(io.BytesIO(png)) as im:
        assert im.size[0] < 1200
    assert len(png) < len(full) * 3 // 4


def test_value_formatting() -> None:
    assert format_value(1_234_567.8, "money", "R$") == "R$ 1,234,568"
    assert format_value(1_234.5, "money", "£", 2) == "£1,234.50"
    assert format_value(-1_234.0, "money", "£") == "\u2212£1,234"
    assert format_value(0.1234, "percent", decimals=1) == "12.3%"
    assert format_value(-0.05, "percent") == "\u22125%"
    assert format_value(-0.0001, "percent") == "0%"  # no "−0%"
    assert format_value(12_345, "number") == "12,345"
    assert format_value(float("nan"), "number") == "–"
    assert charts._compact(1_047_000, "money", "R$") == "R$ 1.05M"
    assert charts._compact(523_400, "number", "R$") == "523k"
    assert charts._compact(950, "number", "R$") == "950"


def test_axis_ticks_take_their_decimals_from_the_step() -> None:
    fmt = charts._AxisFormatter("percent", "R$")
    assert fmt.format_ticks([0, 0.05, 0.10]) == ["0%", "5%", "10%"]
    assert fmt.format_ticks([0, 0.0025, 0.005]) == ["0.00%", "0.25%", "0.50%"]
    money = charts._AxisFormatter("money", "R$")
    assert money.format_ticks([0, 2_000_000, 4_000_000]) == ["R$ 0", "R$ 2,000,000", "R$ 4,000,000"]


def test_long_labels_are_shortened_and_stay_distinct() -> None:
    labels = [f"construction_tools_construction_garden_{i}" for i in range(3)]
    short = charts._short_labels(labels, 20)
    assert all(len(s) <= 20 for s in short)
    assert len(set(short)) == 3
    assert charts._short_labels(["Champions", "At risk"], 20) == ["Champions", "At risk"]


def test_concurrent_renders_match_sequential_ones() -> None:
    kinds = ["bar_states", "line_revenue", "heatmap_weekday_hour", "scatter_ltv"] * 2
    expected = {k: rendered(k) for k in set(kinds)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda k: KINDS[k](), kinds))
    assert all(g == expected[k] for k, g in zip(kinds, got, strict=True))


def test_rendering_leaves_global_matplotlib_state_alone() -> None:
    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    for kind in ("bar_states", "heatmap_weekday_hour", "scatter_ltv"):
        KINDS[kind]()
    assert dict(matplotlib.rcParams) == before
    if backend is not None:
        assert matplotlib.get_backend() == backend


def test_fresh_process_needs_no_pyplot_and_draws_the_same_bytes() -> None:
    code = (
        "import hashlib, sys, pandas as pd\n"
        "from analytics.charts import bar_chart\n"
        "s = pd.Series({'SP': 5998227.0, 'RJ': 2144380.0, 'Ceará': 279464.0})\n"
        "png = bar_chart(s, 'Revenue', 'as of 2018-08-29 · Sudeste', value_format='money')\n"
        "print(hashlib.sha256(png).hexdigest(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    here = bar_chart(pd.Series({"SP": 5998227.0, "RJ": 2144380.0, "Ceará": 279464.0}), "Revenue",
                     SUB, value_format="money")
    assert out == [hashlib.sha256(here).hexdigest(), "False"]
