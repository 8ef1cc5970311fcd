"""The transparency log's tools: key generation, a country's witness, a country's
verification (`fusion log`, `fusion witness`, `fusion audit-verify`)."""
