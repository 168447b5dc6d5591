"""A SQLite store holding the bundled Olist sample, loaded and refreshed once per test
process and copied for each module that asks (the Slack tests and the router fuzz).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from sqlalchemy import Engine

from storage.store import open_store

_BUILT: dict[str, Path] = {}
_LOCK = threading.Lock()


def sample_store(folder: Path) -> Engine:
    """An opened store in `folder` with the sample data (a copy of the one built first)."""
    with _LOCK:
        if "db" not in _BUILT:
            path = folder.parent / f"{folder.name}-sample-master.db"
            engine = open_store(f"sqlite:///{path}")
            _load_sample(engine)
            engine.dispose()
            _BUILT["db"] = path
    target = folder / "pulse.db"
    shutil.copyfile(_BUILT["db"], target)
    return open_store(f"sqlite:///{target}")


def _load_sample(engine: Engine) -> None:
    from analytics.refresh import refresh
    from bot.scheduler import default_scorers
    from bot.settings import Settings
    from storage.loaders import load_path
    from storage.sample_data import sample_dir

    load_path(engine, str(sample_dir()), "olist")
    # churn probabilities and CLV, as the bot's nightly refresh computes them; a fixed k
    # skips the slow search for the best one
    refresh(engine, k=4, scorers=default_scorers(Settings()))
