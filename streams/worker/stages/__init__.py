"""The worker's two stages, one module each: `ingest` then `correlate`."""
