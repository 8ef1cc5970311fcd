"""The `fusion` commands other than the worker, one module or package per command."""
