"""Coders for the pipeline's chunk elements.

Beam samples the size of elements on every PCollection (for its metrics and the
runner's estimates) by encoding them with the PCollection's coder. Our elements are
chunks of thousands of events; with the default ``FastPrimitivesCoder`` each sample
encodes every event, and any non-primitive value inside (our ``Packaged`` records) is
pickled one by one. Measured on 200k events: ~95k ``pickle.dumps`` calls from size
sampling alone. :class:`ChunkCoder` encodes a whole chunk with one ``pickle.dumps``
when a chunk really crosses a process boundary, and estimates its size without
encoding it.
"""

from __future__ import annotations

import pickle
from typing import Any

from apache_beam import coders

from transforms.connectors.base import DeliveryBatch
from transforms.rules.records import Chunk

ESTIMATED_BYTES_PER_ITEM = 600
"""A telemetry event is ~0.5-1 KB of JSON; used only for Beam's size estimates."""


class ChunkCoder(coders.Coder):
    """Encodes a :class:`Chunk` with one pickle call; estimates its size from its length."""

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Any) -> int:
        return ESTIMATED_BYTES_PER_ITEM * len(value)


class DeliveryBatchCoder(ChunkCoder):
    """The same for :class:`DeliveryBatch` (a batch of packaged records)."""

    def estimate_size(self, value: Any) -> int:
        return ESTIMATED_BYTES_PER_ITEM * len(value.items)


coders.registry.register_coder(Chunk, ChunkCoder)
coders.registry.register_coder(DeliveryBatch, DeliveryBatchCoder)
