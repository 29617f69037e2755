"""The screenshots in docs/ui.md, taken by Playwright in Debian's headless Chromium over real jobs run against
`freight serve` (the scripted engine with planted failures): a finished job with a chunk-and-merge and re-asks, a
job the sample gate stopped, and one running (its engine held so it stays running while the pictures are taken).

    .venv/bin/python bench/ui_screenshots.py [--out docs/ui]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from freight import api
from freight.domain import Request, Succeeded
from freight.providers import get_provider
from freight.runner.job import RunOptions, open_job
from freight.runner.loop import Runner
from freight.server import engines
from freight.server.engines.scripted import ScriptedEngine
from freight.server.testing import LocalServer, free_port
from freight.store import Store
from freight.ui import create_app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}, "lines": {"type": "array"}},
    "required": ["vendor", "total"],
}
PLANTED = {
    "plain-1": "Invoice from ACME. Total 10.",
    "plain-2": "Invoice from Globex. Total 20.",
    "plain-3": "Invoice from Initech. Total 30.",
    "overloaded": "Invoice [[fault:overloaded#ov]] total 1.",
    "truncated": "Invoice [[fault:tokens=400#tr]] total 4.",
    "bad-json": "Invoice [[fault:malformed_json#bj]] total 5.",
    "expired": "Invoice [[fault:expired#ex]] total 6.",
    "always-bad-json": "Invoice [[fault:malformed_json:always#abj]] total 7.",
    "invalid": "Invoice [[fault:invalid_request:always#inv]] total 8.",
    "too-long": "\n\n".join(f"Section {i}. " + "Lorem ipsum dolor sit amet. " * 60 for i in range(6)),
}
release = threading.Event()
PRICES = ""  # a prices file pricing the scripted model as Claude Haiku 4.5, so the pages show costs; set in main


def write_prices(tmp: Path) -> str:
    path = tmp / "prices.yaml"
    path.write_text(
        "providers:\n  anthropic:\n    batch_discount: 0.5\n    batch_window_hours: 24\n    models:\n"
        "      scripted: {input: 1.00, output: 5.00, cache_write: 1.25, cache_read: 0.10}\n"
    )
    return str(path)


class HeldEngine(ScriptedEngine):
    """The scripted engine, answering only once `release` is set: a job that stays running for the pictures."""

    name = "held-screenshots"

    def complete(self, request: Request) -> Any:
        if "hold" in str(request.messages[0].content):
            release.wait(120)
        result: Succeeded = super().complete(request)
        return result


def corpus(root: Path, docs: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (root / f"{name}.txt").write_text(text)
    return root


def options(docs: Path, base_url: str, prompt: str) -> RunOptions:
    return RunOptions(input=str(docs), provider="anthropic", model="scripted-ctx-1200", prompt=prompt, schema=SCHEMA,
                      max_tokens=120, max_retries=3, base_url=base_url, prices=PRICES)  # fmt: skip


def scene(tmp: Path, srv: LocalServer) -> tuple[str, dict[str, str]]:
    db = str(tmp / "freight.db")
    with Store(db) as store:
        opts = options(corpus(tmp / "invoices", PLANTED), srv.base_url, "Extract the fields.\n\n{document}")
        job, _ = open_job(store, opts)
        adapter = get_provider("anthropic", base_url=srv.base_url, api_key=srv.api_key)
        Runner(store, adapter, job.job_id, opts, poll_interval=0.05, sleep=lambda s: time.sleep(0.05),
               batch_size=4).run()  # fmt: skip
    # The same documents, another prompt, a strict gate: the sample's first-pass rate is below it, the job stops.
    with contextlib.suppress(api.SampleGateFailed):
        api.run(tmp / "invoices", prompt="Vendor and total, as JSON.\n\n{document}", schema=SCHEMA,
                provider="anthropic", model="scripted-ctx-1200", base_url=srv.base_url, max_tokens=120,
                prices=PRICES, out=tmp / "out", db=db, api_key=srv.api_key, sample=True,
                poll_interval=0.05, sample_size=len(PLANTED), min_first_pass=0.99)  # fmt: skip
    with Store(db) as store:
        gate_job = next(j.job_id for j in store.list_jobs() if j.state.value == "stopped")
    held = corpus(tmp / "held", {f"letter-{i:02d}": f"Letter {i}: hold. Total {i}." for i in range(40)})
    running_opts = options(held, srv.base_url, "Extract the fields.\n\n{document}")
    with Store(db) as store:
        running_job, _ = open_job(store, running_opts)
    thread = threading.Thread(
        target=api.resume, args=(running_job.job_id,), kwargs={"db": db, "api_key": srv.api_key, "poll_interval": 0.1},
        daemon=True,
    )  # fmt: skip
    thread.start()
    return db, {"done": job.job_id, "gated": str(gate_job), "running": running_job.job_id}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "ui"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    engines.register(HeldEngine.name, f"{__name__}:HeldEngine")
    tmp = Path(tempfile.mkdtemp(prefix="freight-ui-shots-"))
    global PRICES
    PRICES = write_prices(tmp)
    with LocalServer(tmp / "serve.db", engine=HeldEngine.name, time_scale=0.0002, api_key="local-secret") as srv:
        db, ids = scene(tmp, srv)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/jobs/{ids['running']}")
            page.wait_for_function("() => Number(document.querySelector('[data-live=in_flight]').textContent) > 0")
            shots = {
                "jobs.png": f"{base}/",
                "job.png": f"{base}/jobs/{ids['done']}",
                "job-gate-stopped.png": f"{base}/jobs/{ids['gated']}",
                "document-chunked.png": f"{base}/jobs/{ids['done']}/documents/too-long",
                "document-reask.png": f"{base}/jobs/{ids['done']}/documents/always-bad-json",
                "confirm-cancel.png": f"{base}/jobs/{ids['running']}/cancel",
            }
            for name, url in shots.items():
                page.goto(url)
                if name == "document-reask.png":
                    page.locator("#lineage li.step").nth(1).locator(":scope > details > summary").first.click()
                page.screenshot(path=str(out / name), full_page=True)
                print(out / name)
            browser.close()
        release.set()
        server.should_exit = True
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
