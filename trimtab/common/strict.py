"""The pydantic base of every config file's sections: unknown keys refused, numbers finite."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: an unknown key is an error (a typo is not silently ignored), and so is
    ``.inf``, ``-.inf`` or ``.nan`` in any float field (``cold_start_s: .inf`` would make every
    comparison with it true or false forever; ``errors.describe`` words the rule)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
