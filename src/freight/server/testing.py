"""`LocalServer`: `freight serve` on a free loopback port, for tests (this project's and users' own).

In-thread by default (fast, same process); `subprocess=True` runs `python -m freight.server` as a child process so a
test can kill it with SIGKILL and start another on the same database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess as sp
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from freight.domain import FreightError
from freight.server.config import API_KEY_ENV, WEBHOOK_SECRET_ENV, build_config
from freight.server.engines.options import as_flags


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    def __init__(
        self,
        db: str | Path,
        engine: str = "scripted",
        time_scale: float = 0.0005,
        faults: str = "",
        api_key: str = "test-key",
        subprocess: bool = False,
        workers: int = 4,
        port: int | None = None,
        engine_options: dict[str, Any] | None = None,
        webhooks: list[str] | None = None,
        webhook_secret: str | None = None,
        webhook_backoff: float = 1.0,
    ) -> None:
        self.db = Path(db)
        self.engine = engine
        self.time_scale = time_scale
        self.faults = faults
        self.api_key = api_key
        self.subprocess = subprocess
        self.workers = workers
        self.engine_options = engine_options or {}
        self.webhooks = list(webhooks or [])
        self.webhook_secret = webhook_secret
        self.webhook_backoff = webhook_backoff
        self.port = port or free_port()
        self._proc: sp.Popen[bytes] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def azure_endpoint(self) -> str:
        """What `AzureOpenAI(azure_endpoint=...)` takes (the SDK adds /openai itself)."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """What `genai.Client(http_options=HttpOptions(base_url=...))` takes (the SDK adds the API version)."""
        return f"{self.base_url}/gemini"

    def url_for(self, provider: str) -> str:
        """The base URL the `provider` adapter takes to reach this server."""
        urls = {
            "anthropic": self.base_url,
            "openai": self.openai_base_url,
            "azure": self.azure_endpoint,
            "gemini": self.gemini_base_url,
        }
        return urls[provider]

    def records(self) -> list[dict[str, Any]]:
        """The server's log of every request it received: dialect, batch_id (None for sync), custom_id, received_at."""
        response = httpx.get(f"{self.base_url}/_freight/records", headers={"x-api-key": self.api_key}, timeout=30)
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()
        return records

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every batch event the server queued (`--webhook`), with its state and each delivery attempt."""
        response = httpx.get(f"{self.base_url}/_freight/webhooks", headers={"x-api-key": self.api_key}, timeout=30)
        response.raise_for_status()
        deliveries: list[dict[str, Any]] = response.json()
        return deliveries
    def counts(self) -> list[dict[str, Any]]:
        """The server's log of token-counting calls (kept apart from `records`): dialect, model, input_tokens."""
        response = httpx.get(f"{self.base_url}/_freight/counts", headers={"x-api-key": self.api_key}, timeout=30)
        response.raise_for_status()
        counts: list[dict[str, Any]] = response.json()
        return counts

    def start(self) -> LocalServer:
        if self.subprocess:
            self._start_process()
        else:
            self._start_thread()
        self._wait_ready()
        return self

    def _start_thread(self) -> None:
        import uvicorn

        from freight.server.app import create_app

        config = build_config(
            port=self.port,
            db=self.db,
            engine=self.engine,
            time_scale=self.time_scale,
            faults=self.faults,
            api_key=self.api_key,
            workers=self.workers,
            engine_options=self.engine_options,
            webhooks=self.webhooks,
            webhook_secret=self.webhook_secret,
            webhook_backoff=self.webhook_backoff,
        )
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="freight-serve", daemon=True)
        self._thread.start()

    def _start_process(self) -> None:
        args = [
            sys.executable, "-m", "freight.server",
            "--port", str(self.port), "--db", str(self.db), "--engine", self.engine,
            "--time-scale", str(self.time_scale), "--faults", self.faults, "--workers", str(self.workers),
            *as_flags(self.engine_options),
            *[flag for url in self.webhooks for flag in ("--webhook", url)],
            "--webhook-backoff", str(self.webhook_backoff),
        ]  # fmt: skip
        # The key travels in the environment, never on a command line other users can read.
        env = {**os.environ, API_KEY_ENV: self.api_key}
        if self.webhook_secret:
            env[WEBHOOK_SECRET_ENV] = self.webhook_secret
        # The child dies with this process, even if this one is killed outright: a server embedded in a
        # `freight run` must never outlive it (its state is on disk; the next run starts a new one).
        # Its own process group: Ctrl-C in the terminal reaches the runner only, which detaches cleanly and then
        # stops this server itself (a SIGINT here too would print the server's traceback over the runner's message).
        self._proc = sp.Popen(args, env=env, preexec_fn=_die_with_parent, process_group=0)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise FreightError(f"freight serve exited with code {self._proc.returncode} before it was ready")
            try:
                if httpx.get(f"{self.base_url}/_freight/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise FreightError(f"freight serve did not answer on {self.base_url} within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the server process (subprocess=True only): no shutdown, no flush, as a crash."""
        if self._proc is None:
            raise FreightError("kill() needs LocalServer(subprocess=True)")
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except sp.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=15)
            self._server = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
