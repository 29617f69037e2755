"""Engines by name. A new engine is one module and one line here: the registry maps a name to a factory that is
imported only when chosen, so an engine with heavy dependencies (`local` needs llama-cpp) costs nothing otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from freight.domain import FreightError
from freight.server.engines.base import Engine

# name -> "module:factory"; the factory takes the seed and returns an Engine.
_REGISTRY: dict[str, str] = {
    "scripted": "freight.server.engines.scripted:ScriptedEngine",
    "local": "freight.server.engines.local:LocalEngine",
    "forward": "freight.server.engines.forward:ForwardEngine",
}


def register(name: str, target: str) -> None:
    """Make an engine selectable by name (`target` is "package.module:factory")."""
    _REGISTRY[name] = target


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, seed: int = 0, **options: Any) -> Engine:
    target = _REGISTRY.get(name)
    if target is None:
        raise FreightError(f"unknown engine {name!r}; choose one of: {', '.join(names())}")
    module_name, _, attr = target.partition(":")
    factory: Callable[..., Engine] = getattr(importlib.import_module(module_name), attr)
    # Engine-specific options (--model-path, --upstream ...) go to the factory as keywords; see engines/options.py.
    return factory(seed=seed, **options)
