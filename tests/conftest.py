"""Shared fixtures: the default store (a SQLite file, or a fresh PostgreSQL database when the
run is started with PULSE_DATABASE_URL=postgresql://…), a real PostgreSQL database for the
tests parametrised over both backends, and the real datasets.

The default store
-----------------
`PULSE_DATABASE_URL`, when the test run starts, picks the backend of "the default store":

* unset (or a sqlite URL): every store a test makes is a SQLite file under its tmp path;
* `postgresql://user@host:port/db` (a server URL; `db` is only used to connect): every store a
  test makes is a fresh database on that server, created by `CREATE DATABASE … TEMPLATE` from
  a database migrated once per run (cheap), and dropped when the run ends.

The variable is taken out of the environment at the start of the run (the product reads it:
a test that did not ask for a store must not write into the server's database); a test that
asks for `default_store_url` gets PULSE_DATABASE_URL set to its own store for its duration, and
CLI tests pass the URL with `--db`. Expensive read-mostly stores (the bundled sample, the
digest store, the full real datasets) are built once per run under a lock shared by the
xdist workers (`shared_store_url`) and copied (`copy_store_url`) for whoever writes.

Tests that are about SQLite files themselves (pragmas, the default ./pulse.db, an old SQLite
file made by a previous version) keep using `sqlite_url` and say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from storage.engine import normalise_url
from storage.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PULSE_DATA_DIR", ROOT.parent / "shared" / "data"))
REQUIRE_REAL_DATA = os.environ.get("PULSE_REQUIRE_REAL_DATA") == "1"

# --- which backend the default store is on ----------------------------------------------------
# conftest is imported by the pytest process before it starts xdist workers, which inherit the
# environment: PULSE_DATABASE_URL is moved to PULSE_TEST_DEFAULT_STORE once, here.
if "PULSE_DATABASE_URL" in os.environ:
    os.environ["PULSE_TEST_DEFAULT_STORE"] = os.environ.pop("PULSE_DATABASE_URL")
_DEFAULT = os.environ.get("PULSE_TEST_DEFAULT_STORE", "")
DEFAULT_PG_SERVER: str | None = (
    normalise_url(_DEFAULT) if _DEFAULT.startswith(("postgres://", "postgresql")) else None
)
DEFAULT_BACKEND = "postgresql" if DEFAULT_PG_SERVER else "sqlite"
POSTGRES_URL = os.environ.get("PULSE_TEST_POSTGRES_URL") or DEFAULT_PG_SERVER
# one id per test run, shared by the workers: names the run's databases and its scratch folder
RUN_ID = os.environ.setdefault("PULSE_TEST_RUN_ID", uuid.uuid4().hex[:10])
SHARED_DIR = Path(tempfile.gettempdir()) / f"pulse-tests-{RUN_ID}"
DB_PREFIX = f"pulse_t_{RUN_ID}_"


def data_path(*parts: str) -> Path:
    """Path of a file or folder under ../shared/data; skips (or fails in CI) when absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        msg = f"real dataset {path} is not here (../shared/data missing)"
        if REQUIRE_REAL_DATA:
            pytest.fail(msg + " and PULSE_REQUIRE_REAL_DATA=1")
        pytest.skip(msg)
    return path


# --- PostgreSQL databases of this run -----------------------------------------------------------


def _pg_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


_ADMINS: dict[str, Engine] = {}
_CREATED: list[tuple[str, str]] = []  # (server, database) made by this process
_TEST_CREATED: list[tuple[str, str]] | None = None  # ... while the current test runs


def _admin_engine(server: str) -> Engine:
    if server not in _ADMINS:
        _ADMINS[server] = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=8)
    return _ADMINS[server]


def _terminate(conn, name: str, *, idle_only: bool = False) -> None:  # noqa: ANN001
    """End the sessions on database `name` (all of them, or only the idle ones)."""
    idle = " AND state = 'idle'" if idle_only else ""
    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = :n AND pid <> pg_backend_pid(){idle}"), {"n": name})


def create_pg_database(server: str, template: str | None = None, *, tag: str = "") -> str:
    """URL of a new database of this run on `server` (a copy of `template` when given)."""
    name = f"{DB_PREFIX}{tag}{uuid.uuid4().hex[:8]}"
    with _admin_engine(server).connect() as conn:
        if template:
            # a template must have no sessions; ours are idle pooled ones (pool_pre_ping
            # reconnects them)
            _terminate(conn, template)
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        else:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    _CREATED.append((server, name))
    if _TEST_CREATED is not None:
        _TEST_CREATED.append((server, name))
    return _pg_url(server, name)


def drop_pg_databases(server: str, names: list[str]) -> None:
    """Drop the databases, eight at a time (each DROP DATABASE waits for a checkpoint;
    concurrent ones share it)."""

    def drop(name: str) -> None:
        with _admin_engine(server).connect() as conn:
            _terminate(conn, name)
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(drop, names))


# --- the default store ------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(key: str) -> Iterator[Path]:
    """An exclusive lock on `key` for all the processes of this test run."""
    SHARED_DIR.mkdir(parents=True, exist_ok=True)
    with open(SHARED_DIR / f"{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield SHARED_DIR
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_TEMPLATE: dict[str, str] = {}


def _migrated_template(server: str) -> str:
    """Name of this run's empty database at the newest migration on `server` (made once per
    run, by whichever process needs it first)."""
    if server not in _TEMPLATE:
        key = hashlib.sha1(server.encode()).hexdigest()[:8]
        name = f"{DB_PREFIX}template_{key}"
        with _run_lock(f"template-{key}") as folder:
            marker = folder / f"template-{key}.done"
            if not marker.exists():
                with _admin_engine(server).connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                engine = open_store(_pg_url(server, name))
                engine.dispose()
                marker.write_text(name)
        _TEMPLATE[server] = name
    return _TEMPLATE[server]


def new_store_url(folder: Path, name: str = "pulse.db") -> str:
    """URL of a new, empty default store (`open_store` migrates it): the SQLite file
    `folder/name`, or a fresh database on the PostgreSQL server of PULSE_DATABASE_URL (a
    copy of the run's migrated template, so opening it is quick)."""
    if DEFAULT_PG_SERVER:
        return create_pg_database(DEFAULT_PG_SERVER, _migrated_template(DEFAULT_PG_SERVER))
    return f"sqlite:///{folder / name}"


def new_store(folder: Path, name: str = "pulse.db") -> Engine:
    """An opened new, empty default store (see `new_store_url`)."""
    return open_store(new_store_url(folder, name))


def store_url_of(source: Engine | str) -> str:
    if isinstance(source, Engine):
        return source.url.render_as_string(hide_password=False)
    return source


def copy_store_url(source: Engine | str, folder: Path, name: str = "pulse.db") -> str:
    """URL of a private copy of the store `source` (an Engine or URL): a copy of the SQLite
    file in `folder`, or `CREATE DATABASE … TEMPLATE source` on its PostgreSQL server."""
    url = make_url(normalise_url(store_url_of(source)))
    if url.get_backend_name() == "sqlite":
        target = folder / name
        with contextlib.closing(sqlite3.connect(url.database)) as src:
            # what is still in the -wal file goes into the file first; if that cannot be
            # done now, the backup API copies a consistent snapshot instead
            busy = src.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                with contextlib.closing(sqlite3.connect(target)) as dst:
                    src.backup(dst)
            else:
                shutil.copyfile(url.database, target)
        return f"sqlite:///{target}"
    return create_pg_database(_server_of(url), url.database)


def _server_of(url: URL) -> str:
    """The URL the run connects to for CREATE/DROP DATABASE on the server of `url` (never the
    database `url` itself: a template must have no sessions)."""
    for server in (DEFAULT_PG_SERVER, POSTGRES_URL and normalise_url(POSTGRES_URL)):
        if server and (make_url(server).host, make_url(server).port) == (url.host, url.port):
            return server
    return url.set(database="postgres").render_as_string(hide_password=False)


def copy_store(source: Engine | str, folder: Path, name: str = "pulse.db") -> Engine:
    """An opened private copy of the store `source` (see `copy_store_url`)."""
    return open_store(copy_store_url(source, folder, name))


_SHARED: dict[str, str] = {}


def shared_store_url(key: str, build: Callable[[Engine], None]) -> str:
    """URL of a default store built once per test run by `build(engine)` (the xdist workers
    share it; whoever comes first builds it while the others wait). Nobody may write to it,
    and on PostgreSQL nobody may stay connected to it: open a copy (`copy_store`)."""
    if key not in _SHARED:
        with _run_lock(f"store-{key}") as folder:
            marker = folder / f"store-{key}.url"
            if not marker.exists():
                url = new_store_url(folder, f"{key}.db")
                engine = open_store(url)
                try:
                    build(engine)
                finally:
                    engine.dispose()
                marker.write_text(url)
            _SHARED[key] = marker.read_text()
    return _SHARED[key]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file, whatever the default store is: for tests about SQLite files themselves."""
    return f"sqlite:///{tmp_path / 'pulse.db'}"


@pytest.fixture
def default_store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a new, empty, migrated default store (SQLite file, or a fresh PostgreSQL
    database when the run has PULSE_DATABASE_URL); PULSE_DATABASE_URL points at it during the
    test, so the product's own settings read it too."""
    url = new_store_url(tmp_path)
    monkeypatch.setenv("PULSE_DATABASE_URL", url)
    return url


@pytest.fixture(scope="module")
def sample_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An opened private copy of the store with the bundled sample, loaded and refreshed
    (tests/sample_store.py), one per test module: a SQLite file, or a PostgreSQL database."""
    from sample_store import sample_store  # imported here: sample_store imports conftest

    engine = sample_store(tmp_path_factory.mktemp("sample"))
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True, scope="session")
def _snapshots_in_the_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With PostgreSQL in the run, refresh snapshots (analytics/snapshot.py) go to the run's
    temporary folder instead of the user's cache folder (SQLite files keep theirs beside
    them either way; the names tell every store apart)."""
    if not POSTGRES_URL or os.environ.get("PULSE_SNAPSHOT_DIR") is not None:
        yield
        return
    os.environ["PULSE_SNAPSHOT_DIR"] = str(tmp_path_factory.mktemp("snapshots"))
    try:
        yield
    finally:
        os.environ.pop("PULSE_SNAPSHOT_DIR", None)


@pytest.fixture(autouse=True)
def _close_test_databases() -> Iterator[None]:
    """On PostgreSQL, end the idle sessions left open on the databases a test made (they are
    dropped when the run ends), so that engines nobody disposed do not pile up."""
    global _TEST_CREATED
    if not POSTGRES_URL:
        yield
        return
    _TEST_CREATED = []
    try:
        yield
    finally:
        made, _TEST_CREATED = _TEST_CREATED, None
        for server, name in made:
            with contextlib.suppress(Exception), _admin_engine(server).connect() as conn:
                _terminate(conn, name, idle_only=True)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """URL of the PostgreSQL server (PULSE_TEST_POSTGRES_URL, else the PULSE_DATABASE_URL of
    the run), else skip with the reason."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need PULSE_TEST_POSTGRES_URL (set by .ci/run)")
    return normalise_url(POSTGRES_URL)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty (not migrated) PostgreSQL database for one test, dropped when the run ends."""
    return create_pg_database(postgres_server)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """An opened (migrated) empty store on SQLite and on PostgreSQL (there a copy of the
    run's migrated template; `store_url` gives an empty database, for tests of migrating)."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        server = request.getfixturevalue("postgres_server")
        url = create_pg_database(server, _migrated_template(server))
    engine = open_store(url)
    yield engine
    engine.dispose()


# --- modules that never touch a store -----------------------------------------------------------
# They do the same in both passes, so the PostgreSQL pass (PULSE_DATABASE_URL on a server) leaves
# them out. Every pass checks the claim: a test of theirs that connects to any database fails.
# (test_benchmark_smoke runs the benchmark in a subprocess without PULSE_* variables: its
# throwaway store is the benchmark's own SQLite file, whatever the pass.)
STORELESS_MODULES = frozenset({
    "test_blocks.py", "test_charts.py", "test_clusters.py", "test_mentions.py",
    "test_settings.py", "test_slack_emulator.py", "test_benchmark_smoke.py",
})
_STORELESS_TEST: list[str] = []


@event.listens_for(Engine, "connect")
def _no_store_in_storeless_tests(_dbapi_conn, _record) -> None:  # noqa: ANN001
    if _STORELESS_TEST:
        raise AssertionError(
            f"{_STORELESS_TEST[0]} is in conftest.STORELESS_MODULES (left out of the PostgreSQL "
            "pass) but connects to a database: take it off that list")


@pytest.fixture(autouse=True)
def _storeless_check(request: pytest.FixtureRequest) -> Iterator[None]:
    storeless = request.path.name in STORELESS_MODULES
    if storeless:
        _STORELESS_TEST.append(request.node.nodeid)
    try:
        yield
    finally:
        if storeless:
            _STORELESS_TEST.clear()


# tests/run_both.sh sets this in the SQLite pass when a PostgreSQL pass follows
POSTGRES_PASS_FOLLOWS = os.environ.get("PULSE_TEST_POSTGRES_PASS_FOLLOWS") == "1"


def _backend_variant(item: pytest.Item) -> str | None:
    """"sqlite"/"postgres" for a test parametrised over both backends (`store_url`, `store`)."""
    params = getattr(item, "callspec", None) and item.callspec.params
    return (params.get("store_url") or params.get("store")) if params else None


def _same_in_both_passes(item: pytest.Item) -> bool:
    """What one pass leaves to the other, as both would run it the same way.
    The PostgreSQL pass: the store-less modules, and the `[sqlite]` variants of the tests
    parametrised over both backends (they name their backend themselves). The SQLite pass,
    when tests/run_both.sh runs a PostgreSQL pass after it: their `[postgres]` variants."""
    if DEFAULT_PG_SERVER:
        return item.path.name in STORELESS_MODULES or _backend_variant(item) == "sqlite"
    return POSTGRES_PASS_FOLLOWS and _backend_variant(item) == "postgres"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [i for i in items if _same_in_both_passes(i)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if not _same_in_both_passes(i)]


# --- the run's end ------------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> str:
    if not DEFAULT_PG_SERVER:
        return "default store: a SQLite file per store" + (
            "; left out: the [postgres] variants of tests parametrised over both backends "
            "(they run in the PostgreSQL pass that follows)" if POSTGRES_PASS_FOLLOWS else "")
    where = make_url(DEFAULT_PG_SERVER).set(password=None)
    return (f"default store: a fresh PostgreSQL database on {where} per store; "
            "left out: the [sqlite] variants of tests parametrised over both backends, and "
            f"(they never touch a store) {', '.join(sorted(STORELESS_MODULES))}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the databases of this run and its scratch folder (the last process to finish:
    the xdist controller, or the only process)."""
    for engine in _ADMINS.values():
        engine.dispose()
    if hasattr(session.config, "workerinput"):
        return
    for server in {s for s in (POSTGRES_URL and normalise_url(POSTGRES_URL), DEFAULT_PG_SERVER) if s}:
        with contextlib.suppress(Exception):
            with _admin_engine(server).connect() as conn:
                names = [n for (n,) in conn.execute(text(
                    "SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": DB_PREFIX + "%"})]
            drop_pg_databases(server, names)
    for engine in _ADMINS.values():
        engine.dispose()
    shutil.rmtree(SHARED_DIR, ignore_errors=True)

