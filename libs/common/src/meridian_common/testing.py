"""Helpers for tests of handlers (no test framework imported here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def interleave(a: Sequence[T], b: Sequence[T], picks: Sequence[bool]) -> list[T]:
    """Merge two streams keeping each one's own order; picks[k] takes from `a` when it can.

    This is how a host may see two inputs arrive: any interleaving is possible, each input's order
    is not. Determinism tests check a handler's outputs are the same for every such merge.
    """
    out: list[T] = []
    i = j = 0
    for pick in picks:
        if (pick and i < len(a)) or j >= len(b):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out
