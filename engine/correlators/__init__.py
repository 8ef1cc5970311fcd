"""One module per rule type; importing this package registers them all."""

from engine.correlators import event_count, proximity, sequence, temporal, value_count, watchlist

__all__ = [
    "event_count",
    "proximity",
    "sequence",
    "temporal",
    "value_count",
    "watchlist",
]
