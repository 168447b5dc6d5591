"""Small pieces the CLI modules share."""

from __future__ import annotations

import datetime as dt

import click


def parse_date(value: str | None) -> dt.date | None:
    """An ISO date from an option, or a click error that says what is accepted."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2018-08-29") from None
