"""Sharding: every symbol has exactly one owner, loads are balanced, the answer is stable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian_ingest.settings import IngestSettings
from meridian_ingest.sharding import lock_key, owned_symbols

symbol_sets = st.sets(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=10),
                      min_size=1, max_size=60)


@given(symbols=symbol_sets, replicas=st.integers(1, 12))
def test_every_symbol_has_exactly_one_owner_and_loads_differ_by_at_most_one(
        symbols: set[str], replicas: int) -> None:
    shares = [owned_symbols(symbols, replicas, i) for i in range(replicas)]
    flat = [s for share in shares for s in share]
    assert sorted(flat) == sorted(symbols)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


@given(symbols=symbol_sets, replicas=st.integers(1, 12))
def test_assignment_does_not_depend_on_input_order(symbols: set[str], replicas: int) -> None:
    forward = [owned_symbols(sorted(symbols), replicas, i) for i in range(replicas)]
    backward = [owned_symbols(sorted(symbols, reverse=True), replicas, i)
                for i in range(replicas)]
    assert forward == backward


def test_bad_index_is_refused() -> None:
    with pytest.raises(ValueError, match="replica index 2"):
        owned_symbols(["BTCUSDT"], 2, 2)


def test_lock_keys_are_signed_64_bit_and_distinct_per_stream() -> None:
    keys = {lock_key("bybit-linear", s, tf) for s in ("BTCUSDT", "ETHUSDT") for tf in ("1m", "1h")}
    assert len(keys) == 4
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)


def test_replica_index_comes_from_a_statefulset_hostname() -> None:
    settings = IngestSettings(replicas=3)
    assert settings.resolved_replica_index("ingest-2") == 2
    assert settings.resolved_replica_index("laptop") == 0
    with pytest.raises(ValueError, match="not below MERIDIAN_INGEST_REPLICAS=3"):
        settings.resolved_replica_index("ingest-3")
    assert IngestSettings(replicas=3, replica_index=1).resolved_replica_index("ingest-2") == 1


def test_configured_index_must_be_below_replicas() -> None:
    with pytest.raises(ValueError, match="REPLICA_INDEX=2 must be below"):
        IngestSettings(replicas=2, replica_index=2)
