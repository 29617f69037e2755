"""The durable job store: SQLite by default, Postgres by URL, through SQLAlchemy Core."""

from freight.store.db import default_db, freight_home
from freight.store.lease import DEFAULT_TTL, Holder, JobLease
from freight.store.recording import Decide, PageRow
from freight.store.results import Store, opened
from freight.store.store import DuplicateOutcome, UnknownRequest
from freight.store.work import Settlement

__all__ = [
    "DEFAULT_TTL",
    "Decide",
    "DuplicateOutcome",
    "Holder",
    "JobLease",
    "PageRow",
    "Settlement",
    "Store",
    "UnknownRequest",
    "default_db",
    "freight_home",
    "opened",
]
