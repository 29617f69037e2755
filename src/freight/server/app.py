"""The ASGI app: both dialects' routes behind one gate (API key, planted API-level faults, request ids)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freight.server import anthropic_api, engines, openai_api, openai_files
from freight.server.config import ServerConfig
from freight.server.context import Context
from freight.server.processor import Dialect, Processor
from freight.server.responses import dialect_error
from freight.server.store import Store
from freight.server.wire import Answerer, new_id

log = logging.getLogger("freight.server")

OPEN_PATHS = ("/_freight/health",)


def dialect_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class Gate:
    """Refuses requests without the key, then plants the API-level faults of the SPEC, then tags a request id."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self._key = ctx.config.api_key.encode()

    def _authorized(self, headers: Headers) -> bool:
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        dialect = dialect_of(path)
        if not self._authorized(Headers(scope=scope)):
            message = "invalid x-api-key" if dialect == "anthropic" else "Incorrect API key provided."
            await dialect_error(dialect, 401, "auth", message)(scope, receive, send)
            return
        if path.startswith("/v1/"):
            planted = await self._planted(dialect)
            if planted is not None:
                await planted(scope, receive, send)
                return
        request_id = new_id("req_")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["request-id" if dialect == "anthropic" else "x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _planted(self, dialect: str) -> Response | None:
        spec = self.ctx.config.faults
        n = self.ctx.tick()
        if spec.slow and spec.draw("slow", n) < spec.slow:
            await asyncio.sleep(spec.slow_seconds)
        if spec.http429 and spec.draw("http429", n) < spec.http429:
            headers = {
                "retry-after": str(max(1, round(spec.retry_after))),
                "retry-after-ms": str(int(spec.retry_after * 1000)),
            }
            return dialect_error(dialect, 429, "rate_limited", "Rate limit exceeded (planted fault).", headers)
        if spec.http5xx and spec.draw("http5xx", n) < spec.http5xx:
            if spec.draw("http5xx-kind", n) < 0.5:
                status = 529 if dialect == "anthropic" else 503
                return dialect_error(dialect, status, "overloaded", "Overloaded (planted fault).")
            return dialect_error(dialect, 500, "server_error", "Internal server error (planted fault).")
        return None


def build_context(config: ServerConfig) -> tuple[Context, dict[str, Dialect]]:
    store = Store(config.db)
    engine = engines.create(config.engine, config.faults.seed, **config.engine_options)
    answerer = Answerer(engine, store, config.faults)
    dialects: dict[str, Dialect] = {
        "anthropic": anthropic_api.AnthropicDialect(),
        "openai": openai_api.OpenAIDialect(store, config.faults.seed),
    }
    processor = Processor(config, store, answerer, dialects)
    return Context(config, store, answerer, processor), dialects


def create_app(config: ServerConfig) -> Starlette:
    ctx, _ = build_context(config)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.processor.start()
        try:
            yield
        finally:
            ctx.processor.stop()
            ctx.store.close()

    async def health(_request: HttpRequest) -> Response:
        return JSONResponse({"ok": True})

    async def records(_request: HttpRequest) -> Response:
        return JSONResponse(await asyncio.to_thread(ctx.store.records))

    async def http_error(request: HttpRequest, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        kind = {404: "not_found", 405: "invalid"}.get(status, "server_error")
        message = f"{request.method} {request.url.path}: " + ("no such endpoint" if status in (404, 405) else "failed")
        if status == 500:
            log.exception("request failed", exc_info=exc)
        return dialect_error(dialect_of(request.url.path), status, kind, message)

    routes: list[Any] = [
        Route("/_freight/health", health, methods=["GET"]),
        Route("/_freight/records", records, methods=["GET"]),
        *anthropic_api.routes(ctx),
        *openai_api.routes(ctx),
        *openai_files.routes(ctx),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    app.state.ctx = ctx
    app.add_middleware(Gate, ctx=ctx)
    return app


def serve(config: ServerConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")
