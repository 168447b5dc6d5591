"""What a command answers with: plain data that Slack, the console and JSON render."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Figure:
    """A headline number: `value` is already formatted for people, `raw` for scripts."""

    label: str
    value: str
    raw: Any = None


@dataclass(frozen=True)
class Table:
    """A table to show; `frame` holds display-ready columns (formatted strings or numbers)."""

    title: str
    frame: pd.DataFrame
    note: str | None = None
    # column -> "pct" | "money" | "int" | "num" | "date": how renderers show raw values
    formats: dict[str, str] = field(default_factory=dict)

    def display_frame(self, currency: str = "R$") -> pd.DataFrame:
        """The frame with every formatted column turned into display strings."""
        out = self.frame.copy()
        for col, kind in self.formats.items():
            if col not in out.columns:
                continue
            if kind == "pct":
                out[col] = out[col].map(fmt_pct)
            elif kind == "money":
                out[col] = out[col].map(lambda v: fmt_money(v, currency))
            elif kind == "int":
                out[col] = out[col].map(fmt_int)
            elif kind == "num":
                out[col] = out[col].map(fmt_num)
            elif kind == "date":
                out[col] = out[col].map(_fmt_date)
        return out


@dataclass(frozen=True)
class Chart:
    """A rendered chart: PNG bytes and the file name it is saved or uploaded under."""

    name: str
    title: str
    png: bytes


@dataclass(frozen=True)
class Export:
    """A CSV file produced by a command (e.g. the at-risk list)."""

    filename: str
    content: bytes
    rows: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Button:
    """A follow-up action: `command` is the command text the button runs."""

    label: str
    command: str
    action_id: str


@dataclass(frozen=True)
class Answer:
    """The reply to one command text. `kind` is "answer", "help" or "error"."""

    command: str
    title: str
    kind: str = "answer"
    as_of: dt.date | None = None
    as_of_note: str = ""
    filter_label: str = ""
    summary: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    export: Export | None = None
    reference: str | None = None  # error reference shown to users, details in the log

    @property
    def is_error(self) -> bool:
        return self.kind == "error"

    def context_line(self) -> str:
        """"as of 2018-08-29 · São Paulo (SP)" — stated under every answer."""
        parts = []
        if self.as_of is not None:
            parts.append(f"as of {self.as_of.isoformat()}")
        if self.filter_label:
            parts.append(self.filter_label)
        return " · ".join(parts)

    def to_json(self, chart_paths: dict[str, str] | None = None) -> dict[str, Any]:
        """The answer as JSON-ready data (tables as lists of records)."""
        return {
            "command": self.command,
            "kind": self.kind,
            "title": self.title,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "as_of_note": self.as_of_note,
            "filter": self.filter_label,
            "summary": self.summary,
            "figures": {f.label: _jsonable(f.raw if f.raw is not None else f.value) for f in self.figures},
            "tables": [
                {"title": t.title, "note": t.note,
                 "rows": [{str(k): _jsonable(v) for k, v in rec.items()}
                          for rec in t.frame.to_dict(orient="records")]}
                for t in self.tables
            ],
            "charts": [
                (chart_paths or {}).get(c.name, c.name) for c in self.charts
            ],
            "notes": self.notes,
            "export": ({"filename": self.export.filename, "rows": self.export.rows}
                       if self.export else None),
            "reference": self.reference,
        }


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Period):
        return str(value)
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)


def error_answer(command: str, message: str, *, reference: str | None = None) -> Answer:
    """An error reply: what was wrong and what is accepted."""
    return Answer(command=command, title="Sorry", kind="error", summary=message, reference=reference)


# --- number formatting, shared by every renderer ---------------------------------------------


def fmt_int(n: float | int | None) -> str:
    return "–" if n is None or _isnan(n) else f"{int(round(n)):,}"


def fmt_money(x: float | None, currency: str = "R$", decimals: int | None = None) -> str:
    if x is None or _isnan(x):
        return "–"
    if decimals is None:
        decimals = 0 if abs(x) >= 1000 else 2
    sign = "-" if x < 0 else ""
    return f"{sign}{currency} {abs(x):,.{decimals}f}"


def fmt_pct(x: float | None, decimals: int = 1) -> str:
    """A share (0.123) as a percentage ("12.3%")."""
    return "–" if x is None or _isnan(x) else f"{x * 100:.{decimals}f}%"


def fmt_num(x: float | None, decimals: int = 2) -> str:
    return "–" if x is None or _isnan(x) else f"{x:,.{decimals}f}"


def _fmt_date(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "–"
    if isinstance(value, dt.datetime | pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return str(value)


def _isnan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False
