"""The terminal face: renders an Answer as text (or JSON) and saves its charts as PNG files."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pandas as pd

from bot.answers import Answer

MAX_ROWS = 25


def save_charts(answer: Answer, out_dir: str | Path) -> dict[str, str]:
    """Write the answer's charts (and export) into `out_dir`; chart name -> file path."""
    out = Path(out_dir)
    paths: dict[str, str] = {}
    if answer.charts or answer.export:
        out.mkdir(parents=True, exist_ok=True)
    for chart in answer.charts:
        path = out / _safe_name(chart.name, ".png")
        path.write_bytes(chart.png)
        paths[chart.name] = str(path)
    if answer.export is not None:
        path = out / _safe_name(answer.export.filename, ".csv")
        path.write_bytes(answer.export.content)
        paths[answer.export.filename] = str(path)
    return paths


def _safe_name(name: str, suffix: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "chart"
    return stem if stem.endswith(suffix) else stem + suffix


def render_text(answer: Answer, paths: dict[str, str] | None = None, width: int = 100,
                currency: str = "R$") -> str:
    """The answer as readable terminal text."""
    lines: list[str] = []
    title = answer.title if not answer.is_error else "⚠ " + answer.title
    lines += [title, "═" * min(len(title) + 2, width)]
    context = answer.context_line()
    if context:
        lines.append(context)
    if answer.as_of_note:
        lines.append(f"({answer.as_of_note})")
    if answer.summary:
        lines += ["", *(_md_to_text(p) for p in answer.summary.splitlines())]
    if answer.figures:
        lines.append("")
        label_w = max(len(f.label) for f in answer.figures)
        lines += [f"  {f.label:<{label_w}}  {f.value}" for f in answer.figures]
    for table in answer.tables:
        lines += ["", table.title, "─" * min(len(table.title), width)]
        frame = table.display_frame(currency)
        shown = frame.head(MAX_ROWS)
        lines.append(_frame_text(shown) if not shown.empty else "(no rows)")
        if len(frame) > len(shown):
            lines.append(f"… showing {len(shown)} of {len(frame):,} rows")
        if table.note:
            lines.append(table.note)
    for note in answer.notes:
        lines += ["", *textwrap.wrap(_md_to_text(note), width)]
    if paths:
        lines += ["", "Files:"] + [f"  {p}" for p in paths.values()]
    if answer.reference:
        lines.append(f"reference: {answer.reference}")
    return "\n".join(lines)


def render_json(answer: Answer, paths: dict[str, str] | None = None) -> str:
    return json.dumps(answer.to_json(paths), ensure_ascii=False, indent=2)


def _frame_text(frame: pd.DataFrame) -> str:
    display = frame.copy()
    for col in display.columns:
        if pd.api.types.is_float_dtype(display[col]):
            display[col] = display[col].map(lambda v: "" if pd.isna(v) else f"{v:,.2f}")
        elif pd.api.types.is_integer_dtype(display[col]):
            display[col] = display[col].map(lambda v: f"{v:,}")
    return display.to_string(index=False, max_colwidth=40)


def _md_to_text(text: str) -> str:
    return text.replace("*", "").replace("`", "")
