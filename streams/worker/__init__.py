"""The pipeline worker (`fusion worker`): `app.py` wires the modules beside it."""
