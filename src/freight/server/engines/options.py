"""The engine-specific options of `freight serve`, checked once for every entry point (CLI, `python -m`, LocalServer).

`--model-path` and `--model-sha256` belong to `local`; `--upstream`, `--upstream-key-env` and `--concurrency` to
`forward`. An option given to an engine that does not take it is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Any

from freight.domain import FreightError

ENGINE_OPTIONS: dict[str, frozenset[str]] = {
    "local": frozenset({"model_path", "model_sha256"}),
    "forward": frozenset({"upstream", "upstream_key_env", "concurrency"}),
}


def engine_options(engine: str, **given: Any) -> dict[str, Any]:
    """The options given (None means not given) for `engine`, refusing the ones it does not take."""
    chosen = {k: v for k, v in given.items() if v is not None}
    allowed = ENGINE_OPTIONS.get(engine, frozenset())
    stray = sorted(set(chosen) - allowed)
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        owners = sorted(e for e, keys in ENGINE_OPTIONS.items() if set(stray) & keys)
        verb = "applies" if len(stray) == 1 else "apply"
        raise FreightError(f"{flags} {verb} only to --engine {' / '.join(owners)}, not --engine {engine}")
    if engine == "forward" and not chosen.get("upstream"):
        raise FreightError("--engine forward needs --upstream URL: the OpenAI-compatible base URL, e.g. .../v1")
    return chosen


def as_flags(options: dict[str, Any]) -> list[str]:
    """The options as `python -m freight.server` flags (LocalServer's subprocess mode)."""
    flags: list[str] = []
    for key, value in options.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags
