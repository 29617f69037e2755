"""What a running server was told: where its state lives, which engine answers, how fast time runs, which faults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freight.domain import FreightError
from freight.server.faults import FaultSpec

API_KEY_ENV = "FREIGHT_SERVE_API_KEY"
WEBHOOK_SECRET_ENV = "FREIGHT_SERVE_WEBHOOK_SECRET"


@dataclass(frozen=True)
class Timings:
    """How long the emulated service takes, in emulated seconds (multiplied by the time scale when it runs).

    The values are the order of magnitude a real batch service shows for a small batch: a short queue before work
    starts, a steady per-request pace per worker, a finalizing step while results files are written.
    """

    validate: float = 5.0
    queue: float = 30.0
    per_request: float = 1.0
    finalize: float = 20.0
    cancel: float = 10.0
    window: float = 24 * 3600.0


@dataclass(frozen=True, repr=False)
class ServerConfig:
    db: Path
    api_key: str
    host: str = "127.0.0.1"
    port: int = 8787
    engine: str = "scripted"
    time_scale: float = 1.0
    faults: FaultSpec = field(default_factory=FaultSpec)
    workers: int = 4
    timings: Timings = field(default_factory=Timings)
    # The chosen engine's own options (--model-path, --upstream ...), checked by engines.options.engine_options.
    engine_options: dict[str, Any] = field(default_factory=dict)
    # Batch webhooks (server/webhooks.py): where to POST when an OpenAI / Azure batch ends, the signing secret,
    # the first retry's delay in real seconds (doubling after), and how many attempts before giving up.
    webhooks: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_backoff: float = 1.0
    webhook_attempts: int = 8

    def __repr__(self) -> str:  # never show the key
        return f"ServerConfig(db={self.db}, host={self.host}, port={self.port}, engine={self.engine})"

    def real(self, emulated_seconds: float) -> float:
        """An emulated duration as the wall-clock seconds it takes at this time scale."""
        return emulated_seconds * self.time_scale

    @property
    def window_seconds(self) -> float:
        return self.real(self.faults.window if self.faults.window is not None else self.timings.window)


def default_db() -> Path:
    home = os.environ.get("FREIGHT_HOME") or str(Path.home() / ".freight")
    return Path(home) / "serve.db"


def build_config(
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    db: str | Path | None = None,
    engine: str = "scripted",
    time_scale: float = 1.0,
    faults: str = "",
    api_key: str | None = None,
    workers: int = 4,
    engine_options: dict[str, Any] | None = None,
    webhooks: list[str] | tuple[str, ...] = (),
    webhook_secret: str | None = None,
    webhook_backoff: float = 1.0,
    webhook_attempts: int = 8,
) -> ServerConfig:
    """A config from user-given options; a bad option raises FreightError saying what to pass instead."""
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise FreightError(
            f"freight serve needs an API key that clients must send: pass --api-key KEY or set {API_KEY_ENV}"
        )
    if time_scale <= 0:
        raise FreightError(f"--time-scale {time_scale}: use a positive factor (0.001 makes 24 h last 86 s)")
    if workers < 1:
        raise FreightError(f"--workers {workers}: use at least 1")
    secret = _webhook_secret(tuple(webhooks), webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV))
    if webhook_backoff <= 0:
        raise FreightError(f"--webhook-backoff {webhook_backoff}: use a positive number of seconds (default 1.0)")
    if webhook_attempts < 1:
        raise FreightError(f"webhook_attempts {webhook_attempts}: use at least 1")
    return ServerConfig(
        webhooks=tuple(webhooks),
        webhook_secret=secret,
        webhook_backoff=webhook_backoff,
        webhook_attempts=webhook_attempts,
        db=Path(db) if db else default_db(),
        api_key=key,
        host=host,
        port=port,
        engine=engine,
        time_scale=time_scale,
        faults=FaultSpec.parse(faults),
        workers=workers,
        engine_options=engine_options or {},
    )


def _webhook_secret(urls: tuple[str, ...], secret: str | None) -> str | None:
    from freight.signing import check_secret

    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise FreightError(f"--webhook {url}: use an http:// or https:// URL (where your receiver listens)")
    if urls and not secret:
        raise FreightError(
            f"--webhook needs a signing secret: pass --webhook-secret whsec_... or set {WEBHOOK_SECRET_ENV} "
            "(receivers verify with it: openai's client.webhooks.unwrap(body, headers, secret=...))"
        )
    return check_secret(secret) if secret else None
