"""Engines for the store: SQLite (default, tuned with pragmas) or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:///pulse.db"
MMAP_BYTES = 1 << 30
UNMAPPED_CACHE_KIB = -16384  # 16 MiB (negative: KiB, as PRAGMA cache_size takes it)
BUSY_TIMEOUT_MS = 60_000  # how long a SQLite connection waits for another's write lock
BRIEF_WAIT_MS = 250  # ... for a write that may as well be skipped (`brief_lock_wait`)


def normalise_url(url: str) -> str:
    """The URL with the psycopg 3 driver named for PostgreSQL (`postgresql://` → `+psycopg`)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def engine_url(engine: Engine) -> str:
    """The engine's URL as text, password included (for another process to reconnect)."""
    return engine.url.render_as_string(hide_password=False)


def libpq_uri(engine: Engine) -> str:
    """The engine's PostgreSQL URL as libpq reads it (for the ADBC driver), password included."""
    url = engine.url
    base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    if not url.query:
        return base
    # SQLAlchemy writes a space in a query value as '+', which libpq keeps as a plus
    # ("options=-c+statement_timeout%3D5s" fails to connect); libpq decodes only %XX
    return f"{base}?{urlencode(url.query, doseq=True, quote_via=quote)}"


def make_engine(url: str = DEFAULT_URL) -> Engine:
    """An Engine for `url`; SQLite connections get WAL, synchronous=NORMAL, mmap and a large cache."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA mmap_size={MMAP_BYTES}",
        "PRAGMA cache_size=-262144",
        "PRAGMA temp_store=MEMORY",
        f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
        # SQLite's own default, which Debian's build turns on: zeroing every freed page
        # doubled the time the refresh spent replacing its million-row tables (their
        # deletes 3.1 s against 1.1 s at 10M orders) and wrote those zeros to the WAL too.
        # Nothing is kept from readers of the file by it: the rows deleted are
        # recomputed from (or replaced by) rows the store still holds.
        "PRAGMA secure_delete=OFF",
    ):
        cur.execute(pragma)
    cur.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite store, which other connections and processes can open; None for
    PostgreSQL and for an in-memory (or URI-named) SQLite store, which lives in one
    connection."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return path if path and path != ":memory:" and not path.startswith("file:") else None


@contextmanager
def unmapped(engine: Engine) -> Iterator[Connection]:
    """A connection whose SQLite reads go through SQLite's own (bounded) page cache, not
    the memory-mapped file: for scans of big tables and scattered probes, whose every
    page touched would otherwise count in the process's resident memory (the kernel maps
    pages around each one too), up to the whole mapped size."""
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            yield conn
            return
        raw = conn.connection.driver_connection
        cache = raw.execute("PRAGMA cache_size").fetchone()[0]
        # a small cache: several such reads run at once, each on its own connection, and
        # the pages they read stay in the OS's page cache anyway
        raw.execute(f"PRAGMA cache_size={UNMAPPED_CACHE_KIB}")
        raw.execute("PRAGMA mmap_size=0")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA shrink_memory")
            raw.execute(f"PRAGMA cache_size={int(cache)}")
            raw.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


@contextmanager
def brief_lock_wait(conn: Connection, ms: int = BRIEF_WAIT_MS) -> Iterator[Connection]:
    """`conn`, whose SQLite writes wait at most `ms` for another connection's write lock
    (then fail with "database is locked") instead of a minute: for writes that may be
    skipped, such as keeping a rendered answer. A refresh holds SQLite's one write lock for
    its whole write (seconds at 10M orders), and an answer must not wait for it. PostgreSQL
    locks rows, not the store: there `conn` is left as it is."""
    if conn.dialect.name != "sqlite":
        yield conn
        return
    raw = conn.connection.driver_connection
    raw.execute(f"PRAGMA busy_timeout={int(ms)}")
    try:
        yield conn
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
