"""What tokens cost: a per-model price table (package data, overridable by a file) and the one cost function.

Both the planner and the runner's report price usage here, so a run's reported cost and the plan's projection can
never be computed two different ways.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from freight.domain import FreightError, Usage

PER_MILLION = 1_000_000


class PricingError(FreightError):
    """A price table that cannot be read, or a model it does not list."""


class UnknownModel(PricingError):
    def __init__(self, model: str, table: PriceTable) -> None:
        close = difflib.get_close_matches(model.split("/")[-1], table.model_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown model {model!r}: the price table ({table.origin}) does not list it.{hint} "
            "Fix the model name, or add its prices to a file and pass --prices FILE."
        )
        self.model = model


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(_Frozen):
    """US dollars per million tokens, at the synchronous price."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    # When this price was last checked against the provider's page (YYYY-MM-DD); the table's `as_of` when not given.
    checked: str | None = None


class ProviderPrices(_Frozen):
    batch_discount: float = Field(default=0.5, gt=0, le=1)
    batch_window_hours: float = Field(default=24, gt=0)
    models: dict[str, Price] = Field(default_factory=dict)


class PriceTable(_Frozen):
    as_of: str = ""
    source: str = ""
    providers: dict[str, ProviderPrices]
    origin: str = "the packaged table"
    # "provider/model" -> the file whose price replaced (or added) ours: what `freight prices` marks as an override.
    overrides: dict[str, str] = Field(default_factory=dict)
    # lookup's answers by model name: the table is frozen, and a job prices every result at one or two models.
    _found: dict[str, tuple[str, ProviderPrices, Price] | None] = PrivateAttr(default_factory=dict)

    def model_names(self) -> list[str]:
        return sorted({m for p in self.providers.values() for m in p.models})

    def lookup(self, model: str) -> tuple[str, ProviderPrices, Price]:
        """The provider and price of `model`: `provider/model`, an exact name, or the longest name it extends."""
        if model in self._found:
            found = self._found[model]
            if found is None:
                raise UnknownModel(model, self)
            return found
        try:
            found = self._lookup(model)
        except UnknownModel:
            self._found[model] = None
            raise
        self._found[model] = found
        return found

    def _lookup(self, model: str) -> tuple[str, ProviderPrices, Price]:
        provider_name, _, bare = model.rpartition("/")
        if provider_name and provider_name not in self.providers:
            raise UnknownModel(model, self)
        candidates = [(provider_name, self.providers[provider_name])] if provider_name else self.providers.items()
        best: tuple[int, str, ProviderPrices, Price] | None = None
        # Dated or suffixed ids (claude-sonnet-4-5-20250929) price as the family they extend; the longest family wins
        # so gpt-4o-mini is never priced as gpt-4o. File order breaks ties: OpenAI is listed before Azure.
        for name, prov in candidates:
            for listed, price in prov.models.items():
                if (bare == listed or bare.startswith(listed + "-")) and (best is None or len(listed) > best[0]):
                    best = (len(listed), name, prov, price)
        if best is None:
            raise UnknownModel(model, self)
        return best[1], best[2], best[3]

    def knows(self, model: str) -> bool:
        try:
            self.lookup(model)
        except UnknownModel:
            return False
        return True

    def batch_window_hours(self, model: str) -> float:
        return self.lookup(model)[1].batch_window_hours

    def cost(self, model: str, usage: Usage, batch: bool) -> float:
        """US dollars for `usage` on `model`, at the batch price when `batch`."""
        _, provider, price = self.lookup(model)
        dollars = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_write_tokens * price.cache_write
            + usage.cache_read_tokens * price.cache_read
        ) / PER_MILLION
        return dollars * provider.batch_discount if batch else dollars

    def merged(self, override: PriceTable) -> PriceTable:
        """This table with `override`'s providers and models replacing ours by name."""
        providers = dict(self.providers)
        for name, prov in override.providers.items():
            base = providers.get(name)
            if base is None:
                providers[name] = prov
                continue
            # Only what the override wrote replaces ours: an override listing one Gemini model keeps Gemini's window.
            fields = {k: getattr(prov, k) for k in prov.model_fields_set if k != "models"}
            providers[name] = base.model_copy(update={**fields, "models": {**base.models, **prov.models}})
        return PriceTable(
            as_of=override.as_of or self.as_of,
            source=override.source or self.source,
            providers=providers,
            origin=f"{self.origin} + {override.origin}",
            overrides={
                **self.overrides,
                **{f"{name}/{m}": override.origin for name, prov in override.providers.items() for m in prov.models},
            },
        )


def _parse(text: str, origin: str) -> PriceTable:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise PricingError(
            f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}). Fix the file and retry."
        ) from None
    if not isinstance(data, dict):
        raise PricingError(f"{origin}: expected a mapping with a 'providers:' key. See freight/plan/prices.yaml.")
    try:
        table = PriceTable.model_validate({**data, "origin": origin})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PricingError(f"{origin}: {problems}. Fix the file and retry.") from None
    return _dated(table)


def _dated(table: PriceTable) -> PriceTable:
    """Every price carries the date it was checked: its own, else its table's `as_of` (None when neither says)."""
    providers = {
        name: prov.model_copy(
            update={
                "models": {
                    m: price if price.checked else price.model_copy(update={"checked": table.as_of or None})
                    for m, price in prov.models.items()
                }
            }
        )
        for name, prov in table.providers.items()
    }
    return table.model_copy(update={"providers": providers})


@cache
def default_prices() -> PriceTable:
    """The packaged table (read once per process)."""
    text = resources.files("freight.plan").joinpath("prices.yaml").read_text(encoding="utf-8")
    return _parse(text, "the packaged table")


def load_prices(path: Path | None = None) -> PriceTable:
    """The packaged table, with the file at `path` (if any) overriding it provider by provider, model by model."""
    if path is None:
        return default_prices()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"{path}: cannot read the prices file ({exc.strerror}).") from None
    return default_prices().merged(_parse(text, str(path)))


def cost(model: str, usage: Usage, batch: bool, prices: PriceTable | None = None) -> float:
    """US dollars for `usage` on `model`; raises UnknownModel rather than pricing an unknown model at zero."""
    return (prices or default_prices()).cost(model, usage, batch)


class Pricer:
    """How one run prices its requests: each at its own model, through the table (packaged, plus `--prices FILE`),
    with `--price-as MODEL` standing in for models the table does not list (an Azure deployment's own name, a
    fine-tune). A model that still has no price costs None - "unknown" to the user - never $0."""

    def __init__(self, table: PriceTable | None = None, price_as: str | None = None) -> None:
        self.table = table or default_prices()
        if price_as is not None and not self.table.knows(price_as):
            raise PricingError(
                f"--price-as {price_as!r}: {UnknownModel(price_as, self.table)} (--price-as names a model the table "
                "lists, e.g. gpt-4o)"
            )
        self.price_as = price_as

    @classmethod
    def load(cls, prices: str | Path | None = None, price_as: str | None = None) -> Pricer:
        return cls(load_prices(Path(prices)) if prices else None, price_as)

    def name_for(self, model: str) -> str | None:
        """The listed model `model` is priced as, or None when it has no price."""
        if self.table.knows(model):
            return model
        return self.price_as

    def cost(self, model: str, usage: Usage, batch: bool) -> float | None:
        name = self.name_for(model)
        return None if name is None else self.table.cost(name, usage, batch)

    def unpriced(self, models: Iterable[str]) -> list[str]:
        return sorted({m for m in models if self.name_for(m) is None})


def unpriced_message(models: list[str], table: PriceTable) -> str:
    """Why a run is refused before it spends anything, and the three ways to go on."""
    named = ", ".join(repr(m) for m in models)
    close = sorted({c for m in models for c in difflib.get_close_matches(m.split("/")[-1], table.model_names(), n=2)})
    hint = f" (close listed names: {', '.join(close)})" if close else ""
    return (
        f"no price for model {named} in {table.origin}{hint}: nothing was sent. Give it a price with "
        "--price-as MODEL (priced as a listed model, e.g. --price-as gpt-4o for an Azure deployment of gpt-4o), "
        "or --prices FILE (your own prices, in the shape of freight/plan/prices.yaml); or run with --allow-unpriced "
        "and every cost will read unknown"
    )
