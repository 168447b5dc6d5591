"""Shared fixtures: real SQLite files, a real PostgreSQL database, the real datasets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.engine import normalise_url
from storage.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PULSE_DATA_DIR", ROOT.parent / "shared" / "data"))
REQUIRE_REAL_DATA = os.environ.get("PULSE_REQUIRE_REAL_DATA") == "1"
POSTGRES_URL = os.environ.get("PULSE_TEST_POSTGRES_URL")


def data_path(*parts: str) -> Path:
    """Path of a file or folder under ../shared/data; skips (or fails in CI) when absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        msg = f"real dataset {path} is not here (../shared/data missing)"
        if REQUIRE_REAL_DATA:
            pytest.fail(msg + " and PULSE_REQUIRE_REAL_DATA=1")
        pytest.skip(msg)
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pulse.db'}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """URL of the PostgreSQL server (PULSE_TEST_POSTGRES_URL), else skip with the reason."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need PULSE_TEST_POSTGRES_URL (set by .ci/run)")
    return normalise_url(POSTGRES_URL)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"pulse_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str):
    """An opened (migrated) empty store on SQLite and on PostgreSQL."""
    engine = open_store(store_url)
    yield engine
    engine.dispose()
