"""The price table: per model and token kind, from an effective date (prices.toml, and an override file).

A call's cost is computed from its raw counts with the entry in force when it happened; the
stored row keeps the counts and the entry's id, so a corrected table can reprice it later.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

#: The token kinds a price names, per million tokens.
KINDS = ("input", "output", "cache_read", "cache_write")
#: A price above this (USD per million tokens) is a typo, not a price.
MAX_PRICE = 10_000.0

# What the APIs add to a model's name: a release date (-20250929, @20250929), Bedrock's
# "anthropic." prefix and "-v1:0" suffix, "-latest".
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]{2}\.)?anthropic\.")
_SUFFIXES = re.compile(r"(?:-v\d+(?::\d+)?)$|(?:[-@]\d{8})$|(?:-latest)$")


class PriceTableError(Exception):
    """A price file that cannot be used; the message names the file and the entry."""


@functools.lru_cache(maxsize=4096)
def model_key(model: str) -> str:
    """The name a model is priced under: ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``."""
    key = _BEDROCK_PREFIX.sub("", model.strip().lower())
    while True:
        shorter = _SUFFIXES.sub("", key)
        if shorter == key:
            return key
        key = shorter


@dataclass(frozen=True, slots=True)
class Price:
    """One entry: a model's prices (USD per million tokens) from ``effective`` (UTC midnight, µs)."""

    model: str
    provider: str
    effective: int
    input: float
    output: float
    cache_read: float
    cache_write: float
    #: What a cost row records of the entry: ``claude-sonnet-4-5@2025-09-29`` (made once: read per record).
    id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        day = datetime.fromtimestamp(self.effective / 1e6, UTC).date().isoformat()
        object.__setattr__(self, "id", f"{self.model}@{day}")

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read * self.cache_read
            + cache_write * self.cache_write
        )
        return round(total / 1_000_000, 9)


def _us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _entry(raw: Any, where: str) -> Price:
    if not isinstance(raw, Mapping):
        raise PriceTableError(f"{where}: a [[price]] entry must be a table")
    unknown = sorted(set(raw) - {"model", "provider", "effective", *KINDS})
    if unknown:
        raise PriceTableError(f"{where}: unknown key(s) {', '.join(unknown)}")
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise PriceTableError(f"{where}: model is required")
    effective = raw.get("effective")
    if isinstance(effective, datetime):
        effective = effective.date()
    if not isinstance(effective, date):
        raise PriceTableError(f"{where}: effective must be a date (effective = 2025-09-29)")
    values: dict[str, float] = {}
    for kind in KINDS:
        v = raw.get(kind)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= MAX_PRICE:
            raise PriceTableError(f"{where}: {kind} must be a number of USD per million tokens, 0 to {MAX_PRICE:g}")
        values[kind] = float(v)
    provider = raw.get("provider", "")
    if not isinstance(provider, str):
        raise PriceTableError(f"{where}: provider must be a string")
    return Price(model_key(model), provider.strip().lower(), _us(effective), **values)


def _load(text: str, where: str) -> list[Price]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PriceTableError(f"{where}: {e}") from None
    entries = doc.get("price", [])
    if not isinstance(entries, list):
        raise PriceTableError(f"{where}: price must be an array of tables ([[price]])")
    return [_entry(raw, f"{where}, price entry {i + 1}") for i, raw in enumerate(entries)]


class PriceTable:
    """Every entry by model, oldest first; :meth:`find` gives the one in force at a time."""

    def __init__(self, entries: Iterable[Price]) -> None:
        by_key: dict[tuple[str, int], Price] = {}
        for p in entries:
            by_key[(p.model, p.effective)] = p  # a later file's entry for the same day replaces it
        self._by_model: dict[str, list[Price]] = {}
        for p in sorted(by_key.values(), key=lambda p: p.effective):
            self._by_model.setdefault(p.model, []).append(p)
        self._starts = {m: [p.effective for p in ps] for m, ps in self._by_model.items()}

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The shipped table, with ``override``'s entries added (PriceTableError naming the file)."""
        shipped = resources.files("lobwife_server.costs").joinpath("prices.toml").read_text()
        entries = _load(shipped, "prices.toml (shipped)")
        if override is not None:
            try:
                text = override.read_text()
            except OSError as e:
                raise PriceTableError(f"{override}: {e.strerror or e}") from None
            entries += _load(text, str(override))
        return cls(entries)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_model.values())

    def models(self) -> list[str]:
        return sorted(self._by_model)

    def find(self, model: str, at: int) -> Price | None:
        """The entry for ``model`` in force at ``at`` (µs), or None (unknown model, or before its first price)."""
        key = model_key(model)
        starts = self._starts.get(key)
        if not starts:
            return None
        i = bisect.bisect_right(starts, at) - 1
        return self._by_model[key][i] if i >= 0 else None
