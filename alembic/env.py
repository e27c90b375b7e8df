"""Alembic environment: the URL comes from config (APP_ENV), the metadata from app.models."""

from logging.config import fileConfig

from alembic import context

from app.models import Base
from config import config
from config.database import Database

alembic_config = context.config
# The deploy's custom resource keeps the application's logging (JSON lines on Lambda).
if alembic_config.config_file_name is not None and alembic_config.attributes.get(
    "configure_logger", True
):
    fileConfig(alembic_config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    config.setup()
    context.configure(
        url=config.database.url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config.setup()
    # Its own connection, with no statement timeout (neither the requests' nor one set on the
    # database role): a migration may rewrite or index a large table.
    database = Database(
        config.database.url,
        null_pool=True,
        statement_timeout_ms=0,
        connect_timeout_s=config.settings.db_connect_timeout_s,
    )
    try:
        with database.engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
