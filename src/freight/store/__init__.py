"""The durable job store: SQLite by default, Postgres by URL, through SQLAlchemy Core."""

from freight.store.db import default_db, freight_home
from freight.store.results import Store
from freight.store.store import DuplicateOutcome, UnknownRequest

__all__ = ["DuplicateOutcome", "Store", "UnknownRequest", "default_db", "freight_home"]
