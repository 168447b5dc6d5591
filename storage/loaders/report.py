"""What a load tells its caller: the refusal (`LoadError`) or the figures (`LoadReport`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


class LoadError(Exception):
    """A refused load. The message says what is wrong with the input, for users."""


@dataclass(frozen=True)
class LoadReport:
    """Figures of one finished load.

    `rows_read` counts the data rows of every file read (lookup files such as Olist
    products excepted); `rows_loaded` those accepted; the rest are quarantined
    (`quarantined`, by reason) or skipped on purpose (`skipped`, e.g. Online Retail
    rows without a customer). rows_read == rows_loaded + sum(quarantined) + skipped.
    """

    load_run_id: int
    format: str
    path: str
    rows_read: int
    rows_loaded: int
    quarantined: dict[str, int]  # reason -> rows
    tables: dict[str, int]  # canonical table -> distinct rows written (inserted or updated)
    counts: dict[str, int]  # format-specific figures
    duration_s: float
    skipped: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.duration_s if self.duration_s > 0 else 0.0

    def summary_lines(self) -> list[str]:
        """A short human summary: rows read, loaded, quarantined by reason, duration."""
        lines = [
            f"Loaded {self.format} from {self.path} (load #{self.load_run_id}) "
            f"in {self.duration_s:.1f} s ({self.rows_per_second:,.0f} rows/s).",
            f"Rows read {self.rows_read:,}; loaded {self.rows_loaded:,}; "
            f"quarantined {self.rows_quarantined:,}; skipped {self.skipped:,}.",
        ]
        for reason, n in sorted(self.quarantined.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  quarantined {n:,}: {reason}")
        if self.tables:
            lines.append("Written: " + ", ".join(f"{t} {n:,}" for t, n in self.tables.items()) + ".")
        if self.counts:
            lines.append(", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.counts.items()) + ".")
        lines.extend(self.notes)
        return lines

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)
