"""Azure OpenAI: OpenAI's Chat Completions and Batch API through the `openai` SDK's `AzureOpenAI` client.

Everything but the client, the batch endpoint, the limits and the name is the OpenAI adapter's: the same request
builder, the same results handling, the same error table (the Azure service answers in OpenAI's error shape). A
`Request.model` is a *deployment* name here; Azure takes one deployment per input file.
"""

from __future__ import annotations

import os
from typing import Any

import httpx2
import openai
from openai.types import Batch as OpenAIBatch

from freight.domain import CUSTOM_ID_PATTERN, Batch, FreightError
from freight.providers.openai import OpenAIProvider
from freight.providers.openai_wire import batch_of, translate
from freight.providers.protocol import Limits, Provider, ProviderError

__all__ = ["AzureProvider", "DEFAULT_API_VERSION"]

# The first GA api-version with the Batch API; OPENAI_API_VERSION overrides it, as it does for the SDK.
DEFAULT_API_VERSION = "2024-10-21"
_MiB = 1024 * 1024


class AzureProvider(OpenAIProvider):
    name = "azure"
    key_env = "AZURE_OPENAI_API_KEY"
    label = "Azure OpenAI"
    # Azure's batch docs write the endpoint without OpenAI's /v1 (the input lines' `url` must match it).
    endpoint = "/chat/completions"
    limits = Limits(
        max_requests_per_batch=100_000,
        max_bytes_per_batch=200 * _MiB,
        # Azure takes any string unique in the file, as OpenAI does; freight's strictest rule is the one used.
        custom_id_pattern=CUSTOM_ID_PATTERN,
        # A 24 h target for global-batch deployments; unfinished requests then end as `batch_expired`.
        window_hours=24.0,
        # Deployment names are the user's own: the window of the model behind one is unknown, 128k is the common one.
        default_context_window=128_000,
        default_max_output_tokens=16_384,
        batch_supports_tools=False,
        one_model_per_batch=True,
    )

    def __init__(self, *, api_version: str | None = None, **kw: Any) -> None:
        self.api_version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
        super().__init__(**kw)

    def _make_client(
        self, key: str, base_url: str | None, timeout: float, http_client: httpx2.Client | None
    ) -> openai.OpenAI:
        endpoint = base_url or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise FreightError(
                "no Azure OpenAI endpoint: pass --base-url https://<resource>.openai.azure.com "
                "(or set AZURE_OPENAI_ENDPOINT)"
            )
        # max_retries=0: retries belong to freight.providers.retry, so there is one policy, not two stacked.
        return openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_key=key,
            api_version=self.api_version,
            max_retries=0,
            timeout=timeout,
            http_client=http_client,
        )

    def _translate(self, exc: BaseException) -> ProviderError | None:
        return azure_translate(exc)

    def _batch(self, b: OpenAIBatch) -> Batch:
        return batch_of(b).model_copy(update={"provider": self.name})


def azure_translate(exc: BaseException) -> ProviderError | None:
    """OpenAI's error table (Azure answers in OpenAI's shape), with errors named as Azure's."""
    err = translate(exc)
    if err is None:
        return None
    message = "azure: " + str(err).removeprefix("openai: ")
    return ProviderError(err.kind, message, raw_type=err.raw_type, status=err.status, retry_after=err.retry_after)


def _implements_the_protocol(adapter: AzureProvider) -> Provider:
    return adapter  # mypy --strict checks here that the adapter has every method of `Provider`, typed alike
