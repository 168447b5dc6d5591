"""What every analysis result carries: the as-of date and the place it was filtered to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from storage.geography import Place


@dataclass(frozen=True, eq=False)
class Result:
    """Base of the analyses' frozen result dataclasses (figures are numbers, tables DataFrames)."""

    as_of: dt.date
    place: Place

    @property
    def label(self) -> str:
        """The filter label ("all customers", "São Paulo (SP)", "region Sul", ...)."""
        return self.place.label
