"""The default store holding the bundled Olist sample, loaded and refreshed once per test run
(shared by the xdist workers) and copied for each module that asks (the Slack tests, the CLI
tests and the router fuzz): a SQLite file, or a PostgreSQL database when the run has
PULSE_DATABASE_URL (see conftest)."""

from __future__ import annotations

from pathlib import Path

from conftest import copy_store_url, shared_store_url
from sqlalchemy import Engine

from storage.store import open_store


def sample_store(folder: Path) -> Engine:
    """An opened private copy (in `folder`, on SQLite) of the store with the sample data."""
    return open_store(sample_store_url(folder))


def sample_store_url(folder: Path) -> str:
    """URL of a private copy (in `folder`, on SQLite) of the store with the sample data."""
    return copy_store_url(sample_store_master(), folder)


def sample_store_master() -> str:
    """URL of the run's store with the sample data: copy it, never write to it."""
    return shared_store_url("sample", _load_sample)


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
