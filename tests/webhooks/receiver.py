"""A webhook receiver as a user would write one: it verifies with ONLY the official `openai` SDK
(`client.webhooks.unwrap`), answers 2xx to what verifies and 400 to what does not, and can be told to fail its first
N deliveries with a 500 (a receiver that is down for a while)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import openai

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtd2ViaG9vay10ZXN0cw=="  # base64 of "secret-for-the-webhook-tests"


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    status: int  # what the receiver answered
    event: Any = None  # the SDK's typed event, when it verified


class Receiver:
    def __init__(self, secret: str = SECRET, fail_first: int = 0) -> None:
        self.client = openai.OpenAI(api_key="not-used", webhook_secret=secret)
        self.fail_first = fail_first
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.handle(body, headers)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                self.deliveries.append(Delivery(body, headers, 500))
                return 500
            try:
                event = self.client.webhooks.unwrap(body, headers)
            except openai.InvalidWebhookSignatureError:
                self.deliveries.append(Delivery(body, headers, 400))
                return 400
            self.deliveries.append(Delivery(body, headers, 200, event))
            return 200

    def verified(self) -> list[Any]:
        with self._lock:
            return [d.event for d in self.deliveries if d.event is not None]

    def wait_for(self, done: Callable[[list[Any]], bool], timeout: float = 60) -> list[Any]:
        """The verified events once `done(events)` holds (polled: observable state, never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.verified()
            if done(events):
                return events
            time.sleep(0.02)
        raise AssertionError(f"the receiver got {len(self.verified())} verified events: {self.verified()}")

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.shutdown()
        self._http.server_close()
