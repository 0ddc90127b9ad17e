"""Trace configuration (the ``trace:`` block of a scenario) and the trace error type."""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trimtab.sim.traces.family import FamilyConfig


class TraceError(ValueError):
    """A trace that cannot be read; the message names the file, line and column and the rule."""


# Formats read from a file, and synthetic generators that need no file.
FILE_FORMATS = ("azure-llm", "mooncake", "counts", "prometheus")
GENERATOR_FORMATS = ("poisson", "diurnal", "step", "flash-crowd", "family")
FORMATS = FILE_FORMATS + GENERATOR_FORMATS

# Parameters each generator needs (checked eagerly so a scenario fails at load, not mid-run).
_GENERATOR_NEEDS: dict[str, tuple[str, ...]] = {
    "poisson": ("rate_rps", "duration_s"),
    "diurnal": ("peak_rps", "trough_rps", "period_s", "duration_s"),
    "step": ("steps", "duration_s"),
    "flash-crowd": ("base_rps", "peak_rps", "at_s", "ramp_s", "hold_s", "duration_s"),
    "family": ("family", "duration_s"),
}

# Trace formats whose rows carry (prompt, output) token counts: a ``lengths`` source.
LENGTH_FORMATS = ("azure-llm", "mooncake")


class LengthsConfig(BaseModel):
    """Where a trace without token counts draws its (prompt, output) pairs: the rows of an
    Azure LLM CSV or a Mooncake JSONL file, shuffled with the trace's seed. ``path`` is
    relative to the scenario file, else to the bundled data folder (``traces/...``); rows
    with prompt + output over ``max_total_tokens`` are scaled down proportionally."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    format: Literal["azure-llm", "mooncake"] = "azure-llm"
    max_total_tokens: int | None = Field(None, ge=2)


_NON_NEGATIVE = ("jitter_s", "start_s", "end_s", "rate_rps", "duration_s", "peak_rps",
                 "trough_rps", "base_rps", "at_s", "ramp_s", "hold_s", "bucket_s")
_POSITIVE = ("rate_scale", "time_scale", "period_s", "interval_s")


class TraceConfig(BaseModel):
    """Where arrivals come from and how they are transformed before a replay.

    Order of transformations: parse, sort (with a warning if needed), rebase to the first
    timestamp, divide by ``time_scale``, cut the ``[start_s, end_s)`` window (times then count
    from ``start_s``), then apply ``rate_scale`` and ``jitter_s``.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    format: str = "azure-llm"
    rate_scale: float = 1.0
    time_scale: float = 1.0
    jitter_s: float = 0.0
    seed: int = 0
    start_s: float | None = None
    end_s: float | None = None
    # Generators.
    rate_rps: float | None = None
    duration_s: float | None = None
    peak_rps: float | None = None
    trough_rps: float | None = None
    period_s: float | None = None
    steps: list[tuple[float, float]] | None = None
    base_rps: float | None = None
    at_s: float | None = None
    ramp_s: float | None = None
    hold_s: float | None = None
    # counts: the interval each row covers, when the timestamps do not say (one row, or gaps).
    interval_s: float | None = None
    # mooncake: timestamp quantum; inferred from the data when None.
    bucket_s: float | None = None
    # Token counts drawn from another trace's rows (traces without their own counts).
    lengths: LengthsConfig | None = None
    # family: one member of the generated held-out family (trimtab.sim.traces.family).
    family: FamilyConfig | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"format = {value!r} is not a known trace format; known: "
                             f"{', '.join(FORMATS)}")
        return value

    @field_validator(*_NON_NEGATIVE)
    @classmethod
    def _non_negative(cls, value: float | None, info: Any) -> float | None:
        if value is not None and (math.isnan(value) or math.isinf(value) or value < 0):
            raise ValueError(f"{info.field_name} = {value}, must be a finite number >= 0")
        return value

    @field_validator(*_POSITIVE)
    @classmethod
    def _positive(cls, value: float | None, info: Any) -> float | None:
        if value is not None and (math.isnan(value) or math.isinf(value) or value <= 0):
            raise ValueError(f"{info.field_name} = {value}, must be a finite number > 0")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("steps = [], must hold at least one [t_s, rate_rps] pair")
        prev_t = -math.inf
        for i, (t_s, rate_rps) in enumerate(value):
            for name, x in (("t_s", t_s), ("rate_rps", rate_rps)):
                if math.isnan(x) or math.isinf(x) or x < 0:
                    raise ValueError(f"steps[{i}] {name} = {x}, must be a finite number >= 0")
            if t_s <= prev_t:
                raise ValueError(f"steps[{i}] t_s = {t_s}, must be greater than the previous "
                                 f"step's t_s = {prev_t}")
            prev_t = t_s
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TraceConfig":
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s = {self.end_s}, must be greater than start_s = "
                             f"{self.start_s}")
        if self.format in FILE_FORMATS and not self.path:
            raise ValueError(f"path is required for format {self.format!r}")
        missing = [k for k in _GENERATOR_NEEDS.get(self.format, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"format {self.format!r} needs {', '.join(missing)}")
        if self.lengths is not None and self.format in LENGTH_FORMATS:
            raise ValueError(f"lengths: a {self.format!r} trace carries its own token counts; "
                             "lengths applies to generators and counts/prometheus traces")
        if self.format == "diurnal" and self.trough_rps > self.peak_rps:  # type: ignore[operator]
            raise ValueError(f"trough_rps = {self.trough_rps}, must be <= peak_rps = "
                             f"{self.peak_rps}")
        return self

    @property
    def is_generator(self) -> bool:
        return self.format in GENERATOR_FORMATS
