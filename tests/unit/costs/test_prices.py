"""The price table: model names as the APIs report them, effective dates, overrides, bad files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lobwife_server.costs.prices import PriceTable, PriceTableError, model_key


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


@pytest.mark.parametrize(
    ("reported", "key"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("Claude-Sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-opus-4-1", "claude-opus-4-1"),  # a version number is not a date
    ],
)
def test_a_model_is_matched_as_the_apis_report_it(reported: str, key: str) -> None:
    assert model_key(reported) == key


def test_the_shipped_table_prices_the_fleets_models() -> None:
    table = PriceTable.load()
    for model in ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-sonnet-4", "claude-opus-4-1"):
        price = table.find(model, us("2026-12-01T00:00:00"))
        assert price is not None and price.cache_read < price.input < price.cache_write < price.output, model
    sonnet = table.find("claude-sonnet-4-5-20250929", us("2026-12-01T00:00:00"))
    assert sonnet is not None and (sonnet.input, sonnet.output, sonnet.cache_read, sonnet.cache_write) == (
        3.0,
        15.0,
        0.3,
        3.75,
    )
    assert sonnet.cost(1_000_000, 0, 0, 0) == 3.0
    assert table.find("claude-sonnet-4-5", us("2025-09-28T23:59:59")) is None  # before its first price
    assert table.find("gpt-unknown", us("2026-01-01T00:00:00")) is None


def test_an_override_adds_and_corrects_entries_by_date(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(
        """
[[price]]
model = "claude-sonnet-4-5"
effective = 2026-06-01
input = 2.0
output = 10.0
cache_read = 0.2
cache_write = 2.5

[[price]]
model = "claude-sonnet-4-5"
effective = 2025-09-29
input = 3.5
output = 15.0
cache_read = 0.3
cache_write = 3.75
"""
    )
    table = PriceTable.load(f)
    before = table.find("claude-sonnet-4-5", us("2026-05-31T23:00:00"))
    after = table.find("claude-sonnet-4-5", us("2026-06-01T00:00:00"))
    assert before is not None and before.input == 3.5  # the same model and day: the override's entry
    assert after is not None and after.input == 2.0 and after.id == "claude-sonnet-4-5@2026-06-01"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[price]]\neffective = 2026-01-01\n", "price entry 1: model is required"),
        ('[[price]]\nmodel = "m"\neffective = "soon"\n', "effective must be a date"),
        ('[[price]]\nmodel = "m"\neffective = 2026-01-01\ninput = -1\n', "input must be a number"),
        ('[[price]]\nmodel = "m"\neffective = 2026-01-01\ninput = nan\n', "input must be a number"),
        ('[[price]]\nmodel = "m"\neffective = 2026-01-01\ncolour = 1\n', "unknown key(s) colour"),
        ("[[price\n", "prices.toml"),
    ],
)
def test_a_bad_price_file_is_refused_naming_the_entry(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(text)
    with pytest.raises(PriceTableError) as e:
        PriceTable.load(f)
    assert message in str(e.value) and str(f) in str(e.value)


def test_a_missing_override_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match=r"nope\.toml"):
        PriceTable.load(tmp_path / "nope.toml")
