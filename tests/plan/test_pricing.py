from __future__ import annotations

from pathlib import Path

import pytest

from freight.domain import Usage
from freight.plan import PricingError, UnknownModel, cost, default_prices, load_prices
from freight.plan.pricing import PriceTable

MILLION = Usage(
    input_tokens=1_000_000, output_tokens=1_000_000, cache_write_tokens=1_000_000, cache_read_tokens=1_000_000
)


def test_sonnet_sync_and_batch_price_every_kind_of_token() -> None:
    # $3 in + $15 out + $3.75 cache write + $0.30 cache read per million; batch halves all four.
    assert cost("claude-sonnet-4-5", MILLION, batch=False) == pytest.approx(22.05)
    assert cost("claude-sonnet-4-5", MILLION, batch=True) == pytest.approx(11.025)


def test_dated_ids_price_as_their_family_and_the_longest_family_wins() -> None:
    usage = Usage(input_tokens=1_000_000)
    assert cost("claude-sonnet-4-5-20250929", usage, batch=False) == pytest.approx(3.0)
    assert cost("gpt-4o-mini-2024-07-18", usage, batch=False) == pytest.approx(0.15)
    assert cost("gpt-4o-2024-08-06", usage, batch=False) == pytest.approx(2.50)


def test_every_family_the_issue_names_is_listed() -> None:
    table = default_prices()
    for model in (
        "claude-opus-4-1",
        "claude-haiku-4-5",
        "gpt-4o",
        "gpt-4.1-mini",
        "o3",
        "gemini-2.5-pro",
        "gemini-2.0-flash",
        "azure/gpt-4o",
        "scripted",
        "smollm2-135m-instruct",
    ):
        assert table.knows(model), model
    assert "override with --prices" in table.source


def test_azure_lists_openai_prices_and_local_models_are_free() -> None:
    usage = Usage(input_tokens=2_000_000, output_tokens=500_000)
    assert cost("azure/gpt-4.1", usage, batch=False) == cost("gpt-4.1", usage, batch=False)
    assert default_prices().lookup("azure/gpt-4.1")[0] == "azure"
    assert cost("scripted", usage, batch=False) == 0.0


def test_unknown_model_is_an_error_with_a_suggestion_not_a_zero() -> None:
    with pytest.raises(UnknownModel) as info:
        cost("claude-sonet-4-5", Usage(input_tokens=10), batch=False)
    assert "claude-sonnet-4-5" in str(info.value)
    assert "--prices" in str(info.value)
    with pytest.raises(UnknownModel):
        cost("nosuch/gpt-4o", Usage(), batch=False)


def test_prices_file_overrides_and_extends_the_packaged_table(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "providers:\n"
        "  anthropic:\n"
        "    models:\n"
        "      claude-sonnet-4-5: {input: 2, output: 10, cache_write: 2.5, cache_read: 0.2}\n"
        "  gemini:\n"
        "    models:\n"
        "      my-tuned-flash: {input: 1, output: 1, cache_write: 1, cache_read: 1}\n"
    )
    table = load_prices(override)
    assert table.cost("claude-sonnet-4-5", Usage(input_tokens=1_000_000), batch=False) == pytest.approx(2.0)
    assert table.cost("claude-haiku-4-5", Usage(input_tokens=1_000_000), batch=False) == pytest.approx(1.0)
    assert table.cost("my-tuned-flash", Usage(output_tokens=1_000_000), batch=True) == pytest.approx(0.5)
    # Overriding one Gemini model keeps Gemini's 48 h window.
    assert table.batch_window_hours("my-tuned-flash") == 48
    assert str(override) in table.origin


def test_a_bad_prices_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text(
        "providers:\n  anthropic:\n    models:\n      x: {input: -1, output: 1, cache_write: 1, cache_read: 1}\n"
    )
    with pytest.raises(PricingError, match=r"prices\.yaml: providers\.anthropic\.models\.x\.input"):
        load_prices(bad)
    with pytest.raises(PricingError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")


def test_price_table_is_data_not_code() -> None:
    table = PriceTable.model_validate(
        {
            "providers": {
                "p": {
                    "batch_discount": 0.4,
                    "models": {"m": {"input": 10, "output": 0, "cache_write": 0, "cache_read": 0}},
                }
            }
        }
    )
    assert table.cost("m", Usage(input_tokens=1_000_000), batch=True) == pytest.approx(4.0)
