"""A server killed with SIGKILL mid-batch loses nothing: started again on the same DB, every batch completes."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import openai
from serve_helpers import a_request, jsonl, o_line, upload, wait_anthropic, wait_openai

from freight.server.testing import LocalServer


def test_sigkill_during_processing_then_restart_completes_every_request(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    n = 120
    # 10 ms per request per worker: long enough to be killed half-way through.
    first = LocalServer(db, time_scale=0.01, workers=2, subprocess=True).start()
    try:
        oai = openai.OpenAI(base_url=first.openai_base_url, api_key=first.api_key, max_retries=0)
        claude = anthropic.Anthropic(base_url=first.base_url, api_key=first.api_key, max_retries=0)
        file_id = upload(oai, [o_line(f"o{i}", f"q{i}") for i in range(n)])
        o_batch = oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        a_batch = claude.messages.batches.create(requests=[a_request(f"a{i}", f"q{i}") for i in range(n)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = oai.batches.retrieve(o_batch.id).request_counts
            if counts is not None and counts.completed >= 10:
                break
            time.sleep(0.01)
        first.kill()
    finally:
        first.stop()
    assert counts is not None and 10 <= counts.completed < n, "the kill must land during processing"

    with LocalServer(db, time_scale=0.0005, subprocess=True) as second:
        oai = openai.OpenAI(base_url=second.openai_base_url, api_key=second.api_key, max_retries=0)
        claude = anthropic.Anthropic(base_url=second.base_url, api_key=second.api_key, max_retries=0)
        done = wait_openai(oai, o_batch.id)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (n, n)
        lines = jsonl(oai.files.content(done.output_file_id).text)  # type: ignore[arg-type]
        assert sorted(line["custom_id"] for line in lines) == sorted(f"o{i}" for i in range(n))

        ended = wait_anthropic(claude, a_batch.id)
        assert ended.request_counts.succeeded == n
        assert sorted(r.custom_id for r in claude.messages.batches.results(a_batch.id)) == sorted(
            f"a{i}" for i in range(n)
        )
        # The input file survived too.
        assert len(oai.files.content(file_id).text.splitlines()) == n
