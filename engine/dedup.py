"""Duplicate `event_id`s within a time-to-live, in bounded memory."""

from __future__ import annotations


class Deduplicator:
    """Remembers ids for `ttl_s` of wall-clock time, at most `max_ids` (oldest forgotten first)."""

    __slots__ = ("_seen", "evictions", "max_ids", "ttl_s")

    def __init__(self, ttl_s: float = 86_400.0, max_ids: int = 2_000_000) -> None:
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._seen: dict[str, float] = {}
        self.evictions = 0

    def seen(self, event_id: str, now: float) -> bool:
        """True if the id was seen within the ttl (a duplicate); otherwise remember it."""
        seen = self._seen
        first = seen.get(event_id)
        if first is not None and now - first <= self.ttl_s:
            return True
        if first is not None:
            del seen[event_id]
        seen[event_id] = now
        if len(seen) > self.max_ids:
            del seen[next(iter(seen))]
            self.evictions += 1
        return False

    def contains(self, event_id: str, now: float) -> bool:
        """True if the id was seen within the ttl (without remembering it)."""
        first = self._seen.get(event_id)
        return first is not None and now - first <= self.ttl_s

    def expire(self, now: float) -> None:
        """Forget ids older than the ttl."""
        seen = self._seen
        horizon = now - self.ttl_s
        while seen:
            k = next(iter(seen))
            if seen[k] >= horizon:
                break
            del seen[k]

    def __len__(self) -> int:
        return len(self._seen)

    def snapshot(self) -> list[list[object]]:
        return [[k, v] for k, v in self._seen.items()]

    def restore(self, data: list[list[object]]) -> None:
        for k, v in data:
            self._seen[str(k)] = float(v)  # type: ignore[arg-type]
