"""The imperative shell: Faust agents, Kafka topics, the CLI, metrics.

The engine lives in `engine/`.
"""
