"""The frozen envelope that travels along every edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Envelope:
    """One item on an edge: which frame it belongs to, when it was captured, and a payload.

    Nodes never mutate an envelope or its payload; they emit new envelopes with :meth:`derive`.
    ``t_capture_ns`` is on the graph's injected clock; ``encoder`` is the belt encoder count at
    capture when the source knows it.
    """

    frame_id: int
    t_capture_ns: int
    payload: Any
    encoder: int | None = None

    def derive(self, payload: Any) -> "Envelope":
        """A new envelope for the same frame with another payload."""
        return dataclasses.replace(self, payload=payload)
