"""The base every wire model shares: frozen, closed to unknown fields."""

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """A frozen wire model that refuses fields the contract does not name."""

    model_config = ConfigDict(frozen=True, extra="forbid")
