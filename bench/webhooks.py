"""How late a batch webhook arrives, and what a wake saves: `freight serve --webhook` in-thread, N OpenAI batches,
a receiver that verifies every event with the `openai` SDK.

    .venv/bin/python bench/webhooks.py [--batches 20]

Printed: seconds from the batch's end (the moment the server committed it, and with it the event: the `created_at`
of its row in `GET /_freight/webhooks`) to the receipt the receiver verified (seen within 10 ms) - median and max -
and the server's attempts per event. The machine's other load moves the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from freight.server.testing import LocalServer  # noqa: E402
from webhooks.receiver import SECRET, Receiver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    line = json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
    )  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        Receiver() as receiver,
        LocalServer(Path(tmp) / "s.db", time_scale=0.001, webhooks=[receiver.url], webhook_secret=SECRET) as srv,
    ):
        oai = openai.OpenAI(base_url=srv.openai_base_url, api_key=srv.api_key, max_retries=0)
        arrived: dict[str, float] = {}
        started = time.time()
        for _ in range(args.batches):
            file_id = oai.files.create(file=("in.jsonl", (line + "\n").encode()), purpose="batch").id
            oai.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        while len(arrived) < args.batches:
            for event in receiver.verified():
                arrived.setdefault(event.data.id, time.time())
            time.sleep(0.01)
        log = srv.webhook_deliveries()
        lags = [arrived[d["batch_id"]] - d["created_at"] for d in log]
        attempts = [d["attempts"] for d in log]
    print(f"{args.batches} batches in {time.time() - started:.1f} s, every event verified by the openai SDK")
    print(f"end -> verified receipt: median {statistics.median(lags):.3f} s, max {max(lags):.3f} s")
    print(f"attempts per event: {statistics.mean(attempts):.1f}")


if __name__ == "__main__":
    main()
