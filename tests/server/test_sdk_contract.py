"""Where the SDKs and ../shared/specs/batch-apis.md disagree, the SDK wins: each disagreement is pinned here."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest
from openai.types import FileObject
from serve_helpers import a_request, wait_anthropic
from typer.testing import CliRunner

from freight.cli import app
from freight.server.testing import LocalServer


def test_sdk_disagrees_openai_file_object_requires_status(oai: openai.OpenAI) -> None:
    # The spec lists a file object as id/object/bytes/created_at/filename/purpose; openai 3.51's FileObject also
    # requires `status` (deprecated, but without it the SDK's model is incomplete). The server sends it.
    assert FileObject.model_fields["status"].is_required()
    created = oai.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
    assert created.status == "processed"


def test_sdk_disagrees_anthropic_stop_reasons_are_more_than_the_spec_lists() -> None:
    # The spec names end_turn | max_tokens | stop_sequence | tool_use; anthropic 2.10 also has pause_turn, refusal and
    # model_context_window_exceeded. The scripted engine produces only the spec's four, all of them valid for the SDK.
    from anthropic.types import StopReason

    assert {"pause_turn", "refusal", "model_context_window_exceeded"} <= set(StopReason.__args__)  # type: ignore[attr-defined]


def test_sdk_disagrees_anthropic_counts_stay_processing_until_the_batch_ends(tmp_path: Path) -> None:
    # The spec shows request_counts without saying when they move; anthropic 2.10 documents that requests count as
    # `processing` until the whole batch has ended. The server does the same, so a runner can't lean on live counts.
    source = inspect.getsource(anthropic.types.messages.MessageBatch)
    assert "move to one of the other statuses only once" in " ".join(source.split())
    with LocalServer(tmp_path / "s.db", time_scale=0.01, workers=1) as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=0)
        batch = client.messages.batches.create(requests=[a_request(f"r{i}", "x") for i in range(30)])
        mid = client.messages.batches.retrieve(batch.id)
        assert mid.processing_status == "in_progress" and mid.request_counts.processing == 30
        assert wait_anthropic(client, batch.id).request_counts.succeeded == 30


def test_sdk_disagrees_anthropic_structured_output_parameter_is_output_config() -> None:
    # The spec does not say how a Messages request asks for JSON; anthropic 2.10 has `output_config.format` with
    # {"type": "json_schema", "schema": ...}, which is what the server reads (docs/serve.md).
    params = inspect.signature(anthropic.resources.messages.Messages.create).parameters
    assert "output_config" in params


def test_sdk_disagrees_anthropic_sdk_honours_any_retry_after_while_openai_caps_it() -> None:
    # The spec says the SDK gives up on a retry-after over ~2 minutes: true of openai 3.51 (MAX_RETRY_AFTER_DELAY),
    # not of anthropic 2.10, which sleeps whatever it is told. Planted 429s therefore announce short delays.
    from openai._constants import MAX_RETRY_AFTER_DELAY

    assert MAX_RETRY_AFTER_DELAY == 120
    assert "min(retry_after, 4_294_967.0)" in inspect.getsource(
        anthropic._base_client.SyncAPIClient._calculate_retry_timeout
    )


def test_cli_serve_without_a_key_says_what_to_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FREIGHT_SERVE_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "s.db")])
    assert result.exit_code == 2
    assert "pass --api-key KEY or set FREIGHT_SERVE_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_python_m_freight_server_rejects_a_bad_faults_spec(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "freight.server",
            "--api-key",
            "k",
            "--db",
            str(tmp_path / "s.db"),
            "--faults",
            "nope=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "known keys" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_100k_request_batch_is_accepted_processed_and_streamed(tmp_path: Path) -> None:
    with LocalServer(tmp_path / "s.db", time_scale=0.00001, faults="window=100000000") as srv:
        client = anthropic.Anthropic(base_url=srv.base_url, api_key=srv.api_key, max_retries=0, timeout=600)
        batch = client.messages.batches.create(requests=[a_request(f"r{i}", f"t{i}") for i in range(100_000)])
        ended = wait_anthropic(client, batch.id, timeout=300)
        assert ended.request_counts.succeeded == 100_000
        seen = set()
        for r in client.messages.batches.results(batch.id):
            seen.add(r.custom_id)
        assert len(seen) == 100_000
