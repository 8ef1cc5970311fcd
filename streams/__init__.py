"""The imperative shell: the worker, the command-line tools, and what both use.

- `worker/`: the pipeline worker (`fusion worker`), everything its process runs: the Faust
  app and its fetch path, the stages, checkpoints, delivery, reload, metrics, TAK and STIX.
- `tools/`: every other `fusion` command, each run by a person or a script beside the
  worker (console, report, audit, explain, stix, acls, simulate, the demo); none imports
  `worker/`.
- here: what both use (`settings`, `clients`, `topics`, `keys`) and `cli`, the `fusion`
  command, which hands each subcommand to the worker or its tool.

The engine lives in `engine/`.
"""
