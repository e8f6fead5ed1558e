"""Alembic's environment for the results store: migrations run on the connection edgeft hands over
(``config.attributes["connection"]``), never on a URL from an ini file."""

from alembic import context

from edgeft.history.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
