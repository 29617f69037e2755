"""The Azure OpenAI dialect: OpenAI's own handlers mounted under Azure's paths, its batches kept under "azure".

What `openai.AzureOpenAI(azure_endpoint=..., api_version=...)` sends: `/openai/files`, `/openai/batches` and
`/openai/deployments/{deployment}/chat/completions`, each with an `api-version` query parameter and the key in an
`api-key` header. The newer `/openai/v1/...` form (what a plain `openai.OpenAI` client sends given an Azure base URL
ending in `/openai/v1`) takes no api-version. Deployment names stand in for model names: one deployment per input
file, as OpenAI takes one model per file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from freight.server import openai_api, openai_endpoints, openai_files
from freight.server.context import Context
from freight.server.responses import openai_error

DIALECT = "azure"
# Azure's batch docs write the endpoint without /v1; the v1 surface accepts OpenAI's spelling as well.
ENDPOINTS = openai_endpoints.AZURE_ENDPOINTS
MAX_REQUESTS = 100_000

Handler = Callable[[HttpRequest], Awaitable[Response]]


def _versioned(handler: Handler) -> Handler:
    async def checked(request: HttpRequest) -> Response:
        if not request.query_params.get("api-version"):
            # Azure answers a missing api-version on these paths with a 404 "Resource not found".
            return openai_error(
                404,
                "Resource not found: Azure OpenAI paths outside /openai/v1 need an api-version query parameter "
                "(pass api_version= to AzureOpenAI)",
                code="404",
            )
        return await handler(request)

    return checked


def routes(ctx: Context) -> list[Route]:
    legacy = [
        *openai_api.routes(
            ctx,
            dialect=DIALECT,
            prefix="/openai",
            sync_prefix="/openai/deployments/{deployment}",
            endpoints=ENDPOINTS,
        ),
        *openai_files.routes(ctx, prefix="/openai"),
    ]
    v1 = [
        *openai_api.routes(ctx, dialect=DIALECT, prefix="/openai/v1", endpoints=ENDPOINTS),
        *openai_files.routes(ctx, prefix="/openai/v1"),
    ]
    return [*v1, *(Route(r.path, _versioned(r.endpoint), methods=r.methods) for r in legacy)]
