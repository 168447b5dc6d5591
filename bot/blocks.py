"""Block Kit for an Answer: header, key figures, compact tables, as-of context, buttons.

Everything is cut to Slack's limits here, so Slack never refuses a message: 50 blocks,
3,000 characters of section text, 10 fields of 2,000, a 150-character header, 75-character
button labels, 10 context elements. A cut table says "showing N of M rows".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from bot.answers import Answer, Button, Table

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTION_ID = 255
MAX_BUTTONS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 3000
# Beyond Slack's hard limits: what stays readable in a channel.
MAX_TABLE_ROWS = 20
MAX_CELL = 32  # a 32-character customer id stays whole
# All text of one message; Slack refuses very large block payloads (msg_blocks_too_long).
MAX_TOTAL_TEXT = 12_000

ACTION_PREFIX = "pulse:"  # action_id prefix of the buttons the action listener runs


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _cut_escaped(text: str, limit: int) -> str:
    """Escape, then cut without splitting an entity such as &amp;."""
    out = escape(text)
    if len(out) <= limit:
        return out
    out = out[: limit - 1]
    amp = out.rfind("&")
    if amp != -1 and ";" not in out[amp:]:
        out = out[:amp]
    return out + "…"


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": cut(text.strip() or "–", limit), "emoji": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _context(*texts: str) -> dict[str, Any]:
    elements = [_mrkdwn(_cut_escaped(t, MAX_SECTION_TEXT)) for t in texts if t][:MAX_CONTEXT_ELEMENTS]
    return {"type": "context", "elements": elements}


def _paragraphs(text: str, limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Split long mrkdwn into chunks of at most `limit` characters, at line breaks if possible."""
    text = escape(text.strip())
    chunks: list[str] = []
    while len(text) > limit:
        at = text.rfind("\n", 0, limit)
        if at <= 0:
            at = text.rfind(" ", 0, limit)
        if at <= 0:
            at = limit
            amp = text.rfind("&", 0, at)
            if amp > 0 and ";" not in text[amp:at]:  # never split an &amp; entity
                at = amp
        chunks.append(text[:at].rstrip())
        text = text[at:].lstrip()
    if text:
        chunks.append(text)
    return [c for c in chunks if c]


def figure_blocks(answer: Answer) -> list[dict[str, Any]]:
    """The key figures as section fields, at most 10 per section."""
    fields = [
        _mrkdwn(_cut_escaped(f"*{f.label}*\n{f.value}", MAX_FIELD_TEXT)) for f in answer.figures
    ]
    return [{"type": "section", "fields": fields[i:i + MAX_FIELDS]}
            for i in range(0, len(fields), MAX_FIELDS)]


def _cell(value: Any) -> str:
    if value is None or (pd.api.types.is_scalar(value) and not isinstance(value, str)
                         and pd.isna(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):,.2f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    text = " ".join(str(value).split())
    return cut(text.replace("```", "'''"), MAX_CELL)


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


_NUMBER_FORMATS = {"pct", "money", "int", "num"}


def table_lines(frame: pd.DataFrame, numeric: list[bool] | None = None) -> list[str]:
    """A frame as aligned monospace lines: header first, numbers right-aligned."""
    columns = [cut(" ".join(str(c).split()) or " ", MAX_CELL) for c in frame.columns]
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    if numeric is None:
        numeric = [_is_number(frame.iloc[:, i]) for i in range(frame.shape[1])]
    widths = [max([len(columns[i])] + [len(r[i]) for r in cells]) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric,
                                                                          strict=True)]
        return "  ".join(parts).rstrip()

    return [line(columns)] + [line(r) for r in cells]


def table_block(table: Table, *, max_rows: int = MAX_TABLE_ROWS, limit: int = MAX_SECTION_TEXT,
                currency: str = "R$") -> tuple[dict[str, Any], int]:
    """One section holding the table as a code block, cut to fit; (block, rows shown)."""
    raw = table.frame
    total = len(raw)
    title = f"*{_cut_escaped(table.title, 200)}*" if table.title else ""
    if raw.shape[1] == 0 or total == 0:
        return _section((title + "\n" if title else "") + "_(no rows)_"), 0
    formats = getattr(table, "formats", None) or {}
    numeric = [_is_number(raw.iloc[:, i]) or formats.get(col) in _NUMBER_FORMATS
               for i, col in enumerate(raw.columns)]
    shown = min(total, max_rows)
    frame = raw.head(shown)
    if formats:
        frame = dataclasses.replace(table, frame=frame).display_frame(currency)
    while True:
        lines = table_lines(frame.head(shown), numeric)
        footer = f"showing {shown:,} of {total:,} rows" if shown < total else ""
        text = _table_text(title, lines, footer)
        if len(text) <= limit or shown == 0:
            break
        # Too long: drop rows in proportion to the excess, at least one at a time.
        over = len(text) / limit
        shown = min(shown - 1, int(shown / over))
        shown = max(shown, 0)
    if len(text) > limit:  # even the header line alone is too wide
        text = _table_text(title, [cut(lines[0], limit - len(title) - 80)],
                           f"showing 0 of {total:,} rows")
    return _section(text), shown


def _table_text(title: str, lines: list[str], footer: str) -> str:
    body = escape("\n".join(lines))
    text = (title + "\n" if title else "") + "```\n" + body + "\n```"
    return text + ("\n_" + footer + "_" if footer else "")


def list_blocks(table: Table) -> list[dict[str, Any]]:
    """A table as a bulleted list: the first column (and any command text) in code style."""
    lines = [f"*{table.title}*"] if table.title else []
    for row in table.frame.itertuples(index=False, name=None):
        cells = [" ".join(str(v).split()) for v in row if v is not None and str(v).strip()]
        if cells:
            first = cells[0].replace("`", "'")
            rest = [f"`{c}`" if c.startswith("/") and "`" not in c else c for c in cells[1:]]
            lines.append("• `" + first + "`" + "".join(" — " + c for c in rest))
    return [_section(p) for p in _paragraphs("\n".join(lines) or "(no rows)")]


def button_blocks(buttons: list[Button]) -> list[dict[str, Any]]:
    """An actions block; each button carries the command it runs in its value."""
    elements = []
    seen: set[str] = set()
    for i, b in enumerate(buttons[:MAX_BUTTONS]):
        action_id = cut(f"{ACTION_PREFIX}{b.action_id or 'run'}", MAX_ACTION_ID - 4)
        if action_id in seen:  # ids must be unique within the block
            action_id = f"{action_id}:{i}"
        seen.add(action_id)
        if len(b.command) > MAX_BUTTON_VALUE:
            continue
        elements.append({
            "type": "button",
            "text": _plain(b.label, MAX_BUTTON_TEXT),
            "action_id": action_id,
            "value": b.command,
        })
    return [{"type": "actions", "elements": elements}] if elements else []


def context_elements(answer: Answer, asked_by: str | None = None,
                     asked: str | None = None) -> list[str]:
    """Context lines as mrkdwn: as-of date and filter, its note, and who asked what."""
    parts = [answer.context_line(), answer.as_of_note,
             f"reference {answer.reference}" if answer.reference else ""]
    out = [_cut_escaped(p, MAX_SECTION_TEXT) for p in parts if p]
    if asked_by:  # after escaping: the mention must stay a live <@U…> link
        who = f"asked by <@{escape(asked_by)}>"
        out.append(who + (f" · `{_cut_escaped(asked, 200)}`" if asked else ""))
    return out[:MAX_CONTEXT_ELEMENTS]


def answer_blocks(answer: Answer, *, asked_by: str | None = None, asked: str | None = None,
                  buttons: bool = True, extra_notes: list[str] | None = None,
                  currency: str = "R$") -> list[dict[str, Any]]:
    """The Block Kit blocks of an answer, always within Slack's limits.

    `asked_by` (a user id) and `asked` (the command text) add "asked by @user · /kpis SP"
    to the context line, for answers posted into a channel.
    """
    title = ("⚠️ " if answer.is_error else "") + (answer.title or answer.command or "Retail Pulse")
    head = [{"type": "header", "text": _plain(title, MAX_HEADER)}]

    body: list[dict[str, Any]] = []
    if answer.summary:
        body += [_section(p) for p in _paragraphs(answer.summary)]
    body += figure_blocks(answer)
    for table in answer.tables:
        if answer.kind == "help":  # documentation reads better as a list than a grid
            body += list_blocks(table)
            continue
        block, _ = table_block(table, currency=currency)
        body.append(block)
        if table.note:
            body.append(_context(table.note))
    for note in [*answer.notes, *(extra_notes or [])]:
        body += [{"type": "context", "elements": [_mrkdwn(p)]} for p in _paragraphs(note)]

    tail: list[dict[str, Any]] = []
    context = context_elements(answer, asked_by, asked)
    if context:
        tail.append({"type": "context", "elements": [_mrkdwn(t) for t in context]})
    if buttons:
        tail += button_blocks(answer.buttons)
    return _fit(head, body, tail)


def _fit(head: list[dict], body: list[dict], tail: list[dict]) -> list[dict[str, Any]]:
    """Keep header and tail, cut the body to the block count and total text budget."""
    room = MAX_BLOCKS - len(head) - len(tail)
    budget = MAX_TOTAL_TEXT - _text_size(head) - _text_size(tail)
    kept: list[dict] = []
    used = 0
    for block in body:
        size = _text_size([block])
        if len(kept) >= room - 1 or used + size > budget:
            break
        kept.append(block)
        used += size
    if len(kept) < len(body):
        left = len(body) - len(kept)
        kept.append(_context(f"… {left} more part{'s' if left != 1 else ''} cut to fit Slack; "
                             "`pulse ask` in a terminal shows the whole answer."))
    return head + kept + tail


def _text_size(blocks: list[dict]) -> int:
    total = 0
    for block in blocks:
        for key in ("text",):
            if isinstance(block.get(key), dict):
                total += len(block[key].get("text", ""))
        for fld in block.get("fields", []) or []:
            total += len(fld.get("text", ""))
        for el in block.get("elements", []) or []:
            if isinstance(el.get("text"), str):
                total += len(el["text"])
            elif isinstance(el.get("text"), dict):
                total += len(el["text"].get("text", "")) + len(el.get("value", ""))
    return total


def fallback_text(answer: Answer) -> str:
    """The plain `text` of the message: notifications and screen readers show it."""
    parts = [("⚠️ " if answer.is_error else "") + (answer.title or "Retail Pulse")]
    if answer.summary:
        parts.append(answer.summary.splitlines()[0])
    if answer.figures:
        parts.append(", ".join(f"{f.label}: {f.value}" for f in answer.figures[:6]))
    if answer.context_line():
        parts.append(f"({answer.context_line()})")
    return _cut_escaped(" — ".join(parts), MAX_FALLBACK_TEXT)


def note_blocks(text: str) -> list[dict[str, Any]]:
    """A short notice (an upload that failed, a missing permission) as blocks."""
    return [_section(p) for p in _paragraphs(text)][:MAX_BLOCKS]
