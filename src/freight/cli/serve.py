"""`freight serve`: run the local batch server (Anthropic and OpenAI dialects) on loopback."""

from __future__ import annotations

import typer

from freight.domain import FreightError
from freight.server.config import API_KEY_ENV, WEBHOOK_SECRET_ENV, build_config
from freight.server.engines.options import engine_options


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option(
            "127.0.0.1", help="Address to bind; loopback by default, so nothing else can reach it."
        ),
        port: int = typer.Option(8787, help="Port to listen on."),
        db: str | None = typer.Option(
            None, "--db", help="SQLite file for batches, files and results (default: $FREIGHT_HOME/serve.db)."
        ),
        engine: str = typer.Option(
            "scripted", help="What answers the requests: scripted, local (a model on CPU) or forward (to an upstream)."
        ),
        time_scale: float = typer.Option(
            1.0, help="Multiply every duration of the emulated service (0.001: 24 h in 86 s)."
        ),
        faults: str = typer.Option(
            "", help="Planted faults, e.g. 'error_rate=0.05,http429=0.1,seed=7' (see docs/serve.md)."
        ),
        api_key: str | None = typer.Option(
            None, envvar=API_KEY_ENV, help="The key clients must send (x-api-key or Bearer)."
        ),
        workers: int = typer.Option(4, help="Requests processed at once."),
        model_path: str | None = typer.Option(None, help="local engine: a GGUF model file (default: SmolLM2-135M)."),
        model_sha256: str | None = typer.Option(None, help="local engine: the sha256 the model file must have."),
        upstream: str | None = typer.Option(None, help="forward engine: an OpenAI-compatible base URL (.../v1)."),
        upstream_key_env: str | None = typer.Option(
            None, help="forward engine: the environment variable that holds the upstream's API key."
        ),
        concurrency: int | None = typer.Option(None, help="forward engine: requests in flight upstream (default 4)."),
        webhook: list[str] = typer.Option(
            [], "--webhook", help="POST a signed batch.completed / failed / expired / cancelled event here when an "
            "OpenAI or Azure batch ends (repeatable; see docs/webhooks.md)."
        ),
        webhook_secret: str | None = typer.Option(
            None, envvar=WEBHOOK_SECRET_ENV, help="whsec_... secret the events are signed with (Standard Webhooks)."
        ),
        webhook_backoff: float = typer.Option(1.0, help="Seconds before a failed delivery's first retry (doubling)."),
    ) -> None:
        """Serve the Anthropic Message Batches and OpenAI Batch APIs locally, backed by an engine."""
        from freight.server.app import serve as run

        try:
            config = build_config(
                host=host, port=port, db=db, engine=engine, time_scale=time_scale, faults=faults,
                api_key=api_key, workers=workers,
                engine_options=engine_options(
                    engine, model_path=model_path, model_sha256=model_sha256, upstream=upstream,
                    upstream_key_env=upstream_key_env, concurrency=concurrency,
                ),
                webhooks=webhook, webhook_secret=webhook_secret, webhook_backoff=webhook_backoff,
            )  # fmt: skip
            typer.echo(
                f"freight serve: http://{config.host}:{config.port} (Anthropic base_url; OpenAI base_url adds /v1), "
                f"engine {config.engine}, time scale {config.time_scale}, state in {config.db}"
                + (f", batch webhooks to {len(config.webhooks)} URL(s)" if config.webhooks else "")
            )
            run(config)
        except FreightError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
