"""Where a run goes, decided before anything is sent: a provider's API, a base URL, or the embedded local model.

The embedded model (freight's own server with the `local` engine, started for the run) is the no-key default, and only
that: a run is on it when `--provider local` asks for it, or when no key and no base URL point at a provider - and
then it says so, and refuses a provider's model name rather than answering under it. Which environment variable holds
a provider's key is asked of its adapter (`key_env`), so a plugin provider is resolved like a built-in one. Every
model the run will use must have a price before it starts (`--prices`, `--price-as`), or `--allow-unpriced` says the
costs will read unknown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freight.domain import FreightError, UsageError
from freight.plan.pricing import Pricer, PricingError, UnknownModel, unpriced_message
from freight.providers import Provider, get_provider, key_env, provider_names
from freight.runner.checks import check_endpoint, check_line_apis, check_prompt, validate_schema
from freight.runner.hedge import hedge_settings, parse_deadline
from freight.runner.inputs import input_kind, read_input
from freight.runner.job import RunOptions, decide_mode
from freight.store import freight_home

EMBEDDED = "local"  # --provider local: the embedded model, asked for by name
# The embedded server's engines and the model each answers as. `scripted` is the deterministic test engine.
EMBEDDED_MODELS = {"local": "smollm2-135m", "scripted": "scripted"}
# The adapter that talks to the embedded server when no provider is named (the server speaks every dialect).
EMBEDDED_ADAPTER = "anthropic"
# ... and when a batch file's lines name an API only OpenAI's dialect has (/v1/embeddings on the local engine).
EMBEDDED_OPENAI_ADAPTER = "openai"

Notice = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def prepare(
    input: str | Path,
    *,
    prompt: str = "{document}",
    system: str | None = None,
    schema: dict[str, Any] | None = None,
    fallback_prompt: str | None = None,
    provider: str = "anthropic",
    model: str | None = None,
    base_url: str | None = None,
    engine: str = "local",
    max_tokens: int = 1024,
    max_retries: int = 2,
    mode: str = "batch",
    deadline: str | None = None,
    out: str | Path | None = None,
    id_field: str | None = None,
    text_field: str | None = None,
    batch_size: int | None = 5000,
    prices: str | Path | None = None,
    price_as: str | None = None,
    allow_unpriced: bool = False,
    api_key: str | None = None,
    on_notice: Notice = quiet,
    hedge_margin: float | None = None,
    hedge_duplicate: bool = False,
    sync_seconds: float | None = None,
    sync_rpm: float | None = None,
    endpoint: str = "chat",
    dimensions: int | None = None,
) -> RunOptions:
    """Check and resolve everything a run needs before anything is sent: the provider and endpoint (the embedded
    model only when no key and no base URL say otherwise, or `provider="local"`), the model, the prices of every
    model the input will use, and `mode="auto"` routed. Raises `UsageError` (exit 2) for what the user must change."""
    if mode not in ("batch", "sync", "auto"):
        raise UsageError(f"--mode {mode!r}: use batch, sync or auto")
    # The CLI checks the files first (to name their lines); a notebook's strings are checked here, the same way.
    check_prompt(prompt, "prompt")
    if fallback_prompt is not None:
        check_prompt(fallback_prompt, "fallback_prompt")
    if schema is not None:
        validate_schema(schema, "schema", "schema")
    names = provider_names()
    if provider != EMBEDDED and provider not in names:
        raise FreightError(f"unknown provider {provider!r}; known providers: {', '.join([*names, EMBEDDED])}")
    path = Path(input).resolve()
    ready_made = input_kind(path) == "requests"
    api = check_endpoint(endpoint, provider, ready_made, prompt=prompt, system=system, schema=schema)
    if dimensions is not None and (api != "embeddings" or dimensions < 1):
        raise UsageError("--dimensions N (a positive number) goes with --endpoint embeddings")
    # Ready-made batch lines carry their own model: each is priced (and checked) at it.
    line_models, line_apis = _line_models(path) if ready_made else ([], set())
    opts = RunOptions(
        input=str(path),
        provider=provider,
        model=model or (line_models[0] if line_models else ""),
        prompt=prompt,
        system=system,
        schema=schema,
        fallback_prompt=fallback_prompt,
        max_tokens=max_tokens,
        max_retries=max_retries,
        mode=mode,
        base_url=base_url.rstrip("/") if base_url else None,
        out=str(out) if out else None,
        id_field=id_field,
        text_field=text_field,
        deadline=deadline,
        prices=str(prices) if prices else None,
        price_as=price_as,
        allow_unpriced=allow_unpriced,
        extra={"batch_size": batch_size} if batch_size else {},
        api=api,
        dimensions=dimensions,
    )
    if deadline is not None:  # checked now, not at the hedge point; the hedge's settings travel with the job
        try:
            parse_deadline(deadline)
        except FreightError as exc:
            raise UsageError(str(exc)) from None
        opts.extra.update(hedge_settings(hedge_margin, hedge_duplicate, sync_seconds, sync_rpm))
    try:
        pricer = opts.pricer()
    except PricingError as exc:
        raise UsageError(str(exc)) from None
    _resolve_target(opts, engine, model, line_models, pricer, api_key, on_notice, line_apis)
    check_line_apis(line_apis, opts.provider, str(path))
    unpriced = pricer.unpriced({opts.model, *line_models})
    if unpriced and not allow_unpriced:
        raise UsageError(unpriced_message(unpriced, pricer.table))
    if unpriced:
        on_notice(f"no price for {', '.join(unpriced)}: every cost of this run will read unknown (--allow-unpriced)")
    if opts.mode == "auto":
        decision = decide_mode(opts, datetime.now(UTC))
        for reason in decision.reasons:
            on_notice(f"route: {decision.mode.value}: {reason.text}")
        opts.mode = "batch" if decision.is_batch else "sync"
    return opts


def _resolve_target(
    opts: RunOptions,
    engine: str,
    model: str | None,
    line_models: list[str],
    pricer: Pricer,
    api_key: str | None,
    on_notice: Notice,
    line_apis: set[str] | None = None,
) -> None:
    """Decide the embedded model or a provider, and the model; refuse a provider's model name on the embedded one."""
    adapter = opts.provider
    if opts.provider == EMBEDDED:
        adapter = EMBEDDED_OPENAI_ADAPTER if (line_apis or set()) - {"chat"} else EMBEDDED_ADAPTER
    env = key_env(adapter)
    has_key = bool(api_key or (env and os.environ.get(env)))
    if opts.provider == EMBEDDED and opts.base_url:
        raise UsageError(
            "--provider local runs the embedded model on this machine: drop --base-url, or name the provider that "
            "--base-url speaks (--provider anthropic|openai|...)"
        )
    if opts.provider != EMBEDDED and (opts.base_url or has_key):
        if not opts.model:
            raise UsageError(f"name a --model for {adapter}{_example(pricer, adapter)}")
        return
    if engine not in EMBEDDED_MODELS:
        raise UsageError(f"--engine {engine!r}: the embedded server runs {' or '.join(EMBEDDED_MODELS)}")
    own = EMBEDDED_MODELS[engine]
    for name in [model or own, *line_models]:
        if not _embedded_model(pricer, name):
            what = f"--model {name}" if name == model else f"the model {name} of the input's batch lines"
            raise UsageError(
                f"{what}: that is not the embedded local model ({own}), and this run is on it because "
                f"{'--provider local was given' if opts.provider == EMBEDDED else f'{env} is not set'}: nothing was "
                f"sent. To use {name}, set {env or 'the provider key'} (or --base-url); to use the embedded model, "
                "drop --model"
            )
    explicit = opts.provider == EMBEDDED
    opts.provider, opts.engine, opts.model = adapter, engine, model or own
    if explicit:
        on_notice(f"--provider local: running on the embedded local model {opts.model}")
    else:
        on_notice(
            f"no {env}: running on the embedded local model {opts.model}; set the key or --provider/--base-url to "
            "use a provider"
        )


def _embedded_model(pricer: Pricer, model: str) -> bool:
    """The price table lists the embedded engines' models under `local` (at $0): a name priced elsewhere is a
    provider's model, which the embedded model must not answer under."""
    try:
        return pricer.table.lookup(model)[0] == EMBEDDED
    except UnknownModel:
        return False


def _example(pricer: Pricer, provider: str) -> str:
    listed = pricer.table.providers.get(provider)
    return f" (e.g. --model {next(iter(listed.models))})" if listed and listed.models else ""


def _line_models(path: Path) -> tuple[list[str], set[str]]:
    """The models a ready-made batch file names, in order of first use, and the APIs (streamed, not held)."""
    seen: dict[str, None] = {}
    apis: set[str] = set()
    for doc in read_input(path):
        if doc.request is not None:
            seen.setdefault(doc.request.model, None)
            apis.add(doc.request.api)
    return list(seen), apis


EMBEDDED_TIME_SCALE = 0.001  # the emulated service's queue (30 s) and finalizing (20 s) take 30 and 20 ms
EMBEDDED_WINDOW = 30 * 24 * 3600.0  # real seconds: a month, where a provider's 24 h window would be 86 s here
# Polling the embedded server is a loopback call: often enough that the next batch follows the last without a wait.
EMBEDDED_POLL = 1.0
EMBEDDED_MAX_POLL = 2.0


class _Kept:
    """The embedded servers `embedded_kept` holds open, by (engine, state file), each with the key it was started
    with; they stop with `stack`."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.servers: dict[tuple[str, Path], tuple[Any, str]] = {}

    def server(self, engine: str, state: Path) -> tuple[Any, str]:
        if (engine, state) not in self.servers:
            self.servers[(engine, state)] = _embedded_server(engine, state, self.stack)
        return self.servers[(engine, state)]


_kept: _Kept | None = None


@contextlib.contextmanager
def embedded_kept() -> Iterator[None]:
    """While open, every `connect` to the embedded model in this process talks to one server, started at the first and
    stopped at the end: the sample and the run that follows it share it (and its loaded model) instead of starting
    one each. Nested uses share the outer one."""
    global _kept
    if _kept is not None:
        yield
        return
    with contextlib.ExitStack() as stack:
        _kept = _Kept(stack)
        try:
            yield
        finally:
            _kept = None


def _embedded_server(engine: str, state: Path, stack: contextlib.ExitStack) -> tuple[Any, str]:
    from freight.server.testing import LocalServer

    key = secrets.token_urlsafe(16)
    # The embedded server's timing is the engine's, not an emulation of a provider's: its queue and finalizing steps
    # are scaled to milliseconds, and its completion window is made long enough (EMBEDDED_WINDOW) that work a slow
    # local model has not reached yet waits for it instead of expiring and being computed again.
    server = LocalServer(
        state,
        engine=engine,
        time_scale=EMBEDDED_TIME_SCALE,
        faults=f"window={EMBEDDED_WINDOW / EMBEDDED_TIME_SCALE:.0f}",
        api_key=key,
        subprocess=True,
    )
    return stack.enter_context(server), key


@contextlib.contextmanager
def connect(opts: RunOptions, api_key: str | None = None) -> Iterator[Provider]:
    """The provider adapter for a run. On the embedded model, freight starts its own server (`freight serve`) on
    loopback for the run, its state kept in FREIGHT_HOME so a resumed run finds its batches again, with a fresh key
    that lives only as long as the server (one server for several connections inside `embedded_kept`)."""
    if not opts.engine:
        yield get_provider(opts.provider, base_url=opts.base_url, api_key=api_key)
        return
    home = freight_home()
    home.mkdir(parents=True, exist_ok=True)
    state = home / f"serve-{opts.engine}.db"
    with contextlib.ExitStack() as own:
        srv, key = _kept.server(opts.engine, state) if _kept is not None else _embedded_server(opts.engine, state, own)
        try:
            base = srv.url_for(opts.provider)
        except KeyError:  # a plugin provider: the server's root, where every dialect is mounted
            base = srv.base_url
        yield get_provider(opts.provider, base_url=base, api_key=key)
