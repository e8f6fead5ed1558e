"""The results store: every measured number a team wants to see again, in one SQL database.

SQLite by default (a file: nothing to start; ``edgeft history ... --store results.sqlite``), or any SQLAlchemy URL for a
team (``postgresql+psycopg://user:${PASSWORD}@host/db``). The schema is made and upgraded by Alembic migrations
(``edgeft/history/migrations``) when a store is opened; a store written by a newer edgeft is refused, not touched.
Rows are appended in one transaction per recording, so a failed recording leaves none of its rows, and concurrent
writers (two CI jobs) each keep all of theirs: SQLite serialises them with a busy timeout, a server with its own locks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgeft.errors import ConfigError, EdgeftError

MIGRATIONS = Path(__file__).parent / "migrations"
ENV_STORE = "EDGEFT_HISTORY"  # the store when --store is not given
BUSY_TIMEOUT_S = 60.0


class StoreError(EdgeftError):
    """A results store that cannot be opened or written."""


@dataclass(frozen=True)
class Row:
    """One measured number and where it comes from."""

    recorded_at: float
    kind: str
    model: str
    model_sha256: str
    commit: str
    device: str
    device_desc: str
    backend: str
    batch: int
    versions: str
    metric: str
    value: float
    extra: str = "{}"


def url_of(store: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from ``--store`` (a URL, or a file path for SQLite), ``$EDGEFT_HISTORY`` when not given."""
    from edgeft.redact import expand

    store = store if store is not None else os.environ.get(ENV_STORE)
    if not store:
        raise ConfigError(f"name the results store: --store FILE.sqlite (or a SQLAlchemy URL), or set ${ENV_STORE}")
    s = str(store)
    if "://" in s:
        return expand(s, "--store")
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def _shown(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001: a URL too broken to parse is shown as the user gave it, less any password
        return url.split("@")[-1]


class Store:
    """An open results store (:func:`open_store`)."""

    def __init__(self, engine: Any, url: str) -> None:
        self.engine, self.url = engine, url

    def append(self, rows: Iterable[Row]) -> int:
        """Add ``rows`` in one transaction; returns how many."""
        import sqlalchemy as sa

        from edgeft.history.schema import results

        rows = [r.__dict__ for r in rows]
        if not rows:
            return 0
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(results), rows)
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"writing {len(rows)} result(s) to {_shown(self.url)} failed, none was written: "
                             f"{_reason(e)}") from None
        return len(rows)

    def rows(self, **where: Any) -> list[Row]:
        """The rows matching ``where`` (column = value; a None value is not filtered), oldest first."""
        import sqlalchemy as sa

        from edgeft.history.schema import results

        q = sa.select(*[c for c in results.c if c.name != "id"])
        for k, v in where.items():
            if v is not None:
                q = q.where(results.c[k] == v)
        q = q.order_by(results.c.recorded_at, results.c.id)
        with self.engine.connect() as conn:
            return [Row(**dict(r._mapping)) for r in conn.execute(q)]

    def close(self) -> None:
        self.engine.dispose()


def _reason(e: Exception) -> str:
    orig = getattr(e, "orig", None)
    return str(orig or e).splitlines()[0][:200]


def open_store(store: str | os.PathLike | None = None) -> Store:
    """Open (and create or upgrade) the results store; refuses one of a newer schema, a file that is not one, and a
    server it cannot reach, in one line each."""
    import sqlalchemy as sa

    url = url_of(store)
    shown = _shown(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"--store {shown} is neither a file nor a SQLAlchemy URL (sqlite:///F, "
                          "postgresql+psycopg://user@host/db)") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database:
        p = Path(parsed.database)
        if p.is_dir():
            raise ConfigError(f"--store {p} is a folder; name a file (results.sqlite)")
        p.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    try:
        engine = sa.create_engine(url, **kwargs)
    except (ImportError, ModuleNotFoundError) as e:
        raise ConfigError(f"--store {shown} needs a database driver that is not installed ({e}); for PostgreSQL: "
                          "pip install 'edgeft[history]'") from None
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"--store {shown}: {e}") from None
    if sqlite:
        _sqlite_transactions(engine)
    try:
        _migrate(engine, shown)
    except sa.exc.DatabaseError as e:
        engine.dispose()
        what = "is not a results store (not an SQLite database)" if sqlite else "cannot be reached or read"
        raise StoreError(f"{shown} {what}: {_reason(e)}") from None
    return Store(engine, url)


def _sqlite_transactions(engine: Any) -> None:
    """SQLite transactions that SQLAlchemy begins itself, each taking the write lock first (``BEGIN IMMEDIATE``), so a
    migration's tables and its version stamp appear together (Python's sqlite3 would run the DDL outside the
    transaction, and another process opening the new store then would see tables without a schema version).
    Concurrent writers wait their turn (the busy timeout) instead of failing at commit."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT from the driver

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


MIGRATION_LOCK = 7420311  # PostgreSQL advisory lock key: one process at a time brings a store to the schema


def _migrate(engine: Any, shown: str) -> None:
    """Bring the store to this edgeft's schema (Alembic's head), or refuse one from a newer edgeft. Processes opening a
    new store at once take turns: PostgreSQL through an advisory lock held for the migration's transaction, SQLite
    through the write lock each transaction takes first; a process that still meets a table made meanwhile looks
    again."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    known = {s.revision for s in script.walk_revisions()}
    head = script.get_current_head()
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                current = MigrationContext.configure(conn).get_current_revision()
                tables = set(sa.inspect(conn).get_table_names())
                if current is not None and current not in known:
                    raise StoreError(f"{shown} was written by a newer edgeft (results schema {current}; this one reads "
                                     f"up to {head}): upgrade edgeft to read it")
                if current is None and tables - {"alembic_version"}:
                    raise StoreError(f"{shown} holds other tables ({', '.join(sorted(tables)[:3])}) and no edgeft "
                                     "results schema: it is not a results store; name another")
                if current == head:
                    return
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as e:
            if attempt == 2 or not any(w in str(e) for w in ("already exists", "duplicate key", "locked")):
                raise
            time.sleep(0.2 * (attempt + 1))  # another process made the schema meanwhile: look again
