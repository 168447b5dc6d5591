"""Opening the store: an Engine whose schema is at the newest migration."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, func, select

from storage import schema
from storage.engine import make_engine
from storage.migrate import upgrade

# Orders with these statuses are not purchases (never paid or never fulfilled).
NON_PURCHASE_STATUSES = ("canceled", "unavailable")


def open_store(url: str) -> Engine:
    """An Engine for `url` with the schema created or upgraded (Alembic)."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


def get_meta(engine: Engine, key: str, default: Any = None) -> Any:
    """A JSON value from the `meta` table, or `default`."""
    with engine.connect() as conn:
        value = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()
    return default if value is None else json.loads(value)


def set_meta(conn, key: str, value: Any) -> None:  # noqa: ANN001 - Connection
    """Store a JSON value in `meta` (inside the caller's transaction)."""
    t = schema.meta
    conn.execute(t.delete().where(t.c.key == key))
    conn.execute(t.insert().values(key=key, value=json.dumps(value, default=_json_default)))


def current_watermark(engine: Engine) -> int:
    """The newest load run all of whose rows are visible: below the oldest "running" run."""
    runs = schema.load_runs
    with engine.connect() as conn:
        running = conn.execute(select(func.min(runs.c.id)).where(runs.c.status == "running")).scalar()
        newest = conn.execute(select(func.max(runs.c.id))).scalar()
    return int(running) - 1 if running is not None else int(newest or 0)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
