"""The Alembic migrations build exactly the schema in storage/schema.py, on both stores."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage import schema
from storage.migrate import current_revision, head_revision
from storage.store import open_store


def test_migrations_match_schema(store) -> None:
    with store.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []
    assert current_revision(store) == head_revision()
    assert set(schema.metadata.tables) <= set(inspect(store).get_table_names())


def test_reopening_keeps_data(store_url: str) -> None:
    engine = open_store(store_url)
    with engine.begin() as conn:
        conn.execute(schema.meta.insert().values(key="k", value='"v"'))
    engine.dispose()
    engine = open_store(store_url)  # second start: upgrade is a no-op, data stays
    with engine.connect() as conn:
        assert conn.execute(text("select value from meta where key='k'")).scalar() == '"v"'
    engine.dispose()


def test_store_made_by_an_older_version_opens(store_url: str) -> None:
    """An empty store (a SQLite file, and a PostgreSQL database) at the first schema."""
    from storage.engine import make_engine
    from storage.migrate import upgrade

    engine = make_engine(store_url)
    upgrade(engine, "0001")  # the first released schema
    engine.dispose()
    engine = open_store(store_url)
    assert current_revision(engine) == head_revision()


def test_rows_stored_before_the_load_stamps_count_as_run_0(store_url: str) -> None:
    """Upgrading a store with data: its rows get load_run 0, so an incremental refresh does
    not read them again and again (rows no load stamped, NULL, it always reads)."""
    from storage.engine import make_engine
    from storage.migrate import upgrade

    engine = make_engine(store_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (customer_id, source) VALUES ('c1', 'old')"))
        conn.execute(text("INSERT INTO orders (order_id, customer_id, purchased_at, status, items_value, "
                          "freight_value, n_items, source) VALUES ('o1', 'c1', '2018-01-01 10:00:00', "
                          "'delivered', 10, 1, 1, 'old')"))
    engine.dispose()
    engine = open_store(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT load_run FROM orders")).scalar_one() == 0
        assert conn.execute(text("SELECT load_run FROM customers")).scalar_one() == 0
    engine.dispose()
