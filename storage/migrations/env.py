"""Alembic environment: the engine is handed over in `config.attributes`."""

from alembic import context

from storage.schema import metadata

config = context.config
engine = config.attributes["engine"]


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN201
    # Tables that live in the store but belong to others (APScheduler's job store) are
    # not ours to create or drop.
    return not (type_ == "table" and reflected and compare_to is None)


with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
