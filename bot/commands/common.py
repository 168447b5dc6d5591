"""Pieces every analytics command shares: as-of, place, chart subtitles, tables."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bot.answers import Answer, Table
from bot.router import CommandContext


def subtitle(as_of_date, label: str) -> str:  # noqa: ANN001 - a date
    return f"as of {as_of_date.isoformat()} · {label}"


def base_answer(ctx: CommandContext, command: str, title: str, place) -> dict:  # noqa: ANN001
    """Keyword arguments for an Answer: command, title, as-of, its note and the filter."""
    asof = ctx.as_of()
    note = asof.reason if asof.mode == "auto" and asof.tail_orders else ""
    return {
        "command": command,
        "title": title,
        "as_of": asof.date,
        "as_of_note": note,
        "filter_label": place.label,
    }


def table(title: str, frame: pd.DataFrame, columns: Sequence[str], *,
          rename: dict[str, str] | None = None, head: int | None = None, note: str | None = None,
          pct: Sequence[str] = (), money: Sequence[str] = (), ints: Sequence[str] = (),
          nums: Sequence[str] = (), dates: Sequence[str] = ()) -> Table:
    """A Table of the listed columns (those present), renamed for people, with formats."""
    rename = rename or {}
    cols = [c for c in columns if c in frame.columns]
    out = frame[cols]
    if head is not None:
        out = out.head(head)
    formats: dict[str, str] = {}
    for kind, names in (("pct", pct), ("money", money), ("int", ints), ("num", nums), ("date", dates)):
        for name in names:
            if name in cols:
                formats[rename.get(name, name)] = kind
    return Table(title, out.rename(columns=rename).reset_index(drop=True), note=note, formats=formats)


def empty_note(answer_kwargs: dict, what: str) -> Answer:
    """An answer that says there is nothing for the filter (not an error)."""
    return Answer(**answer_kwargs, summary=f"No {what} for {answer_kwargs['filter_label']} "
                  f"up to {answer_kwargs['as_of']}.")
