"""Wake on webhook (`freight run --webhook-listen HOST:PORT --webhook-secret ...`): a small HTTP listener that takes
the provider's batch events, verifies each with the provider's own verifier (OpenAI's SDK, through the adapter:
`providers.webhook_verifier`), and wakes the poll loop so the batch is polled at once instead of at the next poll.

The idea: a webhook is a hint, never a fact. The loop still polls on its own schedule (a webhook can be lost), and
what it records comes from that poll, not from the event. The listener only shortens a sleep: `sleeper()` is the
runner's `sleep`, returning early when an event names one of this job's batches, after noting it in the job's log.
Events that arrive while the loop is busy wait in a queue, so none is missed between two sleeps. A delivery that
does not verify is answered 400 and changes nothing.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from freight.domain import FreightError, UsageError, WebhookEvent
from freight.providers import WebhookVerifier, webhook_verifier
from freight.store import Store

WEBHOOK_SECRET_ENV = "FREIGHT_WEBHOOK_SECRET"
MAX_BODY = 1 << 20


def listener_for(provider: str, listen: str | None, secret: str | None) -> WebhookListener | None:
    """The `--webhook-listen` listener for `provider`'s batch events (bound, not started), or None without `listen`;
    the secret is `secret` or FREIGHT_WEBHOOK_SECRET."""
    if not listen:
        return None
    return WebhookListener.for_provider(provider, listen, secret or os.environ.get(WEBHOOK_SECRET_ENV))


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--webhook-listen {value}: use HOST:PORT, e.g. 127.0.0.1:8788")
    return host, int(port)


class WebhookListener:
    def __init__(self, host: str, port: int, secret: str, verify: WebhookVerifier) -> None:
        self.secret = secret
        self.verify = verify
        self.events: queue.Queue[WebhookEvent] = queue.Queue()
        self.rejected = 0
        self.idle = threading.Event()  # set while the loop sleeps in `sleeper` (tests and the display can see it)
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                size = int(self.headers.get("content-length") or 0)
                if size > MAX_BODY:  # a batch event is a few hundred bytes: refuse a flood unread
                    status = 413
                else:
                    status = listener.receive(self.rfile.read(size), {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:  # the run's output is the display, not an access log
                pass

        try:
            self._http = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise UsageError(
                f"--webhook-listen {host}:{port}: cannot listen there ({exc.strerror or exc}); pick a free port"
            ) from None
        self._thread = threading.Thread(target=self._http.serve_forever, name="freight-webhook-listen", daemon=True)

    @classmethod
    def for_provider(cls, provider: str, listen: str, secret: str | None) -> WebhookListener:
        """A listener for `provider`'s batch events at `listen` (HOST:PORT); a user error when the provider sends no
        webhooks or no secret is given."""
        verify = webhook_verifier(provider)
        if verify is None:
            raise UsageError(
                f"--webhook-listen: {provider} batches send no webhooks (OpenAI and Azure do); polling tracks them"
            )
        if not secret:
            raise UsageError("--webhook-listen needs the secret the events are signed with: --webhook-secret whsec_...")
        host, port = parse_listen(listen)
        return cls(host, port, secret, verify)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/"

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        try:
            event = self.verify(body, headers, self.secret)
        except FreightError:
            self.rejected += 1
            return 400
        if event is not None:
            self.events.put(event)
        return 200

    def sleeper(self, store: Store, job_id: str, note: Callable[[str], None]) -> Callable[[float], None]:
        """The poll loop's `sleep`: returns early when an event names one of this job's batches."""

        def sleep(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            self.idle.set()
            try:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        event = self.events.get(timeout=left)
                    except queue.Empty:
                        return
                    if any(row["provider_batch_id"] == event.batch_id for row in store.batches(job_id)):
                        note(f"webhook {event.type} for batch {event.batch_id} ({event.id}): polling it now")
                        return
            finally:
                self.idle.clear()

        return sleep

    def __enter__(self) -> WebhookListener:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.shutdown()
        self._http.server_close()
