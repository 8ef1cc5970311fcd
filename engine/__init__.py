"""The correlation engine: pure Python, fed events and an event-time clock, returning alerts.

Nothing here imports Kafka, Faust or Prometheus; the worker in `streams/` and the
offline replay drive the same objects.
"""
