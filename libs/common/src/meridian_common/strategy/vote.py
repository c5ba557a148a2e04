"""What a primary rule says when it changes its mind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Vote:
    direction: int  # common_pb2.Direction value
    strength: float  # in [0, 1]
    reason: str  # every input the decision used, for the signal's explanation
