"""The durable job store: SQLite by default, Postgres by URL, through SQLAlchemy Core."""

from freight.store.db import default_db, freight_home
from freight.store.store import DuplicateOutcome, UnknownRequest
from freight.store.work import Store

__all__ = ["DuplicateOutcome", "Store", "UnknownRequest", "default_db", "freight_home"]
