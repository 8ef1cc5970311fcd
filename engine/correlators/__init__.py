"""One module per rule type; importing this package registers them all."""

from engine.correlators import proximity, watchlist

__all__ = ["proximity", "watchlist"]
