"""Provider adapters behind one protocol, discovered through the `freight.providers` entry-point group.

Nothing here imports an adapter module by name: `get_provider("anthropic")` loads whatever the installed packages
register under that name, so a plugin package can add a provider without touching freight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from freight.domain import FreightError, WebhookEvent
from freight.providers.protocol import Limits, Provider, ProviderError, RequestRefused

__all__ = [
    "Limits",
    "Provider",
    "ProviderError",
    "RequestRefused",
    "UnknownProvider",
    "get_provider",
    "key_env",
    "provider_names",
    "webhook_verifier",
]

GROUP = "freight.providers"


class UnknownProvider(FreightError):
    pass


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def provider_names() -> list[str]:
    return sorted(_entry_points())


def key_env(name: str) -> str | None:
    """The environment variable that holds `name`'s API key, as its adapter declares it (None: it declares none)."""
    found = _entry_points()
    if name not in found:
        return None
    env: str | None = getattr(found[name].load(), "key_env", None)
    return env


WebhookVerifier = Callable[[bytes, Mapping[str, str], str], WebhookEvent | None]


def webhook_verifier(name: str) -> WebhookVerifier | None:
    """How `name`'s batch webhooks are verified (body, headers, secret -> the event, None for another kind; raises
    a FreightError when it does not verify), as its adapter declares it; None for a provider that sends none."""
    found = _entry_points()
    if name not in found:
        return None
    verify: WebhookVerifier | None = getattr(found[name].load(), "verify_webhook", None)
    return verify


def get_provider(name: str, *, base_url: str | None = None, api_key: str | None = None, **options: Any) -> Provider:
    """An adapter for `name`, talking to `base_url` (the provider's own API when None) with `api_key` (read from
    the provider's environment variable when None). Extra `options` (retry=, timeout=) go to the adapter."""
    found = _entry_points()
    if name not in found:
        known = ", ".join(sorted(found)) or "none (is freight installed? run: pip install -e .)"
        raise UnknownProvider(f"unknown provider {name!r}; known providers: {known}")
    factory = found[name].load()
    provider: Provider = factory(base_url=base_url, api_key=api_key, **options)
    return provider
