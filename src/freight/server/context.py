"""What every route handler needs: the config, the store, the answerer, the processor, and fault counters."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from freight.server.config import ServerConfig
from freight.server.processor import Processor
from freight.server.store import Store
from freight.server.wire import Answerer


@dataclass
class Context:
    config: ServerConfig
    store: Store
    answerer: Answerer
    processor: Processor
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tick(self) -> int:
        """A process-wide sequence number: the seeded draws of API-level faults and sync requests use it."""
        with self._lock:
            return next(self._counter)

    @staticmethod
    def now() -> float:
        return time.time()
