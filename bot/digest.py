"""The weekly digest: built once as plain data, then rendered as Block Kit, Markdown or an Answer.

`build_digest` computes a `Digest` for the week ending on the as-of date: four sections
(headline KPIs, cohort retention, churn risk, segment migration), each with its figures,
one insight sentence computed from those figures, and (for the last three) a chart as
PNG bytes. `digest_blocks` makes the Slack message (charts go into its thread, see
`bot.digest_post`); `Digest.write` makes `digest.md` plus the PNG files for
`pulse digest --out DIR`; `Digest.to_answer` shows it in the console.

A section whose data is missing (no churn scores yet, no snapshot a week back) says why
and how to get it, instead of failing the whole digest.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from bot.answers import (
    Answer,
    Button,
    Chart,
    Figure,
    Table,
    fmt_int,
    fmt_money,
    fmt_pct,
)
from bot.blocks import MAX_HEADER, button_blocks, cut, escape
from bot.settings import Settings
from storage.geography import Place

KPI_LABELS = {
    "revenue": "Revenue",
    "orders": "Orders",
    "customers": "Customers who bought",
    "new_customers": "New customers",
    "average_order_value": "Average order value",
}
COHORT_ROWS = 12
TOP_GROUPS = 5  # states (or segments, for one state) listed under churn risk
TOP_FLOWS = 3
EXPORT_ACTION = "digest-export-at-risk"


@dataclass(frozen=True)
class DigestChart:
    """A chart of the digest; `name` is its file stem and its part name when posted."""

    name: str
    title: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


@dataclass(frozen=True)
class Section:
    key: str  # "kpis", "cohorts", "churn", "migration"
    title: str
    insight: str  # one sentence computed from the figures
    figures: tuple[Figure, ...] = ()
    lines: tuple[str, ...] = ()  # short mrkdwn/Markdown lines (top states, biggest flows)
    table: Table | None = None  # shown in Markdown and the console
    chart: DigestChart | None = None
    buttons: tuple[Button, ...] = ()
    unavailable: str = ""  # why the section has no numbers (then insight repeats it)

    def figure(self, label: str) -> Figure:
        return next(f for f in self.figures if f.label == label)


@dataclass(frozen=True)
class Digest:
    """The digest for the week ending on `as_of` for one place."""

    as_of: dt.date
    week_start: dt.date
    place: Place
    as_of_note: str
    sections: tuple[Section, ...]
    currency: str = "R$"

    @property
    def title(self) -> str:
        return f"Weekly digest — week ending {self.as_of:%b %d, %Y}"

    @property
    def context(self) -> str:
        return (f"as of {self.as_of.isoformat()} · {self.place.label} · "
                f"week {self.week_start:%b %d} – {self.as_of:%b %d}")

    @property
    def charts(self) -> list[DigestChart]:
        return [s.chart for s in self.sections if s.chart is not None]

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def file_stem(self) -> str:
        suffix = "" if self.place.is_all else "-" + _slug(self.place.value or "")
        return f"digest-{self.as_of.isoformat()}{suffix}"

    # --- Markdown ------------------------------------------------------------------

    def to_markdown(self, chart_files: dict[str, str] | None = None) -> str:
        """The digest as Markdown; `chart_files` maps chart name → image path (relative)."""
        files = chart_files or {}
        out = [f"# {self.title}", "", f"_{self.context}_", ""]
        if self.as_of_note:
            out += [f"_{self.as_of_note}_", ""]
        for s in self.sections:
            out += [f"## {s.title}", "", s.insight, ""]
            if s.figures:
                out += [f"- **{f.label}**: {f.value}" for f in s.figures] + [""]
            if s.lines:
                out += [f"- {line}" for line in s.lines] + [""]
            if s.table is not None and not s.table.frame.empty:
                out += [f"**{s.table.title}**", "", _markdown_table(s.table.frame), ""]
            if s.chart is not None:
                out += [f"![{s.chart.title}]({files.get(s.chart.name, s.chart.filename)})", ""]
            for b in s.buttons:
                out += [f"_{b.label}: `{b.command}`_", ""]
        return "\n".join(out).rstrip() + "\n"

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write `<stem>.md` and one PNG per chart into `out_dir`; the paths written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = self.file_stem()
        written, names = [], {}
        for chart in self.charts:
            path = out / f"{stem}-{chart.filename}"
            path.write_bytes(chart.png)
            names[chart.name] = path.name
            written.append(path)
        md = out / f"{stem}.md"
        md.write_text(self.to_markdown(names), encoding="utf-8")
        return [md, *written]

    # --- console ---------------------------------------------------------------------

    def to_answer(self, command: str = "/digest") -> Answer:
        """The digest as one Answer (for the console and `pulse ask`)."""
        summary = "\n".join(f"*{s.title}* — {s.insight}" for s in self.sections)
        figures = [Figure(f"{s.title}: {f.label}", f.value, f.raw)
                   for s in self.sections for f in s.figures]
        tables = [s.table for s in self.sections if s.table is not None]
        notes = [line for s in self.sections for line in s.lines]
        return Answer(
            command=command, title=self.title, as_of=self.as_of, as_of_note=self.as_of_note,
            filter_label=self.place.label, summary=summary, figures=figures, tables=tables,
            charts=[Chart(c.name, c.title, c.png) for c in self.charts], notes=notes,
            buttons=[b for s in self.sections for b in s.buttons],
        )


# --- building ------------------------------------------------------------------------------


def resolve_digest_place(engine: Engine, text: str | None) -> Place:
    """The place of a digest filter ("" → everybody); UnknownPlace for unknown names."""
    from bot.router import _known_places
    from storage.geography import resolve_place

    states, regions = _known_places(engine)
    return resolve_place(text or None, states, regions)


def build_digest(engine: Engine, settings: Settings, place: Place | str | None = None,
                 *, as_of: dt.date | None = None) -> Digest:
    """The digest for the week ending on `as_of` (default: the settings' as-of rule)."""
    from analytics.asof import current_as_of

    if place is None or isinstance(place, str):
        place = resolve_digest_place(engine, place)
    note = ""
    if as_of is None:
        resolved = current_as_of(engine, fixed=settings.as_of_date())
        as_of, note = resolved.date, resolved.reason
    currency = settings.currency
    sections = (
        _kpi_section(engine, as_of, place, currency),
        _cohort_section(engine, as_of, place),
        _churn_section(engine, as_of, place, currency),
        _migration_section(engine, as_of, place, currency),
    )
    return Digest(as_of=as_of, week_start=as_of - dt.timedelta(days=6), place=place,
                  as_of_note=note, sections=sections, currency=currency)


def _subtitle(as_of: dt.date, place: Place) -> str:
    return f"as of {as_of.isoformat()} · {place.label}"


def _pct(x: float | None) -> str:
    """A share as a percentage, with two decimals below 1% (retention is often that small)."""
    if x is None or pd.isna(x):
        return "–"
    return fmt_pct(x, 2 if abs(x) < 0.01 else 1)


def _signed_pct(x: float | None) -> str:
    if x is None or pd.isna(x):
        return "–"
    return ("+" if x > 0 else "") + fmt_pct(x)


def _moved(x: float | None, up: str = "rose", down: str = "fell", same: str = "held steady") -> str:
    if x is None or pd.isna(x) or abs(x) < 0.0005:
        return same
    return up if x > 0 else down


def _kpi_section(engine: Engine, as_of: dt.date, place: Place, currency: str) -> Section:
    from analytics.weekly import weekly_kpis

    k = weekly_kpis(engine, as_of, place)
    t = k.table

    def fmt(metric: str, v: float | None) -> str:
        if metric in ("revenue", "average_order_value"):
            return fmt_money(v, currency)
        return fmt_int(v)

    figures = []
    for metric, label in KPI_LABELS.items():
        v = k.value(metric)
        changes = f"WoW {_signed_pct(k.value(metric, 'wow'))} · MoM {_signed_pct(k.value(metric, 'mom'))}"
        figures.append(Figure(label, f"{fmt(metric, v)} ({changes})", raw=v))
    rev, wow, mom = k.value("revenue"), k.value("revenue", "wow"), k.value("revenue", "mom")
    if wow is None:
        insight = (f"Revenue this week was {fmt_money(rev, currency)}; the week before had no "
                   "sales to compare with.")
    else:
        insight = (f"Revenue {_moved(wow)} {fmt_pct(abs(wow))} week over week to "
                   f"{fmt_money(rev, currency)}")
        orders_wow = k.value("orders", "wow")
        if orders_wow is not None:
            insight += f", with orders {_moved(orders_wow, 'up', 'down', 'flat')}"
            insight += f" {fmt_pct(abs(orders_wow))}" if abs(orders_wow) >= 0.0005 else ""
        insight += "."
    if mom is not None:
        insight += (f" The last four weeks are {'up' if mom > 0 else 'down'} {fmt_pct(abs(mom))} "
                    "on the four before.")
    frame = pd.DataFrame({
        "metric": [KPI_LABELS[m] for m in t.index],
        "this week": [fmt(m, v) for m, v in zip(t.index, t["week"], strict=True)],
        "previous week": [fmt(m, v) for m, v in zip(t.index, t["previous_week"], strict=True)],
        "WoW": [_signed_pct(v) for v in t["wow"]],
        "last 28 days": [fmt(m, v) for m, v in zip(t.index, t["month"], strict=True)],
        "previous 28 days": [fmt(m, v) for m, v in zip(t.index, t["previous_month"], strict=True)],
        "MoM": [_signed_pct(v) for v in t["mom"]],
    })
    return Section("kpis", "Headline KPIs", insight, tuple(figures),
                   table=Table("This week and the last 28 days", frame,
                               note="WoW: vs the 7 days before; MoM: 28 days vs the 28 before."))


def _cohort_section(engine: Engine, as_of: dt.date, place: Place) -> Section:
    from analytics.charts import heatmap
    from analytics.cohorts import cohort_retention

    c = cohort_retention(engine, as_of, place, period="month", max_periods=COHORT_ROWS)
    title = "Cohort retention"
    if c.retention.empty:
        return Section("cohorts", title, "No purchases yet, so there are no cohorts.",
                       unavailable="no cohorts")
    last = c.retention.tail(COHORT_ROWS)
    sizes = c.cohorts.set_index("cohort")["size"].reindex(last.index)
    matrix = last.copy()
    matrix.columns = [f"M{k}" for k in matrix.columns]
    png = heatmap(matrix, f"Monthly cohort retention — last {len(last)} cohorts",
                  _subtitle(as_of, place), value_format="percent", row_sizes=sizes,
                  row_label="First-purchase month", col_label="Months since first purchase",
                  note="Share of each cohort buying again in month k; blank = not reached yet.")
    complete = c.cohorts[c.cohorts["periods_complete"] >= 2]["cohort"]
    m1 = c.retention.loc[complete, 1].dropna() if len(complete) else pd.Series(dtype=float)
    figures = []
    if len(m1):
        figures.append(Figure("M1 retention, latest cohort", f"{_pct(m1.iloc[-1])} ({m1.index[-1]})",
                              raw=float(m1.iloc[-1])))
    if len(m1) > 1:
        figures.append(Figure("M1 retention, cohort before", f"{_pct(m1.iloc[-2])} ({m1.index[-2]})",
                              raw=float(m1.iloc[-2])))
    avg = c.average.get(1)
    if avg is not None:
        figures.append(Figure("Average M1 retention", f"{_pct(avg)} ({c.average_cohorts[1]} cohorts)",
                              raw=avg))
    if len(m1) > 1:
        a, b = float(m1.iloc[-2]), float(m1.iloc[-1])
        verb = _moved(b - a)
        if verb == "held steady":
            insight = f"M1 retention held at {_pct(b)} ({m1.index[-2]} and {m1.index[-1]} cohorts)."
        else:
            insight = (f"M1 retention {verb} from {_pct(a)} to {_pct(b)} "
                       f"({m1.index[-2]} → {m1.index[-1]} cohort).")
        if avg is not None:
            insight += f" The average over all cohorts is {_pct(avg)}."
    elif len(m1) == 1:
        insight = f"M1 retention of the {m1.index[-1]} cohort is {_pct(m1.iloc[-1])}; it is the only cohort with a complete first month."
    else:
        insight = "No cohort has a complete first month yet."
    trend = m1.tail(6)
    lines = (("M1 trend: " + " · ".join(f"{i} {_pct(v)}" for i, v in trend.items())),) if len(trend) else ()
    return Section("cohorts", title, insight, tuple(figures), lines,
                   chart=DigestChart("cohorts", "Monthly cohort retention", png))


def export_button(place: Place) -> Button:
    """The button that exports the at-risk customers as CSV (runs /export-at-risk [place];
    the export allowlist applies to whoever clicks)."""
    where = "" if place.is_all else f" {place.value}"
    return Button("Export at-risk customers (CSV)", f"/export-at-risk{where}", EXPORT_ACTION)


def _churn_section(engine: Engine, as_of: dt.date, place: Place, currency: str) -> Section:
    from analytics.charts import bar_chart
    from analytics.errors import NotAvailable
    from analytics.weekly import record_risk, risk_history_value, risk_summary

    title = "Churn risk"
    try:
        r = risk_summary(engine, place)
    except NotAvailable as exc:
        return Section("churn", title, str(exc), unavailable=str(exc))
    before = risk_history_value(engine, place, r.as_of - dt.timedelta(days=7))
    record_risk(engine, r)
    figures = [
        Figure("Customers at risk", f"{fmt_int(r.at_risk)} of {fmt_int(r.customers)}", raw=r.at_risk),
        Figure("Revenue at risk", fmt_money(r.revenue_at_risk, currency), raw=r.revenue_at_risk),
    ]
    change = None
    if before is not None:
        day, prev = before
        prev_rev = float(prev.get("revenue_at_risk") or 0.0)
        change = (r.revenue_at_risk / prev_rev - 1) if prev_rev > 0 else None
        figures.append(Figure("Change vs last week",
                              f"{_signed_pct(change)} revenue · {int(r.at_risk - prev.get('at_risk', 0)):+,} "
                              f"customers (vs {day.isoformat()})", raw=change))
    else:
        figures.append(Figure("Change vs last week", "– (no figure recorded a week ago)", raw=None))
    groups = r.by_group.head(TOP_GROUPS)
    what = "segment" if r.group_level == "segment" else "state"
    lines = tuple(f"{g}: {fmt_money(v, currency)} at risk ({fmt_int(n)} customers)"
                  for g, v, n in zip(groups["group"], groups["value_at_risk"], groups["at_risk"],
                                     strict=True))
    if r.as_of != as_of:
        lines += (f"Churn scores are from the refresh as of {r.as_of.isoformat()} "
                  "(`pulse refresh` updates them).",)
    lead = ""
    if len(groups) and r.revenue_at_risk > 0:
        lead = (f", led by {groups['group'].iloc[0]} with "
                f"{fmt_pct(groups['value_at_risk'].iloc[0] / r.revenue_at_risk)} of it")
    if change is not None:
        insight = (f"Revenue at risk {_moved(change)} {fmt_pct(abs(change))} on last week to "
                   f"{fmt_money(r.revenue_at_risk, currency)} across {fmt_int(r.at_risk)} customers{lead}.")
    else:
        insight = (f"{fmt_money(r.revenue_at_risk, currency)} of value is at risk across "
                   f"{fmt_int(r.at_risk)} high-risk customers{lead}.")
    chart_title = f"Revenue at risk by {what}"
    png = bar_chart(r.by_group.set_index("group")["value_at_risk"], chart_title,
                    _subtitle(r.as_of, place), value_format="money", currency=currency, max_bars=10,
                    note="Σ value at risk of the customers in the high churn-risk band.")
    return Section("churn", title, insight, tuple(figures), lines,
                   chart=DigestChart("churn", chart_title, png),
                   buttons=(export_button(place),))


def _migration_section(engine: Engine, as_of: dt.date, place: Place, currency: str) -> Section:
    from analytics.charts import heatmap
    from analytics.errors import NotAvailable
    from analytics.migration import DIGEST_WEEKS, segment_migration

    title = "Segment migration"
    try:
        m = segment_migration(engine, as_of, weeks=DIGEST_WEEKS, place=place)
    except NotAvailable as exc:
        return Section("migration", title, str(exc), unavailable=str(exc))
    flows = m.top_flows(TOP_FLOWS)
    figures = (
        Figure("Moved up a segment", f"{fmt_int(m.upgrades)} ({fmt_money(m.upgrade_revenue, currency)})",
               raw=m.upgrades),
        Figure("Moved down a segment", f"{fmt_int(m.downgrades)} ({fmt_money(m.downgrade_revenue, currency)})",
               raw=m.downgrades),
        Figure("Arrived as new customers", fmt_int(m.new_customers), raw=m.new_customers),
        Figure("Stayed in their segment", fmt_int(m.stayed), raw=m.stayed),
    )
    lines = tuple(f"{f.sentence()} ({fmt_money(f.revenue, currency)}, {fmt_pct(f.share_of_source)} "
                  f"of {f.source})" for f in flows)
    span = f"between {m.earlier.isoformat()} and {m.later.isoformat()}"
    if flows:
        insight = (f"{fmt_int(m.downgrades)} customers moved down a segment and {fmt_int(m.upgrades)} "
                   f"moved up {span}; the biggest flow: {flows[0].sentence()}.")
    else:
        insight = f"No customer changed segment {span}."
    png = heatmap(m.counts, "Segment migration", f"{m.earlier.isoformat()} → {m.later.isoformat()} · "
                  f"{place.label}", value_format="number", shares="row",
                  row_label=f"Segment on {m.earlier.isoformat()}",
                  col_label=f"Segment on {m.later.isoformat()}",
                  note="Customers per cell and share of the row.")
    return Section("migration", title, insight, figures, lines,
                   chart=DigestChart("migration", "Segment migration", png))


# --- Block Kit ---------------------------------------------------------------------------------


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def digest_blocks(digest: Digest, *, charts_note: bool = True) -> list[dict[str, Any]]:
    """The digest message: header, context, one block group per section (≤ 50 blocks)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(digest.title, MAX_HEADER),
                                    "emoji": True}},
        {"type": "context", "elements": [_mrkdwn(cut(escape(digest.context), 3000))]},
    ]
    for s in digest.sections:
        blocks.append({"type": "divider"})
        blocks.append({"type": "section",
                       "text": _mrkdwn(cut(f"*{escape(s.title)}*\n{escape(s.insight)}", 3000))})
        if s.figures:
            fields = [_mrkdwn(cut(f"*{escape(f.label)}*\n{escape(f.value)}", 2000)) for f in s.figures]
            blocks.append({"type": "section", "fields": fields[:10]})
        if s.lines:
            text = "\n".join(f"• {escape(line)}" for line in s.lines)
            blocks.append({"type": "section", "text": _mrkdwn(cut(text, 3000))})
        blocks += button_blocks(list(s.buttons))
    if charts_note and digest.charts:
        n = len(digest.charts)
        blocks.append({"type": "context", "elements": [_mrkdwn(
            f"{n} chart{'s' if n != 1 else ''} in the thread · {escape(digest.as_of_note)}"
            if digest.as_of_note else f"{n} chart{'s' if n != 1 else ''} in the thread")]})
    return blocks[:50]


def fallback_text(digest: Digest) -> str:
    """The notification text of the digest message."""
    parts = [digest.title]
    for s in digest.sections:
        parts.append(f"{s.title}: {s.insight}")
    return cut(" — ".join(parts), 3000)


# --- small helpers ----------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "place"


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)
