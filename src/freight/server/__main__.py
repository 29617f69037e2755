"""`python -m freight.server`: the same server as `freight serve`, without the CLI (LocalServer runs it this way)."""

from __future__ import annotations

import argparse
import sys

from freight.domain import FreightError
from freight.server.app import serve
from freight.server.config import API_KEY_ENV, build_config
from freight.server.engines.options import engine_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freight.server", description="Run freight's local batch server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--db", default=None)
    parser.add_argument("--engine", default="scripted")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--faults", default="")
    parser.add_argument("--api-key", default=None, help=f"or set {API_KEY_ENV}")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--model-path", default=None, help="local engine: a GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--model-sha256", default=None, help="local engine: the sha256 the model file must have")
    parser.add_argument("--upstream", default=None, help="forward engine: OpenAI-compatible base URL")
    parser.add_argument("--upstream-key-env", default=None, help="forward engine: env variable holding its API key")
    parser.add_argument("--concurrency", type=int, default=None, help="forward engine: requests in flight upstream")
    parser.add_argument("--webhook", action="append", default=[], help="POST batch events here (repeatable)")
    parser.add_argument("--webhook-secret", default=None, help="whsec_... signing secret (or set the env variable)")
    parser.add_argument("--webhook-backoff", type=float, default=1.0, help="first retry delay, seconds")
    args = parser.parse_args(argv)
    try:
        config = build_config(
            host=args.host,
            port=args.port,
            db=args.db,
            engine=args.engine,
            time_scale=args.time_scale,
            faults=args.faults,
            api_key=args.api_key,
            workers=args.workers,
            engine_options=engine_options(
                args.engine,
                model_path=args.model_path,
                model_sha256=args.model_sha256,
                upstream=args.upstream,
                upstream_key_env=args.upstream_key_env,
                concurrency=args.concurrency,
            ),
            webhooks=args.webhook,
            webhook_secret=args.webhook_secret,
            webhook_backoff=args.webhook_backoff,
        )
        serve(config)
    except FreightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
